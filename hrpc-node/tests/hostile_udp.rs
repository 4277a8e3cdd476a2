//! Every class of bad datagram, over real UDP, at a node that is serving a real peer.
//!
//! Node A and node B exchange numbered messages through a relay (so the test can also inject
//! datagrams that carry B's valid session values, as an on-path attacker could), while a
//! separate socket, and the relay, send A garbage, truncated datagrams, wrong magic, version
//! and flags, wrong destinations, forged session values, huge declared lengths, fragments of
//! 16 MiB messages, acknowledgements of seqs A never sent, and floods from unknown node ids
//! and sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/forge.rs"]
mod forge;

#[path = "common/relay.rs"]
mod relay;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use forge::{hello, push_evil};
use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::DropReason;
use hrpc_wire::{
    AckFrame, DataFrame, DatagramWriter, HEADER_LEN, HeaderFields, MAX_MESSAGE_LEN, SackRange,
    SackRanges,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::{Relay, datagram, reseal, rss_bytes};

const A: u32 = 1;
const B: u32 = 2;
/// Messages each way.
const MSGS: u32 = 2000;
const DEADLINE: Duration = Duration::from_secs(40);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A fragment (the first 1000 bytes) of a message of `msg_len` bytes.
fn push_fragment(w: &mut DatagramWriter<'_>, seq: u64, msg_len: u32) {
    let payload = vec![0xEE; 1000];
    w.push_data(&DataFrame {
        flags: 0,
        seq,
        msg_len,
        offset: 0,
        msg_crc: 0x1234_5678,
        payload: &payload,
    })
    .unwrap();
}

fn as_b(src_epoch: u64, dst_epoch: u64) -> HeaderFields {
    HeaderFields {
        src: B,
        dst: A,
        src_epoch,
        dst_epoch,
        auth: false,
    }
}

struct Test {
    a: Node,
    b: Node,
    relay: Relay,
    evil: UdpSocket,
    /// Payloads A delivered (from B), and B delivered (from A).
    got_a: Vec<(u32, u64, Vec<u8>)>,
    got_b: Vec<(u32, u64, Vec<u8>)>,
    sent_ab: u32,
    sent_ba: u32,
}

impl Test {
    /// One round: a few messages each way, the nodes polled, the relay pumped.
    fn step(&mut self) {
        for _ in 0..4 {
            if self.sent_ab < MSGS {
                match self
                    .a
                    .send(B, format!("a to b {}", self.sent_ab).as_bytes())
                {
                    Ok(_) => self.sent_ab += 1,
                    Err(e) if e.is_backpressure() => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            if self.sent_ba < MSGS {
                match self
                    .b
                    .send(A, format!("b to a {}", self.sent_ba).as_bytes())
                {
                    Ok(_) => self.sent_ba += 1,
                    Err(e) if e.is_backpressure() => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
        let got = &mut self.got_a;
        self.a
            .poll(&mut |_, d| got.push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        let got = &mut self.got_b;
        self.b
            .poll(&mut |_, d| got.push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        self.relay.pump(4096);
        // Whatever A answers the attacker is read and dropped.
        let mut buf = [0u8; 2048];
        while self.evil.recv_from(&mut buf).is_ok() {}
        self.a.wait(Some(Duration::from_millis(1))).unwrap();
    }

    fn attack(&self, bytes: &[u8]) {
        // A full socket buffer is loss, not a failure of the node.
        let _ = self.evil.send_to(bytes, self.a.local_addr());
    }
}

/// Invariant: whatever arrives from other sockets, or from the relay with B's valid session
/// values, A keeps serving B: every message each way is delivered once and in order, nothing
/// injected is delivered, A never holds half-assembled bytes and its store knows only B, the
/// process's memory grows by less than 64 MiB, and A's counters name each kind of drop
/// (malformed, bad checksum, wrong destination, unknown and wrong session, beyond window,
/// bogus acknowledgement).
#[test]
fn hostile_datagrams_leave_a_live_node_serving_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::new(local());
    let a = NodeConfig::new(dir.path().join("a"), A)
        .bind(local())
        .peer(B, relay.addr())
        .open()
        .unwrap();
    relay.a_addr = a.local_addr();
    let b = NodeConfig::new(dir.path().join("b"), B)
        .bind(local())
        .peer(A, relay.addr())
        .open()
        .unwrap();
    let evil = UdpSocket::bind(local()).unwrap();
    evil.set_nonblocking(true).unwrap();
    let mut t = Test {
        a,
        b,
        relay,
        evil,
        got_a: Vec::new(),
        got_b: Vec::new(),
        sent_ab: 0,
        sent_ba: 0,
    };
    let deadline = Instant::now() + DEADLINE;
    while t.got_a.is_empty() || t.got_b.is_empty() || t.relay.b_header.is_none() {
        assert!(Instant::now() < deadline, "no warm-up: {:?}", t.a.stats());
        t.step();
    }
    let rss_before = rss_bytes();
    let mut rng = StdRng::seed_from_u64(12);
    let genuine = t.relay.b_header.unwrap();
    let mut max_asm = 0;

    for round in 0..200u64 {
        // Garbage of every length.
        let len = rng.random_range(0..1400);
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk[..]);
        t.attack(&junk);
        // Garbage behind a valid magic and version.
        if len > 4 {
            junk[0..3].copy_from_slice(&[b'H', b'R', 1]);
            t.attack(&junk);
        }
        // A forged datagram as B, truncated anywhere.
        let forged = datagram(&as_b(rng.random(), rng.random()), |w| {
            w.push_heartbeat(&hello()).unwrap();
            push_evil(w, round + 1);
        });
        t.attack(&forged[..rng.random_range(0..forged.len())]);
        // Bit flips without a matching checksum.
        let mut flipped = forged.clone();
        let at = rng.random_range(HEADER_LEN..flipped.len());
        flipped[at] ^= 1 << rng.random_range(0..8);
        t.attack(&flipped);
        // Wrong magic, version, unknown flag bits (checksums made right).
        for (at, v) in [(0usize, b'X'), (2, 2), (2, 0), (3, 0x80)] {
            let mut d = forged.clone();
            d[at] = v;
            reseal(&mut d);
            t.attack(&d);
        }
        // Wrong destination, and a claim to come from A itself.
        for (src, dst) in [(B, 99), (A, A), (B, 0)] {
            let h = HeaderFields {
                src,
                dst,
                ..as_b(1, 1)
            };
            t.attack(&datagram(&h, |w| push_evil(w, 1)));
        }
        // Forged session values: unknown (0) and wrong.
        for dst_epoch in [0, rng.random::<u64>() | 1] {
            let d = datagram(&as_b(rng.random(), dst_epoch), |w| {
                w.push_heartbeat(&hello()).unwrap();
                push_evil(w, round + 1);
            });
            t.attack(&d);
        }
        // Huge declared lengths: a message length past the maximum, a fragment length past
        // the datagram.
        let mut d = datagram(&as_b(1, 1), |w| push_fragment(w, 1, 4000));
        let f = HEADER_LEN;
        let mut huge = d.clone();
        huge[f + 4..f + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        reseal(&mut huge);
        t.attack(&huge);
        d[f + 2..f + 4].copy_from_slice(&u16::MAX.to_be_bytes());
        reseal(&mut d);
        t.attack(&d);
        // Fragments of 16 MiB messages, from a stranger and from B's address with B's
        // session values (beyond the window A advertised).
        let big = MAX_MESSAGE_LEN as u32;
        t.attack(&datagram(&as_b(rng.random(), rng.random()), |w| {
            push_fragment(w, round + 1, big)
        }));
        t.relay.inject(&datagram(&genuine, |w| {
            push_fragment(w, (1 << 40) + round, big)
        }));
        // Acknowledgements of seqs A never sent: selective, and cumulative past the end.
        let next = t.a.next_outbound_seq(B);
        let sacks = [SackRange {
            first: next + 10,
            last: next + 1000,
        }];
        for (cumulative, sacks) in [(0, &sacks[..]), (next + 5, &[][..])] {
            t.relay.inject(&datagram(&genuine, |w| {
                w.push_ack(&AckFrame {
                    cumulative,
                    ack_delay_us: 0,
                    window_msgs: 1 << 20,
                    window_bytes: u32::MAX,
                    sacks: SackRanges::Native(sacks),
                })
                .unwrap()
            }));
        }
        // A flood of unknown node ids, from this socket and from fresh ones.
        for k in 0..10u32 {
            let id = 1000 + (round as u32) * 10 + k;
            let h = HeaderFields {
                src: id,
                ..as_b(u64::from(id), 0)
            };
            let d = datagram(&h, |w| w.push_heartbeat(&hello()).unwrap());
            t.attack(&d);
            if k == 0 {
                let s = UdpSocket::bind(local()).unwrap();
                let _ = s.send_to(&d, t.a.local_addr());
            }
        }
        t.step();
        max_asm = max_asm.max(t.a.stats().reassembly_bytes);
    }

    while (t.got_a.len() as u32) < MSGS || (t.got_b.len() as u32) < MSGS || t.a.unacked() > 0 {
        if Instant::now() > deadline {
            break;
        }
        t.step();
    }

    let st = t.a.stats();
    let want =
        |prefix: &str, n: u32| -> Vec<String> { (0..n).map(|i| format!("{prefix} {i}")).collect() };
    let text = |got: &[(u32, u64, Vec<u8>)]| -> Vec<String> {
        got.iter()
            .map(|g| String::from_utf8_lossy(&g.2).into_owned())
            .collect()
    };
    // The warm-up message from each side is the first of its stream.
    assert_eq!(
        text(&t.got_a),
        want("b to a", MSGS),
        "A's deliveries from B; stats {st:?}"
    );
    assert_eq!(
        text(&t.got_b),
        want("a to b", MSGS),
        "B's deliveries from A; stats {st:?}"
    );
    assert_eq!(t.a.unacked(), 0, "A still has unacknowledged messages");
    assert_eq!(
        (max_asm, st.reassembly_bytes),
        (0, 0),
        "A assembled forged fragments (most held, held at the end)"
    );
    assert_eq!(
        t.a.store().peer_count(),
        1,
        "A persisted peers other than B: {st:?}"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        assert!(
            after < before + (64 << 20),
            "memory grew from {before} to {after} bytes"
        );
    }
    for reason in [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::WrongDestination,
        DropReason::UnknownEpoch,
        DropReason::WrongEpoch,
        DropReason::BeyondWindow,
        DropReason::BogusAck,
    ] {
        assert!(st.core.dropped(reason) > 0, "no {reason:?} drop: {st:?}");
    }
    assert_eq!(st.core.peer_resets, 0, "{st:?}");
}
