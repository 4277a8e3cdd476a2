//! The receive side has one source of truth: whatever a peer sends (whole
//! messages, fragments, LOST frames, heartbeats that skip), whatever the
//! application is handed and consumes (at once, or later with
//! `deliver_deferred`/`consume`/`redeliver`), and across reopens, the core's view of each stream
//! equals the store's, and the reassembly budget equals what is being
//! assembled — back at zero once nothing is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hrpc_node::proto::{Core, CoreConfig, StaticResolver};
use hrpc_store::{Store, StoreConfig};
use hrpc_wire::{
    DataFrame, DatagramWriter, Frame, HeaderFields, HeartbeatFrame, LostFrame, MAX_DATAGRAM_LEN,
};
use proptest::prelude::*;

const ME: u32 = 1;
const PEER: u32 = 2;
const PEER_EPOCH: u64 = 0x5eed;

#[derive(Debug, Clone)]
enum Op {
    /// Message `seq` (whole, or fragment number `part` of it).
    Data {
        seq: u64,
        part: u32,
    },
    Lost {
        first: u64,
        n: u64,
    },
    Heartbeat {
        first_pending: u64,
    },
    Deliver,
    /// Hand up to `max` without consuming.
    DeliverDeferred {
        max: usize,
    },
    /// Consume up to `n` past the consumed cursor.
    Consume {
        n: u64,
    },
    Redeliver,
    Advance {
        ms: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u64..60, 0u32..12).prop_map(|(seq, part)| Op::Data { seq, part }),
        1 => (1u64..60, 0u64..8).prop_map(|(first, n)| Op::Lost { first, n }),
        1 => (1u64..70).prop_map(|first_pending| Op::Heartbeat { first_pending }),
        3 => Just(Op::Deliver),
        3 => (0usize..6).prop_map(|max| Op::DeliverDeferred { max }),
        3 => (0u64..6).prop_map(|n| Op::Consume { n }),
        1 => Just(Op::Redeliver),
        2 => (1u64..7000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reopen),
    ]
}

/// Message `seq`'s length: some fit a datagram, some are fragmented.
fn msg_len(seq: u64) -> usize {
    if seq.is_multiple_of(3) {
        3000 + (seq as usize * 997) % 9000
    } else {
        (seq as usize * 37) % 1200
    }
}

fn payload(seq: u64) -> Vec<u8> {
    (0..msg_len(seq))
        .map(|i| (seq as usize * 7 + i) as u8)
        .collect()
}

fn open(dir: &Path, now: Instant) -> Core {
    let store = Store::open(dir, &StoreConfig::new(ME)).unwrap();
    let peer: SocketAddr = ([127, 0, 0, 2], 2).into();
    let resolver = StaticResolver([(PEER, peer)].into_iter().collect());
    let mut cfg = CoreConfig::default();
    cfg.max_reassembly_bytes = 40_000;
    cfg.max_reassemblies_per_peer = 3;
    let mut core = Core::new(store, cfg, Box::new(resolver), now).unwrap();
    assert!(hrpc_node::proto::testing::handshake(
        &mut core, now, PEER, peer, PEER_EPOCH
    ));
    core
}

fn send(core: &mut Core, now: Instant, frame: Frame<'_>) {
    let header = HeaderFields {
        src: PEER,
        dst: ME,
        src_epoch: PEER_EPOCH,
        dst_epoch: core.session_token(PEER),
        auth: false,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let mut w = DatagramWriter::new(&mut buf, &header).unwrap();
    w.push(&frame).unwrap();
    let n = w.finish();
    core.handle_datagram(now, ([127, 0, 0, 2], 2).into(), &buf[..n]);
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut core = open(dir.path(), now);
    let mut out = vec![0u8; 1500];
    // The last seq handed to the application (at least the consumed cursor).
    let mut handed = 0u64;
    let check = |d: &hrpc_node::proto::Delivery<'_>, handed: &mut u64| {
        assert!(d.seq > *handed, "out of order or twice");
        assert_eq!(d.payload, &payload(d.seq)[..]);
        *handed = d.seq;
    };
    let mut step = |core: &mut Core, now: Instant, handed: &mut u64| {
        core.sync().unwrap();
        // A plain delivery hands again what was handed and not consumed.
        *handed = core.consumed_through(PEER);
        core.deliver(usize::MAX, &mut |d| check(&d, handed))
            .unwrap();
        while core.poll_transmit(now, &mut out).is_some() {}
    };
    for op in ops {
        let before_op = core.consumed_through(PEER);
        match op {
            Op::Data { seq, part } => {
                let p = payload(seq);
                let crc = crc32c::crc32c(&p);
                let (offset, end) = if p.len() <= 1200 {
                    (0, p.len())
                } else {
                    let off = (part as usize * 1000) % p.len();
                    (off, (off + 1000).min(p.len()))
                };
                let f = DataFrame {
                    flags: 0,
                    seq,
                    msg_len: p.len() as u32,
                    offset: offset as u32,
                    msg_crc: crc,
                    payload: &p[offset..end],
                };
                send(&mut core, now, Frame::Data(f));
            }
            Op::Lost { first, n } => {
                let f = LostFrame {
                    first,
                    last: first + n,
                };
                send(&mut core, now, Frame::Lost(f));
            }
            Op::Heartbeat { first_pending } => {
                let hb = HeartbeatFrame {
                    reply_requested: false,
                    next_seq: first_pending.max(70),
                    first_pending,
                    expected: 1,
                    timestamp_us: 1,
                    echo_us: 0,
                };
                send(&mut core, now, Frame::Heartbeat(hb));
            }
            Op::Deliver => step(&mut core, now, &mut handed),
            Op::Advance { ms } => {
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
                step(&mut core, now, &mut handed);
            }
            Op::DeliverDeferred { max } => {
                core.sync().unwrap();
                core.deliver_deferred(max, &mut |d| check(&d, &mut handed))
                    .unwrap();
            }
            Op::Consume { n } => {
                let before = core.consumed_through(PEER);
                let want = (before + n).min(handed.max(before));
                assert_eq!(core.consume(PEER, before + n).unwrap(), want - before);
                assert_eq!(core.consumed_through(PEER), want);
            }
            Op::Redeliver => {
                core.redeliver(PEER);
                handed = core.consumed_through(PEER);
            }
            Op::Reopen => {
                drop(core);
                core = open(dir.path(), now);
                // Handed and not consumed comes again after a restart.
                handed = core.consumed_through(PEER);
            }
        }
        let consumed = core.consumed_through(PEER);
        assert!(consumed >= before_op, "consumed cursor went back");
        // A gap marker (or a skip) moves the cursor without handing anything.
        handed = handed.max(consumed);
        core.check_receive_state().unwrap();
    }
    // The sender moves past everything: what is assembled is dropped, the rest delivered or
    // reported lost, and the budget is back at zero.
    let hb = HeartbeatFrame {
        reply_requested: false,
        next_seq: 100,
        first_pending: 100,
        expected: 1,
        timestamp_us: 2,
        echo_us: 0,
    };
    send(&mut core, now, Frame::Heartbeat(hb));
    step(&mut core, now, &mut handed);
    core.check_receive_state().unwrap();
    assert_eq!(core.reassembly_bytes(), 0);
    assert_eq!(core.store().inbound_consumed(PEER), 99);
    assert!(core.store().inbound_seqs(PEER).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Invariant: after every operation the core's receive state equals the
    /// store's and the reassembly budget equals the bytes being assembled;
    /// deliveries are in order, once, intact; at the end the budget is zero.
    #[test]
    fn core_and_store_agree(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
