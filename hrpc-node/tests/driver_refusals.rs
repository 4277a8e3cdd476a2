//! What a real node on loopback refuses, never panicking and never losing silently: open
//! errors are typed, backpressure is an error (window, store capacity, bad destinations), and
//! hostile datagrams at a live node are dropped and counted while real traffic completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::nodes::{DEADLINE, Log, crc32c, local, make_msg, pair};
use hrpc_node::driver::{NodeConfig, NodeError, SendError};
use hrpc_node::proto::DropReason;

/// Opening fails with the right typed error, never a panic: a store another node holds, a
/// port another node has, node id 0, an MTU that cannot carry a datagram header.
#[test]
fn open_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeConfig::new(dir.path().join("a"), 1)
        .bind(local())
        .open()
        .unwrap();
    let e = NodeConfig::new(dir.path().join("a"), 1).open().unwrap_err();
    assert!(matches!(e, NodeError::StoreLocked { .. }), "{e:?}");
    let e = NodeConfig::new(dir.path().join("c"), 3)
        .bind(a.local_addr())
        .open()
        .unwrap_err();
    assert!(matches!(e, NodeError::AddrInUse { .. }), "{e:?}");
    let e = NodeConfig::new(dir.path().join("d"), 0).open().unwrap_err();
    assert!(matches!(e, NodeError::Config(_)), "{e:?}");
    let e = NodeConfig::new(dir.path().join("d"), 4)
        .mtu(10)
        .open()
        .unwrap_err();
    assert!(matches!(e, NodeError::Config(_)), "{e:?}");
    let e = NodeConfig::new(dir.path().join("a"), 9).open();
    assert!(e.is_err(), "a store of node 1 cannot be opened as node 9");
}

/// Backpressure, never silent loss: with the peer unreachable, sends beyond the per-peer
/// limit get `WindowFull`, sends beyond the store capacity get `StoreFull`, bad destinations
/// are refused, and exactly the accepted messages are in the store.
#[test]
fn backpressure_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens at the peer's address.
    let dead = UdpSocket::bind(local()).unwrap().local_addr().unwrap();
    let mut n = NodeConfig::new(dir.path().join("n"), 1)
        .peer(2, dead)
        .peer(3, dead)
        .max_unacked_per_peer(10)
        .store_capacity(256 << 10)
        .open()
        .unwrap();
    let mut accepted = 0;
    let mut window_full = false;
    for _ in 0..100 {
        match n.send(2, b"x") {
            Ok(_) => accepted += 1,
            Err(SendError::WindowFull {
                peer: 2, unacked, ..
            }) => {
                assert_eq!(unacked, 10);
                window_full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        n.poll(&mut |_, _| {}).unwrap();
    }
    assert!(window_full);
    assert_eq!(accepted, 10);
    let mut store_full = false;
    let sender = n.sender();
    for _ in 0..10_000 {
        match sender.send(3, &[0u8; 8000]) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(e.is_backpressure(), "{e}");
                assert!(matches!(
                    e,
                    SendError::StoreFull(_) | SendError::WindowFull { .. }
                ));
                store_full = true;
                break;
            }
        }
    }
    assert!(store_full, "a 256 KiB store must fill up");
    assert!(matches!(n.send(1, b"me"), Err(SendError::InvalidPeer(1))));
    assert!(matches!(n.send(0, b"zero"), Err(SendError::InvalidPeer(0))));
    assert!(matches!(
        n.send_with(2, hrpc_wire::MAX_MESSAGE_LEN + 1, |_| {}),
        Err(SendError::TooLarge { .. })
    ));
    let pending: u64 = [2u32, 3]
        .iter()
        .map(|&p| {
            n.store()
                .outbound_pending(p)
                .map_or(0, |(lo, next)| next - lo)
        })
        .sum();
    assert_eq!(
        pending, accepted,
        "every accepted message is in the store, no more"
    );
    n.close(Duration::ZERO).unwrap();
    assert!(matches!(sender.send(2, b"late"), Err(SendError::Closed)));
}

/// Bad input at a live node: garbage, truncated, bit-flipped and forged datagrams from another
/// socket while real traffic flows. Real traffic completes in order and intact, and the drop
/// counters account for the junk.
#[test]
fn hostile_input_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let a_addr = a.local_addr();
    let n_msgs = 3000u32;
    let evil = UdpSocket::bind(local()).unwrap();
    // A valid-looking datagram to forge from: header for dst=1, src=2, unknown epochs.
    let mut forged = [0u8; 200];
    let hdr = hrpc_wire::HeaderFields {
        src: 2,
        dst: 1,
        src_epoch: 12345,
        dst_epoch: 999,
        auth: false,
    };
    let len = {
        let mut w = hrpc_wire::DatagramWriter::new(&mut forged, &hdr).unwrap();
        let payload = b"forged!";
        w.push_data(&hrpc_wire::DataFrame {
            flags: 0,
            seq: 1,
            msg_len: payload.len() as u32,
            offset: 0,
            msg_crc: crc32c(payload),
            payload,
        })
        .unwrap();
        w.finish()
    };
    let forged = &forged[..len];
    let mut sent = 0u32;
    let mut junk = 0u64;
    let mut log = Log::default();
    let deadline = Instant::now() + DEADLINE;
    let mut rng = 0x1234_5678_u64;
    while a.stats().delivered < u64::from(n_msgs) {
        assert!(Instant::now() < deadline, "deadline: {:?}", a.stats());
        if sent < n_msgs {
            for _ in 0..20 {
                if sent < n_msgs
                    && b.send(1, &make_msg(1, sent, 9 + (sent as usize % 500)))
                        .is_ok()
                {
                    sent += 1;
                }
            }
        }
        // Junk, each kind every round.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let garbage: Vec<u8> = (0..(rng % 1400) as usize)
            .map(|i| (rng >> (i % 56)) as u8)
            .collect();
        let mut flipped = forged.to_vec();
        let bit = (rng as usize) % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        for d in [
            &garbage[..],
            &forged[..forged.len() / 2],
            &flipped[..],
            forged,
            &[][..],
            b"HR",
        ] {
            evil.send_to(d, a_addr).unwrap();
            junk += 1;
        }
        a.poll(&mut |_, d| log.record(&d)).unwrap();
        b.poll(&mut |_, _| {}).unwrap();
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert_eq!(log.got.len(), n_msgs as usize);
    for (i, (peer, seq, p)) in log.got.iter().enumerate() {
        assert_eq!((*peer, *seq), (2, i as u64 + 1));
        assert_eq!(p, &make_msg(1, i as u32, 9 + (i % 500)));
    }
    let st = a.stats().core;
    let dropped = st.dropped_total();
    assert!(st.dropped(DropReason::Malformed) > 0, "{st:?}");
    assert!(st.dropped(DropReason::BadChecksum) > 0, "{st:?}");
    assert!(
        st.dropped(DropReason::WrongEpoch) + st.dropped(DropReason::UnknownEpoch) > 0,
        "{st:?}"
    );
    // Every junk datagram was dropped and counted (loopback loses none; allow a little).
    assert!(
        dropped >= junk * 9 / 10,
        "dropped {dropped} of {junk} junk: {st:?}"
    );
}
