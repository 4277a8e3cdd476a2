//! Delivery is shared fairly between peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{addr, open};

use std::time::{Duration, Instant};

use hrpc_node::proto::Core;

/// Invariant: with messages waiting from two peers, delivering one at a
/// time alternates between them (each peer's own order kept), so a busy
/// peer cannot starve another when the application limits deliveries.
#[test]
fn small_delivery_budgets_alternate_between_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut cores: Vec<Core> = (1..=3).map(|id| open(dir.path(), id, now)).collect();
    for sender in &cores[1..] {
        for i in 0..10u8 {
            sender.producer().send(1, &[i]).unwrap();
        }
    }
    // Move everything into node 1's store without delivering.
    let mut buf = vec![0u8; 1472];
    for _ in 0..100 {
        now += Duration::from_millis(5);
        for i in 0..3 {
            if cores[i].poll_timeout().is_some_and(|t| t <= now) {
                cores[i].handle_timeout(now);
            }
            let mut out = Vec::new();
            while let Some(t) = cores[i].poll_transmit(now, &mut buf) {
                out.push((t.dst, buf[..t.len].to_vec()));
            }
            for (dst, bytes) in out {
                let to = (1..=3u32).position(|id| addr(id) == dst).unwrap();
                cores[to].handle_datagram(now, addr(i as u32 + 1), &bytes);
            }
        }
    }
    let mut order = Vec::new();
    for _ in 0..20 {
        cores[0]
            .deliver(1, &mut |d| order.push((d.peer, d.payload[0])))
            .unwrap();
    }
    let peers: Vec<u32> = order.iter().map(|o| o.0).collect();
    assert_eq!(order.len(), 20, "{order:?}");
    assert!(
        peers.windows(2).all(|w| w[0] != w[1]),
        "alternates: {peers:?}"
    );
    for p in [2, 3] {
        let mine: Vec<u8> = order.iter().filter(|o| o.0 == p).map(|o| o.1).collect();
        assert_eq!(mine, (0..10).collect::<Vec<u8>>());
    }
}
