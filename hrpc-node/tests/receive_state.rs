//! The receive side has one source of truth: whatever a peer sends (whole
//! messages, fragments, LOST frames, heartbeats that skip), whatever the
//! application consumes, and across reopens, the core's view of each stream
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
    let mut delivered = 0u64;
    let mut step = |core: &mut Core, now: Instant, delivered: &mut u64| {
        core.sync().unwrap();
        core.deliver(usize::MAX, &mut |d| {
            assert!(d.seq > *delivered, "out of order or twice");
            assert_eq!(d.payload, &payload(d.seq)[..]);
            *delivered = d.seq;
        })
        .unwrap();
        while core.poll_transmit(now, &mut out).is_some() {}
    };
    for op in ops {
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
            Op::Deliver => step(&mut core, now, &mut delivered),
            Op::Advance { ms } => {
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
                step(&mut core, now, &mut delivered);
            }
            Op::Reopen => {
                drop(core);
                core = open(dir.path(), now);
            }
        }
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
    step(&mut core, now, &mut delivered);
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
