//! The cluster key: only holders of the key get anything in, and a replayed datagram with a
//! valid tag changes nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::addr;
use common::cluster::{Cluster, Verdict};
use common::nodes::Mesh;
use hrpc_node::driver::NodeConfig;
use hrpc_node::proto::{ClusterKey, CoreConfig, DropReason};
use hrpc_store::StoreConfig;

/// Adds node `id` to `c`, holding `key` (if any) and enciphering if `encrypt`.
fn keyed(c: &mut Cluster, id: u32, key: Option<[u8; 32]>, encrypt: bool) {
    let mut cfg = CoreConfig::default();
    cfg.cluster_key = key.map(ClusterKey::new);
    cfg.encrypt = encrypt;
    c.add(id, StoreConfig::new(id), cfg);
}

/// Runs `c` for 40 rounds, everything arriving, and returns every datagram node `record`
/// sent that arrived.
fn exchange(c: &mut Cluster, record: u32) -> Vec<Vec<u8>> {
    let recorded: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let r = recorded.clone();
    c.filter(move |p| {
        if p.from == record {
            r.borrow_mut().push(p.bytes.clone());
        }
        Verdict::Pass
    });
    c.run(40);
    c.clear_filter();
    recorded.take()
}

/// Invariant: nodes sharing a key exchange messages; a node with another key, or with none,
/// gets nothing in — every one of its datagrams is dropped and counted (`BadTag`,
/// `Unauthenticated`) before any state is touched: no peer entry, no persisted message, no
/// delivery.
#[test]
fn only_holders_of_the_key_get_in() {
    let mut c = Cluster::empty();
    keyed(&mut c, 1, Some([7; 32]), false);
    keyed(&mut c, 2, Some([7; 32]), false);
    for i in 0..50u32 {
        c.core(2).producer().send(1, &i.to_be_bytes()).unwrap();
    }
    exchange(&mut c, 2);
    assert_eq!(c.seen(1).seqs(2), (1..=50).collect::<Vec<_>>());

    for (id, key, reason) in [
        (3, Some([8; 32]), DropReason::BadTag),
        (4, None, DropReason::Unauthenticated),
    ] {
        keyed(&mut c, id, key, false);
        let now = c.now;
        let stranger = c.core(id);
        stranger.producer().send(1, b"let me in").unwrap();
        stranger.touch(1, now);
        let before = c.core(1).stats().dropped(reason);
        // A few rounds of timers and transmits: everything the stranger has goes to a.
        c.run(20);
        let a = c.core(1);
        assert!(
            a.stats().dropped(reason) > before,
            "node {id}: {:?}",
            a.stats()
        );
        assert!(a.peer_info(id).is_none(), "node {id} got a peer entry");
        assert!(a.store().inbound_seqs(id).is_empty());
        assert!(c.seen(1).seqs(id).is_empty(), "node {id} got a message in");
    }
    // And a keyless node drops what a keyed one sends it too.
    keyed(&mut c, 5, None, false);
    let before = c.core(5).stats().dropped(DropReason::Unauthenticated);
    let now = c.now;
    let a = c.core(1);
    a.producer().send(5, b"hello").unwrap();
    a.touch(5, now);
    c.run(20);
    assert!(c.core(5).stats().dropped(DropReason::Unauthenticated) > before);
}

