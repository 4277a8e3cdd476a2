//! Two real nodes in one process over loopback: every size, both directions, sends from the
//! handler and from another thread; typed open errors; backpressure; hostile input; wake-ups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig, NodeError, SendError, Sender};
use hrpc_node::proto::{Delivery, DropReason, PeerState};

const DEADLINE: Duration = Duration::from_secs(60);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A self-describing message: `[stream u8][idx u32][crc32c of the rest u32][pattern...]`.
fn make_msg(stream: u8, idx: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(idx) as u8 ^ stream)
        .collect();
    if len >= 9 {
        m[0] = stream;
        m[1..5].copy_from_slice(&idx.to_le_bytes());
        let crc = crc32c(&m[9..]);
        m[5..9].copy_from_slice(&crc.to_le_bytes());
    }
    m
}

fn crc32c(b: &[u8]) -> u32 {
    // Bitwise CRC-32C: small and independent of the code under test.
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The sizes every test run covers: empty to far beyond one datagram.
fn sizes() -> Vec<usize> {
    vec![
        0,
        1,
        8,
        9,
        100,
        1000,
        1400,
        1471,
        1472,
        1500,
        4096,
        20_000,
        65_507,
        100_000,
        1 << 20,
        8 << 20,
    ]
}

/// Records deliveries per peer and checks order and contiguity as they come.
#[derive(Default)]
struct Log {
    got: Vec<(u32, u64, Vec<u8>)>,
    errors: Vec<String>,
    last_seq: std::collections::HashMap<u32, u64>,
}

impl Log {
    fn record(&mut self, d: &Delivery<'_>) {
        let last = self.last_seq.entry(d.peer).or_insert(0);
        if d.seq != *last + 1 {
            self.errors
                .push(format!("peer {} seq {} after {}", d.peer, d.seq, last));
        }
        *last = d.seq;
        self.got.push((d.peer, d.seq, d.payload.to_vec()));
    }
}

fn pump_until(
    a: &mut Node,
    ha: &mut dyn FnMut(&Sender, Delivery<'_>),
    b: &mut Node,
    hb: &mut dyn FnMut(&Sender, Delivery<'_>),
    mut done: impl FnMut(&Node, &Node) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    let mut iterations = 0u64;
    while !done(a, b) {
        assert!(
            Instant::now() < deadline,
            "deadline passed\nA: {:#?}\n{:#?}\nB: {:#?}\n{:#?}",
            a.stats(),
            a.peer_info(2),
            b.stats(),
            b.peer_info(1)
        );
        iterations += 1;
        assert!(iterations < 50_000_000, "iteration bound passed");
        let ra = a.poll(&mut |s, d| ha(s, d)).unwrap();
        let rb = b.poll(&mut |s, d| hb(s, d)).unwrap();
        if !ra.more && !rb.more && ra.received == 0 && rb.received == 0 {
            a.wait(Some(Duration::from_millis(1))).unwrap();
        }
    }
}

/// Pumps both nodes until `a` has delivered `total` messages (counting
/// earlier ones); returns the payloads delivered meanwhile.
fn collect_at_a(a: &mut Node, b: &mut Node, total: u64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    pump_until(
        a,
        &mut |_, d| got.push(d.payload.to_vec()),
        b,
        &mut |_, _| {},
        |a, _| a.stats().delivered >= total,
    );
    got
}

fn pair(dir: &std::path::Path) -> (Node, Node) {
    let a = NodeConfig::new(dir.join("a"), 1)
        .bind(local())
        .open()
        .unwrap();
    let a_addr = a.local_addr();
    let b = NodeConfig::new(dir.join("b"), 2)
        .peer(1, a_addr)
        .open()
        .unwrap();
    (a, b)
}

/// Every size from 0 bytes to the maximum message size arrives exactly once, in order, intact,
/// both ways: B sends from its poll thread and from another thread (through a `Sender`), A
/// echoes each message back from inside its handler; B has no fixed port and A learns it from
/// B's datagrams.
#[test]
fn two_nodes_every_size_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let sizes = sizes();
    let thread_msgs = 2000u32;

    for (i, &len) in sizes.iter().enumerate() {
        b.send(1, &make_msg(1, i as u32, len)).unwrap();
    }
    let sender = b.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let th = std::thread::spawn(move || {
        let deadline = Instant::now() + DEADLINE;
        let mut i = 0;
        while i < thread_msgs && Instant::now() < deadline && !stop2.load(Ordering::Relaxed) {
            let len = 9 + (i as usize * 37) % 3000;
            match sender.send_with(1, len, |buf| buf.copy_from_slice(&make_msg(2, i, len))) {
                Ok(_) => i += 1,
                Err(e) if e.is_backpressure() => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("send from thread: {e}"),
            }
        }
        i
    });

    let total = sizes.len() + thread_msgs as usize;
    let mut log_a = Log::default();
    let mut log_b = Log::default();
    {
        let mut ha = |s: &Sender, d: Delivery<'_>| {
            log_a.record(&d);
            // Echo from inside the handler.
            s.send(d.peer, d.payload).unwrap();
        };
        let mut hb = |_: &Sender, d: Delivery<'_>| log_b.record(&d);
        pump_until(&mut a, &mut ha, &mut b, &mut hb, |a, b| {
            a.stats().delivered >= total as u64 && b.stats().delivered >= total as u64
        });
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(th.join().unwrap(), thread_msgs);

    assert!(log_a.errors.is_empty(), "{:?}", log_a.errors);
    assert!(log_b.errors.is_empty(), "{:?}", log_b.errors);
    assert_eq!(log_a.got.len(), total);
    assert_eq!(log_b.got.len(), total, "every echo came back");
    // A got B's two streams, each in its own order, every payload intact.
    let mut next = [0u32; 3];
    for (peer, _, p) in &log_a.got {
        assert_eq!(*peer, 2);
        let (stream, idx) = if p.len() >= 9 {
            (p[0], u32::from_le_bytes(p[1..5].try_into().unwrap()))
        } else {
            // Short messages only come from stream 1, in size order.
            (1, next[1])
        };
        let len = if stream == 1 {
            sizes[idx as usize]
        } else {
            9 + (idx as usize * 37) % 3000
        };
        assert_eq!(idx, next[stream as usize], "stream {stream} in order");
        assert_eq!(
            p.as_slice(),
            make_msg(stream, idx, len).as_slice(),
            "stream {stream} #{idx} intact"
        );
        next[stream as usize] += 1;
    }
    assert_eq!(next[1] as usize, sizes.len());
    assert_eq!(next[2], thread_msgs);
    // The echoes come back in the order A received them.
    for ((_, _, sent), (peer, _, echoed)) in log_a.got.iter().zip(&log_b.got) {
        assert_eq!(*peer, 1);
        assert_eq!(sent, echoed);
    }
    let st = a.stats();
    assert_eq!(st.core.dropped(DropReason::CorruptMessage), 0);
    assert_eq!(a.peer_state(2), PeerState::Active);
    assert_eq!(b.peer_state(1), PeerState::Active);
    a.close(Duration::from_millis(100)).unwrap();
    b.close(Duration::from_millis(100)).unwrap();
}

/// The largest message (`hrpc_wire::MAX_MESSAGE_LEN`, 16 MiB) crosses intact.
#[test]
fn max_size_message() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let msg = make_msg(1, 0, hrpc_wire::MAX_MESSAGE_LEN);
    b.send(1, &msg).unwrap();
    let got = collect_at_a(&mut a, &mut b, 1);
    assert_eq!(got, vec![msg]);
}

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

/// `wait` sleeps without spinning when idle and returns promptly when another thread's
/// `Sender` commits a message, which then goes out.
#[test]
fn wait_sleeps_and_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    // Settle: exchange one message so both know each other.
    b.send(1, b"hi").unwrap();
    pump_until(&mut a, &mut |_, _| {}, &mut b, &mut |_, _| {}, |a, _| {
        a.stats().delivered >= 1
    });
    for _ in 0..5 {
        b.poll(&mut |_, _| {}).unwrap();
    }

    let polls_before = b.stats().polls;
    let t = Instant::now();
    let mut loops = 0;
    while t.elapsed() < Duration::from_millis(300) && loops < 1000 {
        b.wait(Some(Duration::from_millis(100))).unwrap();
        b.poll(&mut |_, _| {}).unwrap();
        loops += 1;
    }
    assert!(loops < 50, "idle wait spun: {loops} iterations in 300 ms");
    assert!(b.stats().polls - polls_before < 50);

    let sender = b.sender();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        sender.send(1, b"wake").unwrap();
    });
    let t = Instant::now();
    b.wait(Some(Duration::from_secs(5))).unwrap();
    let waited = t.elapsed();
    th.join().unwrap();
    assert!(waited < Duration::from_secs(2), "wake-up took {waited:?}");
    b.poll(&mut |_, _| {}).unwrap();
    assert!(b.stats().wakeups >= 1);
    let got = collect_at_a(&mut a, &mut b, 2);
    assert_eq!(got, vec![b"wake".to_vec()]);
}

