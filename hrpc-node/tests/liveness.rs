//! Peer liveness: Active, Unreachable with backed-off probing, Active again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{addr, open};

use std::time::{Duration, Instant};

use hrpc_node::proto::{Core, Event, PeerState};

/// Steps both cores for `dur` of virtual time in 10 ms ticks; `link` says
/// whether datagrams get through. Returns datagrams a sent and b's deliveries.
fn run(a: &mut Core, b: &mut Core, now: &mut Instant, dur: Duration, link: bool) -> (u64, usize) {
    let mut buf = vec![0u8; 1472];
    let sent_before = a.stats().datagrams_sent;
    let mut delivered = 0;
    let end = *now + dur;
    while *now < end {
        *now += Duration::from_millis(10);
        let t = *now;
        for c in [&mut *a, &mut *b] {
            if c.poll_timeout().is_some_and(|x| x <= t) {
                c.handle_timeout(t);
            }
        }
        while let Some(x) = a.poll_transmit(t, &mut buf) {
            if link {
                b.handle_datagram(t, addr(1), &buf[..x.len]);
            }
        }
        while let Some(x) = b.poll_transmit(t, &mut buf) {
            if link {
                a.handle_datagram(t, addr(2), &buf[..x.len]);
            }
        }
        delivered += b.deliver(usize::MAX, &mut |_| {}).unwrap();
    }
    (a.stats().datagrams_sent - sent_before, delivered)
}

fn states(core: &mut Core) -> Vec<PeerState> {
    std::iter::from_fn(|| core.poll_event())
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
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let mut b = open(dir.path(), 2, now);
    a.touch(2, now);
    run(&mut a, &mut b, &mut now, Duration::from_millis(200), true);
    assert_eq!(a.peer_state(2), PeerState::Active);
    assert_eq!(states(&mut a), vec![PeerState::Active]);

    a.producer().send(2, b"waiting").unwrap();
    let (sent, delivered) = run(&mut a, &mut b, &mut now, Duration::from_secs(120), false);
    assert_eq!(delivered, 0);
    assert_eq!(a.peer_state(2), PeerState::Unreachable);
    assert_eq!(states(&mut a), vec![PeerState::Unreachable]);
    // Heartbeats every 1 s would be 120; retransmissions back off to the RTO cap too.
    assert!(sent < 80, "probing backs off: {sent} datagrams in 120 s");

    let (_, delivered) = run(&mut a, &mut b, &mut now, Duration::from_secs(20), true);
    assert_eq!(delivered, 1);
    assert_eq!(a.peer_state(2), PeerState::Active);
    assert_eq!(states(&mut a), vec![PeerState::Active]);
}
