//! A peer with no address: messages to it wait in the store, the node does
//! not spin, the resolver is retried on a backoff, and the application is told.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::nodes::pump;
use hrpc_node::proto::{Core, CoreConfig, Event, PeerState};
use hrpc_node::{NodeConfig, PeerState as NodePeerState};
use hrpc_store::{Store, StoreConfig};

/// Core level: with a message queued for a peer the resolver does not know,
/// `poll_timeout` never says "now" again once the core has done its work,
/// the resolver is asked again on a backoff whose first step is ≤ 100 ms and
/// whose steps are capped at ≤ 5 s, and a `PeerState::Unresolved` event is
/// reported once.
#[test]
fn unresolved_peer_is_not_ready_and_is_retried_on_a_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let resolver = move |_peer: u32| -> Option<SocketAddr> {
        calls2.fetch_add(1, Ordering::Relaxed);
        None
    };
    let store = Store::open(dir.path(), &StoreConfig::new(1)).unwrap();
    let t0 = Instant::now();
    let mut core = Core::new(store, CoreConfig::default(), Box::new(resolver), t0).unwrap();
    core.producer().send(7, b"waiting").unwrap();
    let mut buf = vec![0u8; 1500];
    let mut now = t0;
    let mut retries = Vec::new();
    // Drive in virtual time for 60 s, as a driver would: work, then sleep
    // until poll_timeout.
    let mut iterations = 0;
    let mut stuck = 0;
    while now < t0 + Duration::from_secs(60) {
        iterations += 1;
        assert!(iterations < 10_000, "the core never lets the driver sleep");
        let before = calls.load(Ordering::Relaxed);
        core.sync().unwrap();
        core.handle_timeout(now);
        while core.poll_transmit(now, &mut buf).is_some() {}
        if calls.load(Ordering::Relaxed) > before {
            retries.push(now);
        }
        let next = core.poll_timeout().expect("a retry must be scheduled");
        if next <= now {
            // Newly found work (the peer was just discovered) is fine once or
            // twice; "now" again and again is a spin.
            stuck += 1;
            assert!(
                stuck < 4,
                "poll_timeout keeps saying 'now' at {:?}",
                now - t0
            );
        } else {
            stuck = 0;
            now = next;
        }
    }
    assert!(
        retries.len() >= 5,
        "resolver asked only {} times",
        retries.len()
    );
    let gaps: Vec<Duration> = retries.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] <= Duration::from_millis(100),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(5)),
        "{gaps:?}"
    );
    assert!(gaps.last().unwrap() > &gaps[0], "no backoff: {gaps:?}");
    assert_eq!(core.peer_state(7), PeerState::Unresolved);
    let unresolved_events = std::iter::from_fn(|| core.poll_event())
        .filter(|e| {
            matches!(
                e,
                Event::PeerState {
                    peer: 7,
                    state: PeerState::Unresolved
                }
            )
        })
        .count();
    assert_eq!(unresolved_events, 1);
    assert!(core.stats().resolve_failures >= 5);
    // The message is still queued.
    assert_eq!(core.store().outbound_seqs(7), vec![1]);
}

/// Real node: a send to a peer with no address must not busy-spin. A loop of
/// `wait` + `poll` for 1.5 s makes few polls and uses little CPU, and once the
/// resolver knows the peer the message goes out.
#[test]
fn node_sleeps_while_a_peer_is_unresolved() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NodeConfig::new(dir.path().join("s"), 2)
        .bind("127.0.0.1:0".parse().unwrap())
        .open()
        .unwrap();
    let server_port = Arc::new(AtomicU32::new(0));
    let port = server_port.clone();
    let mut client = NodeConfig::new(dir.path().join("c"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .resolver(move |_peer: u32| -> Option<SocketAddr> {
            match port.load(Ordering::Relaxed) {
                0 => None,
                p => Some(SocketAddr::from(([127, 0, 0, 1], p as u16))),
            }
        })
        .open()
        .unwrap();
    client.send(2, b"hello").unwrap();
    let cpu0 = process_cpu();
    let start = Instant::now();
    let polls0 = client.stats().polls;
    while start.elapsed() < Duration::from_millis(1500) {
        client.poll(&mut |_, _| {}).unwrap();
        client.wait(Some(Duration::from_millis(500))).unwrap();
    }
    let polls = client.stats().polls - polls0;
    let cpu = process_cpu() - cpu0;
    assert!(polls < 200, "{polls} polls in 1.5 s: the node spins");
    assert!(cpu < Duration::from_millis(500), "{cpu:?} of CPU in 1.5 s");
    assert_eq!(client.peer_state(2), NodePeerState::Unresolved);

    // The resolver learns the address: the message is delivered.
    server_port.store(u32::from(server.local_addr().port()), Ordering::Relaxed);
    let mut got = [Vec::new(), Vec::new()];
    pump(
        &mut [&mut client, &mut server],
        &mut got,
        Duration::from_millis(5),
        Duration::from_secs(10),
        |_, got| !got[1].is_empty(),
    );
    let got: Vec<Vec<u8>> = got[1].iter().map(|g| g.2.clone()).collect();
    assert_eq!(got, vec![b"hello".to_vec()]);
}

/// User + system CPU time of this process.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