/// In `Durability::Sync` mode (one group commit per poll before anything is
/// acknowledged, delivered or sent), messages of many sizes still arrive
/// exactly once, in order, intact, and stay delivered after both nodes are
/// closed and reopened on the same stores (nothing is delivered twice).
#[test]
fn sync_durability_round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = |dir: &std::path::Path, a_addr: Option<SocketAddr>| {
        let a = NodeConfig::new(dir.join("a"), 1)
            .bind(a_addr.unwrap_or_else(local))
            .durability(hrpc_node::Durability::Sync)
            .open()
            .unwrap();
        let b = NodeConfig::new(dir.join("b"), 2)
            .peer(1, a.local_addr())
            .durability(hrpc_node::Durability::Sync)
            .open()
            .unwrap();
        (a, b)
    };
    let (mut a, mut b) = open(dir.path(), None);
    let sizes = [0usize, 9, 100, 1472, 5000, 70_000];
    for (i, &len) in sizes.iter().enumerate() {
        b.send(1, &make_msg(3, i as u32, len)).unwrap();
    }
    let mut log = Log::default();
    pump_until(
        &mut a,
        &mut |_, d| log.record(&d),
        &mut b,
        &mut |_, _| {},
        |a, b| {
            a.stats().delivered >= sizes.len() as u64
                && b.peer_info(1).is_some_and(|p| p.unacked_messages == 0)
        },
    );
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    for (i, &len) in sizes.iter().enumerate() {
        assert_eq!(log.got[i].2, make_msg(3, i as u32, len));
    }
    let a_addr = a.local_addr();
    a.close(Duration::from_millis(50)).unwrap();
    b.close(Duration::from_millis(50)).unwrap();

    let (mut a, mut b) = open(dir.path(), Some(a_addr));
    b.send(1, b"after reopen").unwrap();
    let mut again = Log::default();
    pump_until(
        &mut a,
        &mut |_, d| again.record(&d),
        &mut b,
        &mut |_, _| {},
        |a, _| a.stats().delivered >= 1,
    );
    assert_eq!(
        again.got,
        vec![(2, sizes.len() as u64 + 1, b"after reopen".to_vec())]
    );
}

