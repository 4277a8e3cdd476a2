//! A peer that loses its store comes back with a new epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::Cluster;

use std::time::Duration;

use hrpc_node::proto::Event;

/// What a core delivered: (peer, seq, payload).
type Got = Vec<(u32, u64, Vec<u8>)>;

/// Runs nodes 1 (a) and 2 (b) until quiet (400 rounds); returns what each delivered
/// meanwhile as (peer, seq, payload).
fn drive(c: &mut Cluster) -> (Got, Got) {
    c.run(400);
    (c.take_got(1), c.take_got(2))
}

/// Invariant: when b loses its store, a reports `PeerReset` with the range
/// of its unacknowledged messages, delivers them to b's new session (b
/// starts where a's unacknowledged messages start, not at 1), and accepts
/// b's new stream from seq 1; nothing a had not seen acknowledged is lost.
#[test]
fn store_loss_resends_unacknowledged_and_restarts_inbound() {
    let mut c = Cluster::new(1..=2);
    for m in [b"one", b"two", b"thr"] {
        c.core(1).producer().send(2, m).unwrap();
    }
    c.core(2).producer().send(1, b"old-b").unwrap();
    let (got_a, got_b) = drive(&mut c);
    assert_eq!(got_b.iter().map(|g| g.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(got_a, vec![(2, 1, b"old-b".to_vec())]);
    let old_epoch = c.core(2).session_token(1);

    // b's disk is wiped while a has two more queued for it.
    c.crash(2);
    std::fs::remove_dir_all(c.store_dir(2)).unwrap();
    c.core(1).producer().send(2, b"four").unwrap();
    c.core(1).producer().send(2, b"five").unwrap();
    c.now += Duration::from_millis(1);
    let b = c.open(2);
    assert_ne!(
        b.session_token(1),
        old_epoch,
        "a new store has a new session"
    );
    b.producer().send(1, b"new-b").unwrap();

    let (got_a, got_b) = drive(&mut c);
    assert_eq!(
        got_b,
        vec![(1, 4, b"four".to_vec()), (1, 5, b"five".to_vec())],
        "b's new session gets what a never saw acknowledged"
    );
    assert_eq!(
        got_a,
        vec![(2, 1, b"new-b".to_vec())],
        "b's new stream starts at 1"
    );
    let resets: Vec<Event> = c
        .take_events(1)
        .into_iter()
        .filter(|e| matches!(e, Event::PeerReset { .. }))
        .collect();
    assert_eq!(
        resets,
        vec![Event::PeerReset {
            peer: 2,
            old_epoch,
            new_epoch: c.core(2).session_token(1),
            resent: 4..6
        }]
    );
    assert_eq!(c.core(1).stats().peer_resets, 1);
}