/// Invariant: replaying, later, every datagram a keyed peer sent (valid tags, old content)
/// delivers nothing twice and moves no state back: the consumed cursor and what is held stay
/// as they were, and no peer reset happens — from the peer's address or from another.
#[test]
fn replayed_datagrams_change_nothing() {
    let mut c = Cluster::empty();
    keyed(&mut c, 1, Some([9; 32]), false);
    keyed(&mut c, 2, Some([9; 32]), false);
    for i in 0..30u32 {
        c.core(2).producer().send(1, &i.to_be_bytes()).unwrap();
    }
    let recorded = exchange(&mut c, 2);
    assert_eq!(c.seen(1).seqs(2), (1..=30).collect::<Vec<_>>());
    assert!(!recorded.is_empty());
    // The replays go straight into a's core, datagram by datagram, at later times.
    let mut now = c.now;
    let mut sa = std::mem::take(&mut c.node(1).seen);
    let a = c.core(1);
    let consumed = a.store().inbound_consumed(2);
    let resets = a.stats().peer_resets;
    let dups = a.stats().dropped(DropReason::Duplicate);
    for from in [addr(2), SocketAddr::from(([127, 0, 0, 66], 6666))] {
        now += Duration::from_secs(1);
        for d in &recorded {
            a.handle_datagram(now, from, d);
        }
        a.sync().unwrap();
        a.deliver(usize::MAX, &mut |d| {
            sa.got.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
    }
    assert_eq!(sa.got.len(), 30, "a replay delivered something again");
    assert_eq!(a.store().inbound_consumed(2), consumed);
    assert!(a.store().inbound_seqs(2).is_empty());
    assert_eq!(a.stats().peer_resets, resets);
    assert!(a.stats().dropped(DropReason::Duplicate) > dups);
    assert_eq!(
        a.peer_info(2).unwrap().addr,
        Some(addr(2)),
        "the address moved"
    );
}

/// Invariant: with encryption on, no datagram on the path carries a payload's bytes, every
/// message is still delivered in order (also to and from a node that only authenticates), an
/// altered enciphered datagram is dropped as `BadTag`, and encryption without a key is refused
/// as a configuration error.
#[test]
fn enciphered_datagrams_hide_payloads() {
    let mut c = Cluster::empty();
    let key = Some([4; 32]);
    keyed(&mut c, 1, key, true);
    keyed(&mut c, 2, key, false);
    let secret = |i: u32| {
        let mut m = b"top secret payload ".to_vec();
        m.extend_from_slice(&i.to_be_bytes());
        m
    };
    for i in 0..40u32 {
        c.core(1).producer().send(2, &secret(i)).unwrap();
        c.core(2).producer().send(1, &secret(i)).unwrap();
    }
    let from_a = exchange(&mut c, 1);
    let expect: Vec<Vec<u8>> = (0..40).map(secret).collect();
    let got_b: Vec<Vec<u8>> = c.seen(2).got.iter().map(|g| g.2.clone()).collect();
    let got_a: Vec<Vec<u8>> = c.seen(1).got.iter().map(|g| g.2.clone()).collect();
    assert_eq!(got_b, expect, "what the enciphering node sent");
    assert_eq!(got_a, expect, "what the authenticating node sent");
    assert!(!from_a.is_empty());
    for d in &from_a {
        assert!(
            !d.windows(10).any(|w| w == b"top secret"),
            "a payload travelled in the clear"
        );
        assert!(hrpc_wire::encrypted_parts(d).is_some(), "not enciphered");
    }
    // Altered copies go straight into b's core, datagram by datagram.
    let now = c.now;
    let b = c.core(2);
    let before = b.stats().dropped(DropReason::BadTag);
    for d in &from_a {
        let mut bad = d.clone();
        let last = bad.len() - 20;
        bad[last] ^= 0x40;
        b.handle_datagram(now, addr(1), &bad);
    }
    assert_eq!(
        b.stats().dropped(DropReason::BadTag) - before,
        from_a.len() as u64
    );
    let mut cfg = CoreConfig::default();
    cfg.encrypt = true;
    assert!(cfg.validate().is_err(), "encryption without a key");
}

/// Invariant (real sockets): two nodes with the same key exchange messages over loopback (one
/// enciphering, one only authenticating); a third node without the key, sending to the same
/// node, gets nothing delivered and its datagrams are counted as unauthenticated.
#[test]
fn keyed_nodes_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    let key = ClusterKey::new([3; 32]);
    let a = NodeConfig::new(dir.path().join("a"), 1)
        .bind(lo)
        .cluster_key(key.clone())
        .open()
        .unwrap();
    // B also enciphers: A, which only authenticates, reads it as well.
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .bind(lo)
        .cluster_key(key)
        .encrypt(true)
        .peer(1, a.local_addr())
        .open()
        .unwrap();
    let mut c = NodeConfig::new(dir.path().join("c"), 3)
        .bind(lo)
        .peer(1, a.local_addr())
        .open()
        .unwrap();
    for i in 0..100u32 {
        b.send(1, &i.to_be_bytes()).unwrap();
        c.send(1, &i.to_be_bytes()).unwrap();
    }
    let mut mesh = Mesh::new();
    mesh.insert(a);
    mesh.insert(b);
    mesh.insert(c);
    mesh.run_until(
        |m| m.got(1).len() >= 100,
        Duration::from_millis(2),
        Duration::from_secs(20),
    );
    // A little longer, so C's retransmissions reach A too.
    mesh.run_until(
        |_| false,
        Duration::from_millis(2),
        Duration::from_millis(300),
    );
    // What A delivered, as (peer, the number its payload starts with).
    let got: Vec<(u32, u32)> = mesh
        .got(1)
        .iter()
        .map(|g| (g.0, u32::from_be_bytes(g.2[..4].try_into().unwrap())))
        .collect();
    let a = mesh.node(1);
    let from_b: Vec<u32> = got.iter().filter(|g| g.0 == 2).map(|g| g.1).collect();
    assert_eq!(from_b, (0..100).collect::<Vec<_>>());
    assert!(got.iter().all(|g| g.0 == 2), "a keyless node got in");
    assert!(a.stats().core.dropped(DropReason::Unauthenticated) > 0);
    assert!(a.peer_info(3).is_none());
}
