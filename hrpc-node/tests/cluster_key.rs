//! The cluster key: only holders of the key get anything in, and a replayed datagram with a
//! valid tag changes nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Seen, addr, drive, open_with, side};
use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::{ClusterKey, Core, CoreConfig, DropReason};
use hrpc_store::StoreConfig;

fn keyed(dir: &std::path::Path, id: u32, now: Instant, key: Option<[u8; 32]>) -> Core {
    keyed_with(dir, id, now, key, false)
}

fn keyed_with(
    dir: &std::path::Path,
    id: u32,
    now: Instant,
    key: Option<[u8; 32]>,
    encrypt: bool,
) -> Core {
    let mut cfg = CoreConfig::default();
    cfg.cluster_key = key.map(ClusterKey::new);
    cfg.encrypt = encrypt;
    open_with(dir, id, now, StoreConfig::new(id), cfg).unwrap()
}

/// Sends everything `from` has to send (a few rounds of timers and transmits) straight into
/// `to`, as if from `from_addr`.
fn push_all(from: &mut Core, to: &mut Core, from_addr: SocketAddr, now: &mut Instant) {
    let mut buf = vec![0u8; 64 * 1500];
    for _ in 0..20 {
        *now += Duration::from_millis(5);
        from.sync().unwrap();
        from.handle_timeout(*now);
        while let Some(t) = from.poll_transmit(*now, &mut buf) {
            let seg = t.segment_size.unwrap_or(t.len).max(1);
            for d in buf[..t.len].chunks(seg) {
                to.handle_datagram(*now, from_addr, d);
            }
        }
    }
}

/// Drives `a` and `b` for 40 rounds, everything arriving, and returns every datagram node
/// `record` sent.
fn exchange(
    a: &mut Core,
    sa: &mut Seen,
    b: &mut Core,
    sb: &mut Seen,
    now: &mut Instant,
    record: u32,
) -> Vec<Vec<u8>> {
    let mut recorded = Vec::new();
    for _ in 0..40 {
        drive(side(a, sa), side(b, sb), now, 1, &mut |from, d| {
            if from == record {
                recorded.push(d.to_vec());
            }
            true
        });
    }
    recorded
}

/// Takes what `node` delivers, as (peer, the number its payload starts with).
fn take(node: &mut Node, got: &mut Vec<(u32, u32)>) {
    node.poll(&mut |_, d| {
        got.push((
            d.peer,
            u32::from_be_bytes(d.payload[..4].try_into().unwrap()),
        ))
    })
    .unwrap();
}

/// Invariant: nodes sharing a key exchange messages; a node with another key, or with none,
/// gets nothing in — every one of its datagrams is dropped and counted (`BadTag`,
/// `Unauthenticated`) before any state is touched: no peer entry, no persisted message, no
/// delivery.
#[test]
fn only_holders_of_the_key_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = keyed(dir.path(), 1, now, Some([7; 32]));
    let mut b = keyed(dir.path(), 2, now, Some([7; 32]));
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    for i in 0..50u32 {
        b.producer().send(1, &i.to_be_bytes()).unwrap();
    }
    exchange(&mut a, &mut sa, &mut b, &mut sb, &mut now, 2);
    assert_eq!(sa.seqs(2), (1..=50).collect::<Vec<_>>());

    for (id, key, reason) in [
        (3, Some([8; 32]), DropReason::BadTag),
        (4, None, DropReason::Unauthenticated),
    ] {
        let mut stranger = keyed(dir.path(), id, now, key);
        stranger.producer().send(1, b"let me in").unwrap();
        stranger.touch(1, now);
        let before = a.stats().dropped(reason);
        push_all(&mut stranger, &mut a, addr(id), &mut now);
        assert!(
            a.stats().dropped(reason) > before,
            "node {id}: {:?}",
            a.stats()
        );
        assert!(a.peer_info(id).is_none(), "node {id} got a peer entry");
        assert!(a.store().inbound_seqs(id).is_empty());
        a.deliver(usize::MAX, &mut |d| {
            sa.got.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
        assert!(sa.seqs(id).is_empty(), "node {id} got a message in");
    }
    // And a keyed node drops what a keyless one sends the other way too.
    let mut keyless = keyed(dir.path(), 5, now, None);
    let before = keyless.stats().dropped(DropReason::Unauthenticated);
    a.producer().send(5, b"hello").unwrap();
    a.touch(5, now);
    push_all(&mut a, &mut keyless, addr(1), &mut now);
    assert!(keyless.stats().dropped(DropReason::Unauthenticated) > before);
}

/// Invariant: replaying, later, every datagram a keyed peer sent (valid tags, old content)
/// delivers nothing twice and moves no state back: the consumed cursor and what is held stay
/// as they were, and no peer reset happens — from the peer's address or from another.
#[test]
fn replayed_datagrams_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = keyed(dir.path(), 1, now, Some([9; 32]));
    let mut b = keyed(dir.path(), 2, now, Some([9; 32]));
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    for i in 0..30u32 {
        b.producer().send(1, &i.to_be_bytes()).unwrap();
    }
    let recorded = exchange(&mut a, &mut sa, &mut b, &mut sb, &mut now, 2);
    assert_eq!(sa.seqs(2), (1..=30).collect::<Vec<_>>());
    assert!(!recorded.is_empty());
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
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let key = Some([4; 32]);
    let mut a = keyed_with(dir.path(), 1, now, key, true);
    let mut b = keyed_with(dir.path(), 2, now, key, false);
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    let secret = |i: u32| {
        let mut m = b"top secret payload ".to_vec();
        m.extend_from_slice(&i.to_be_bytes());
        m
    };
    for i in 0..40u32 {
        a.producer().send(2, &secret(i)).unwrap();
        b.producer().send(1, &secret(i)).unwrap();
    }
    let from_a = exchange(&mut a, &mut sa, &mut b, &mut sb, &mut now, 1);
    let expect: Vec<Vec<u8>> = (0..40).map(secret).collect();
    let got_b: Vec<Vec<u8>> = sb.got.iter().map(|g| g.2.clone()).collect();
    let got_a: Vec<Vec<u8>> = sa.got.iter().map(|g| g.2.clone()).collect();
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
    let mut a = NodeConfig::new(dir.path().join("a"), 1)
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
    let mut got: Vec<(u32, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 100 && Instant::now() < deadline {
        take(&mut a, &mut got);
        b.poll(&mut |_, _| {}).unwrap();
        c.poll(&mut |_, _| {}).unwrap();
        a.wait(Some(Duration::from_millis(2))).unwrap();
    }
    // A little longer, so C's retransmissions reach A too.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        take(&mut a, &mut got);
        c.poll(&mut |_, _| {}).unwrap();
        a.wait(Some(Duration::from_millis(2))).unwrap();
    }
    let from_b: Vec<u32> = got.iter().filter(|g| g.0 == 2).map(|g| g.1).collect();
    assert_eq!(from_b, (0..100).collect::<Vec<_>>());
    assert!(got.iter().all(|g| g.0 == 2), "a keyless node got in");
    assert!(a.stats().core.dropped(DropReason::Unauthenticated) > 0);
    assert!(a.peer_info(3).is_none());
}
