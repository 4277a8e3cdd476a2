//! Delivery is shared fairly between peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::Cluster;

/// Invariant: with messages waiting from two peers, delivering one at a
/// time alternates between them (each peer's own order kept), so a busy
/// peer cannot starve another when the application limits deliveries.
#[test]
fn small_delivery_budgets_alternate_between_peers() {
    let mut c = Cluster::new(1..=3);
    for sender in [2, 3] {
        for i in 0..10u8 {
            c.core(sender).producer().send(1, &[i]).unwrap();
        }
    }
    // Move everything into node 1's store without delivering.
    c.node(1).deliver = false;
    c.run(100);
    let node1 = c.core(1);
    let mut order = Vec::new();
    for _ in 0..20 {
        node1
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
