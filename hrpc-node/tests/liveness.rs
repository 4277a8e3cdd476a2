//! Peer liveness: Active, Unreachable with backed-off probing, Active again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Cluster, Verdict};

use std::time::Duration;

use hrpc_node::proto::{Event, PeerState};

/// Runs nodes 1 (a) and 2 (b) for `dur` of virtual time in 10 ms rounds; `link`
/// says whether datagrams get through. Returns datagrams a sent and b's deliveries.
fn run(c: &mut Cluster, dur: Duration, link: bool) -> (u64, usize) {
    c.tick = Duration::from_millis(10);
    if link {
        c.clear_filter();
    } else {
        c.filter(|_| Verdict::Drop);
    }
    let sent_before = c.core(1).stats().datagrams_sent;
    c.run_for(dur);
    let delivered = c.take_got(2).len();
    (c.core(1).stats().datagrams_sent - sent_before, delivered)
}

/// The states node 1 reported for peer 2 since the last call.
fn states(c: &mut Cluster) -> Vec<PeerState> {
    c.take_events(1)
        .into_iter()
        .filter_map(|e| match e {
            Event::PeerState { peer: 2, state } => Some(state),
            _ => None,
        })
        .collect()
}

/// Invariant: a touched peer becomes Active; silence while messages wait
/// makes it Unreachable after `unreachable_after`, probed at a pace that
/// backs off (far fewer datagrams than one per heartbeat interval); when
/// the link returns it is Active again and the waiting message arrives.
#[test]
fn unreachable_then_back() {
    let mut c = Cluster::new(1..=2);
    let now = c.now;
    c.core(1).touch(2, now);
    run(&mut c, Duration::from_millis(200), true);
    assert_eq!(c.core(1).peer_state(2), PeerState::Active);
    assert_eq!(states(&mut c), vec![PeerState::Active]);

    c.core(1).producer().send(2, b"waiting").unwrap();
    let (sent, delivered) = run(&mut c, Duration::from_secs(120), false);
    assert_eq!(delivered, 0);
    assert_eq!(c.core(1).peer_state(2), PeerState::Unreachable);
    assert_eq!(states(&mut c), vec![PeerState::Unreachable]);
    // Heartbeats every 1 s would be 120; retransmissions back off to the RTO cap too.
    assert!(sent < 80, "probing backs off: {sent} datagrams in 120 s");

    let (_, delivered) = run(&mut c, Duration::from_secs(20), true);
    assert_eq!(delivered, 1);
    assert_eq!(c.core(1).peer_state(2), PeerState::Active);
    assert_eq!(states(&mut c), vec![PeerState::Active]);
}
