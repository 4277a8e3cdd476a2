//! Drives a [`Core`] with arbitrary datagram sequences, for the
//! `node_datagrams` fuzz target and its replay test. Not part of the API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hrpc_store::{Store, StoreConfig};
use hrpc_wire::{Datagram, DatagramWriter, Frame, HeaderFields, HeartbeatFrame, decode_frames};

use super::{Core, CoreConfig, StaticResolver};

/// The node under test.
const ME: u32 = 1;
/// The peer whose datagrams are forged.
const PEER: u32 = 2;
/// The epoch the forged peer claims.
const PEER_EPOCH: u64 = 0x0123_4567_89ab_cdef;

/// Runs one input: a sequence of operations encoded in `input`.
///
/// Invariants asserted: the forged peer is admitted through the handshake; the core never
/// panics; a datagram that does not parse, or is addressed to another node or with another
/// session token of this one, changes nothing in the store; deliveries come in seq order per peer with
/// no seq delivered twice, and no seq is skipped unless it was reported lost
/// (`Event::Lost`) or the stream had not started (it may begin at the
/// sender's first pending seq); the core's receive state equals the store's.
pub fn run(dir: &Path, input: &[u8]) {
    let Ok(store) = Store::open(dir, &StoreConfig::new(ME)) else {
        return;
    };
    let peer_addr: SocketAddr = ([127, 0, 0, 2], 2).into();
    let resolver = StaticResolver([(PEER, peer_addr)].into_iter().collect());
    let mut now = Instant::now();
    let Ok(mut core) = Core::new(store, CoreConfig::default(), Box::new(resolver), now) else {
        return;
    };
    assert!(
        handshake(&mut core, now, PEER, peer_addr, PEER_EPOCH),
        "the forged peer could not complete the handshake"
    );
    let mut last_delivered = 0u64;
    let mut lost: Vec<std::ops::RangeInclusive<u64>> = Vec::new();
    let mut buf = vec![0u8; core.config().mtu];
    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        let (len, tail) = match tail.split_first() {
            Some((&l, t)) => (usize::from(l) * 8, t),
            None => (0, tail),
        };
        let (chunk, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        now += Duration::from_millis(u64::from(op >> 4));
        match op & 0x3 {
            0 => {
                let before = core.store().inspect();
                core.handle_datagram(now, peer_addr, chunk);
                let inert = match Datagram::parse(chunk) {
                    Err(_) => true,
                    Ok(d) => {
                        let h = d.header();
                        h.dst != ME || h.dst_epoch != core.session_token(h.src)
                    }
                };
                if inert {
                    assert_eq!(
                        before,
                        core.store().inspect(),
                        "inert datagram changed the store"
                    );
                }
            }
            1 => {
                // Re-frame whatever frames decode from the chunk in a datagram
                // that passes the header checks, so frame handling is reached.
                let header = HeaderFields {
                    src: PEER,
                    dst: ME,
                    src_epoch: PEER_EPOCH,
                    dst_epoch: core.session_token(PEER),
                    auth: false,
                };
                let mut out = vec![0u8; hrpc_wire::MAX_DATAGRAM_LEN];
                let Ok(mut w) = DatagramWriter::new(&mut out, &header) else {
                    continue;
                };
                for frame in decode_frames(chunk).map_while(Result::ok) {
                    if w.push(&frame).is_err() {
                        break;
                    }
                }
                let n = w.finish();
                core.handle_datagram(now, peer_addr, &out[..n]);
            }
            2 => {
                if core.sync().is_err() {
                    return;
                }
                let mut got = Vec::new();
                let mut check = |d: super::Delivery<'_>| {
                    assert_eq!(d.peer, PEER);
                    got.push(d.seq);
                };
                if core.deliver(usize::MAX, &mut check).is_err() {
                    return;
                }
                while let Some(e) = core.poll_event() {
                    if let super::Event::Lost { peer, range } = e {
                        assert_eq!(peer, PEER);
                        lost.push(range);
                    }
                }
                for seq in got {
                    assert!(seq > last_delivered, "out of order or duplicate");
                    let skipped = last_delivered + 1..seq;
                    let explained = last_delivered == 0
                        || skipped.clone().all(|s| lost.iter().any(|r| r.contains(&s)));
                    assert!(explained, "seqs {skipped:?} skipped without a Lost report");
                    last_delivered = seq;
                }
                if let Err(e) = core.check_receive_state() {
                    panic!("receive state: {e}");
                }
                core.handle_timeout(now);
                for _ in 0..64 {
                    if core.poll_transmit(now, &mut buf).is_none() {
                        break;
                    }
                }
            }
            _ => {
                let _ = core.producer().send(PEER, chunk);
            }
        }
    }
}

/// Plays node `peer` at `addr`, with session token `token`, through the handshake with `core`:
/// a hello, then the challenge's cookie echoed back. Returns whether `core` now knows the
/// peer's session (then datagrams with `token` as `src_epoch` and
/// [`Core::session_token`]`(peer)` as `dst_epoch`, from `addr`, reach its streams). Datagrams
/// `core` has for others meanwhile are dropped.
pub fn handshake(core: &mut Core, now: Instant, peer: u32, addr: SocketAddr, token: u64) -> bool {
    let header = HeaderFields {
        src: peer,
        dst: core.node_id(),
        src_epoch: token,
        dst_epoch: 0,
        auth: false,
    };
    let hello = HeartbeatFrame {
        reply_requested: true,
        next_seq: 1,
        first_pending: 1,
        expected: 1,
        timestamp_us: 1,
        echo_us: 0,
    };
    let mut out = vec![0u8; hrpc_wire::MAX_DATAGRAM_LEN];
    let mut send = |core: &mut Core, push: &dyn Fn(&mut DatagramWriter<'_>) -> bool| {
        let Ok(mut w) = DatagramWriter::new(&mut out[..1472], &header) else {
            return;
        };
        if push(&mut w) {
            let n = w.finish();
            core.handle_datagram(now, addr, &out[..n]);
        }
    };
    send(core, &|w| w.push_heartbeat(&hello).is_ok());
    let mut buf = vec![0u8; core.config().mtu.max(1472) * core.config().max_segments];
    let mut cookie = None;
    for _ in 0..64 {
        let Some(t) = core.poll_transmit(now, &mut buf) else {
            break;
        };
        let Ok(d) = Datagram::parse(&buf[..t.len]) else {
            continue;
        };
        if t.dst != addr || d.header().dst != peer {
            continue;
        }
        for f in d.frames() {
            if let Frame::Challenge(c) = f {
                cookie = Some(c.cookie);
            }
        }
    }
    let Some(cookie) = cookie else {
        return false;
    };
    send(core, &|w| w.push_response(cookie).is_ok());
    for _ in 0..64 {
        if core.poll_transmit(now, &mut buf).is_none() {
            break;
        }
    }
    core.peer_info(peer).and_then(|i| i.epoch) == Some(token)
}