/// A user's own event loop: `as_raw_fd()` becomes readable when a datagram
/// for the node arrives, so an external `poll(2)` on it wakes up, and the
/// node's `poll` then delivers the message.
#[test]
fn external_poll_on_raw_fd_wakes_for_traffic() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;

    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    b.touch(1);
    // Let the epochs be exchanged first.
    pump_until(&mut a, &mut |_, _| {}, &mut b, &mut |_, _| {}, |a, _| {
        a.peer_state(2) == PeerState::Active
    });
    while a.poll(&mut |_, _| {}).unwrap().more {}
    let idle = {
        let mut fds = [PollFd::new(a.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap()
    };
    assert_eq!(idle, 0, "nothing pending: the fd is not readable");
    b.send(1, b"ping").unwrap();
    b.poll(&mut |_, _| {}).unwrap();
    let readable = {
        let mut fds = [PollFd::new(a.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap()
    };
    assert_eq!(readable, 1, "external poll saw the node's fd readable");
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.is_empty() && Instant::now() < deadline {
        a.poll(&mut |_, d| got.push(d.payload.to_vec())).unwrap();
        b.poll(&mut |_, _| {}).unwrap();
    }
    assert_eq!(got, vec![b"ping".to_vec()]);
}

/// Without GSO the node still batches: a burst goes out in `sendmmsg(2)`
/// batches (several datagrams per send call), and every message arrives.
#[test]
fn without_gso_sends_are_batched() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeConfig::new(dir.path().join("a"), 1)
        .bind(local())
        .gro(false)
        .open()
        .unwrap();
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .gso(false)
        .open()
        .unwrap();
    assert_eq!(b.udp_caps().gso_segments, 1, "GSO is off");
    let total = 3000u32;
    for i in 0..total {
        b.send(1, &make_msg(4, i, 100)).unwrap();
    }
    let got = collect_at_a(&mut a, &mut b, u64::from(total));
    assert_eq!(got.len(), total as usize);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(*m, make_msg(4, i as u32, 100));
    }
    let udp = b.stats().udp;
    assert!(
        udp.datagrams_sent >= 2 * udp.send_calls,
        "{} datagrams in {} send calls",
        udp.datagrams_sent,
        udp.send_calls
    );
}
