//! Messages larger than a datagram, up to the maximum size, through two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Cluster, Verdict};

use std::time::Duration;

/// Invariant: a message of `MAX_MESSAGE_LEN` bytes crosses intact, in one
/// transmission when nothing is lost (no timeout fires while its fragments
/// are still being written), and so does one with every 97th datagram lost.
#[test]
fn max_size_message_crosses() {
    for drop_every in [0usize, 97] {
        let mut c = Cluster::new(1..=2);
        // Each round moves at most 64 datagrams: about 90 KB per 100 µs.
        c.tick = Duration::from_micros(100);
        c.node(1).transmit_budget = 64;
        let mut n = 0usize;
        c.filter(move |p| {
            if p.from != 1 {
                return Verdict::Pass;
            }
            n += 1;
            if drop_every == 0 || !n.is_multiple_of(drop_every) {
                Verdict::Pass
            } else {
                Verdict::Drop
            }
        });
        let msg: Vec<u8> = (0..hrpc_wire::MAX_MESSAGE_LEN)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        c.core(1).producer().send(2, &msg).unwrap();
        c.run_until(|c| !c.seen(2).got.is_empty(), 20_000);
        let got: Vec<Vec<u8>> = c.seen(2).got.iter().map(|g| g.2.clone()).collect();
        let (a, b) = (c.core(1).stats().clone(), c.core(2).stats().clone());
        assert_eq!(got.len(), 1, "drop_every {drop_every}: {a:?} / {b:?}");
        assert!(got[0] == msg, "payload differs");
        if drop_every == 0 {
            assert_eq!(a.messages_retransmitted, 0, "{a:?}");
        }
    }
}
