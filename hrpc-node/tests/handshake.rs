//! The handshake at the protocol core, in virtual time: what a challenge carries, what a
//! response must match, and what nothing but a completed round trip changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{addr, open};
use hrpc_node::proto::{Core, DropReason};
use hrpc_wire::{Datagram, DatagramWriter, Frame, HeaderFields, HeartbeatFrame};

/// The node the tests play, against core 1.
const PEER: u32 = 2;
const TOKEN: u64 = 0x5eed;

fn send(
    core: &mut Core,
    now: Instant,
    from: SocketAddr,
    header: &HeaderFields,
    cookie: Option<u64>,
) {
    let mut buf = vec![0u8; 1472];
    let mut w = DatagramWriter::new(&mut buf, header).unwrap();
    match cookie {
        Some(c) => w.push_response(c).unwrap(),
        None => w
            .push_heartbeat(&HeartbeatFrame {
                reply_requested: true,
                next_seq: 1,
                first_pending: 1,
                expected: 1,
                timestamp_us: 1,
                echo_us: 0,
            })
            .unwrap(),
    }
    let n = w.finish();
    core.handle_datagram(now, from, &buf[..n]);
}

/// Everything `core` transmits now, as (destination, datagram bytes).
fn transmitted(core: &mut Core, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 64 * 1472];
    let mut out = Vec::new();
    for _ in 0..64 {
        let Some(t) = core.poll_transmit(now, &mut buf) else {
            break;
        };
        out.push((t.dst, buf[..t.len].to_vec()));
    }
    out
}

/// The cookie of the challenge `core` sent to `to`, checking that the challenge carries
/// nothing else: zero header values, one frame.
fn challenge_to(core: &mut Core, now: Instant, to: SocketAddr) -> u64 {
    let mut found = None;
    for (dst, bytes) in transmitted(core, now) {
        let d = Datagram::parse(&bytes).unwrap();
        let h = d.header();
        let frames: Vec<Frame<'_>> = d.frames().collect();
        if let [Frame::Challenge(c)] = frames[..] {
            assert_eq!(dst, to);
            assert_eq!(
                (h.src_epoch, h.dst_epoch),
                (0, 0),
                "a challenge shows nothing"
            );
            found = Some(c.cookie);
        }
    }
    found.expect("no challenge")
}

fn hello() -> HeaderFields {
    HeaderFields {
        src: PEER,
        dst: 1,
        src_epoch: TOKEN,
        dst_epoch: 0,
        auth: false,
    }
}

/// Invariant: a cookie is good only at the address it was sent to and for the claim it was
/// made for, and only for a limited time; a failed response persists nothing and is
/// challenged again. The one that matches admits the peer and persists its record.
#[test]
fn cookie_is_bound_to_address_claim_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    let before = a.store().inspect();
    let elsewhere: SocketAddr = "127.0.0.9:9999".parse().unwrap();

    send(&mut a, now, addr(PEER), &hello(), None);
    assert_eq!(a.stats().dropped(DropReason::UnknownEpoch), 1);
    let cookie = challenge_to(&mut a, now, addr(PEER));

    // From another address, or claiming another session: refused, challenged again.
    send(&mut a, now, elsewhere, &hello(), Some(cookie));
    challenge_to(&mut a, now, elsewhere);
    let mut other = hello();
    other.src_epoch = TOKEN + 1;
    send(&mut a, now, addr(PEER), &other, Some(cookie));
    challenge_to(&mut a, now, addr(PEER));
    // Too late: cookies live at most two 30 s periods.
    let later = now + Duration::from_secs(61);
    send(&mut a, later, addr(PEER), &hello(), Some(cookie));
    assert_eq!(a.stats().dropped(DropReason::BadCookie), 3);
    assert!(a.peer_info(PEER).and_then(|p| p.epoch).is_none());
    assert_eq!(
        before,
        a.store().inspect(),
        "nothing persisted before validation"
    );

    // The right one, in time.
    now += Duration::from_secs(1);
    send(&mut a, now, addr(PEER), &hello(), Some(cookie));
    assert_eq!(a.peer_info(PEER).and_then(|p| p.epoch), Some(TOKEN));
    assert_eq!(a.store().peer_epoch(PEER), Some(TOKEN));
    assert_eq!(a.stats().peers_validated, 1);
    // The welcome goes to the validated address, with A's token for the peer.
    let welcome = transmitted(&mut a, now)
        .into_iter()
        .find(|(dst, b)| {
            *dst == addr(PEER)
                && Datagram::parse(b)
                    .unwrap()
                    .frames()
                    .any(|f| matches!(f, Frame::Heartbeat(_)))
        })
        .expect("no welcome");
    let h = Datagram::parse(&welcome.1).unwrap().header();
    assert_eq!((h.src_epoch, h.dst_epoch), (a.session_token(PEER), TOKEN));
}

/// Invariant: a challenge is answered only when it comes from the address this node sends
/// that peer's datagrams to, and a datagram with a challenge is never answered with a
/// challenge (two nodes cannot be made to ping-pong).
#[test]
fn challenges_are_answered_only_from_the_peer_address() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut a = open(dir.path(), 1, now);
    a.touch(PEER, now);
    // A says hello to the peer's resolved address.
    let sent = transmitted(&mut a, now);
    assert!(sent.iter().any(|(dst, _)| *dst == addr(PEER)));
    let challenge = HeaderFields {
        src: PEER,
        dst: 1,
        src_epoch: 0,
        dst_epoch: 0,
        auth: false,
    };
    let mut buf = vec![0u8; 1472];
    let mut w = DatagramWriter::new(&mut buf, &challenge).unwrap();
    w.push_challenge(42).unwrap();
    let n = w.finish();
    let elsewhere: SocketAddr = "127.0.0.9:9999".parse().unwrap();
    a.handle_datagram(now, elsewhere, &buf[..n]);
    assert_eq!(a.stats().dropped(DropReason::UnsolicitedChallenge), 1);
    assert!(transmitted(&mut a, now).is_empty(), "answered a stranger");

    a.handle_datagram(now, addr(PEER), &buf[..n]);
    let out = transmitted(&mut a, now);
    let responses: Vec<_> = out
        .iter()
        .filter(|(dst, b)| {
            *dst == addr(PEER)
                && Datagram::parse(b)
                    .unwrap()
                    .frames()
                    .any(|f| matches!(f, Frame::Response(c) if c.cookie == 42))
        })
        .collect();
    assert_eq!(responses.len(), 1, "{out:?}");
    let no_challenge = out.iter().all(|(_, b)| {
        !Datagram::parse(b)
            .unwrap()
            .frames()
            .any(|f| matches!(f, Frame::Challenge(_)))
    });
    assert!(no_challenge, "a challenge was answered with a challenge");
}

/// Invariant: after this node restarts, a peer it has no address for (the resolver does not
/// know it) cannot be taken over by a restart claim from anywhere, however long the peer has
/// been silent: silence proves nothing when the peer was never asked. The peer's own session
/// (which knows both tokens) still gets back in with one round trip.
#[test]
fn no_takeover_of_an_unaddressed_peer_after_a_restart() {
    use hrpc_node::proto::testing::handshake;
    const STRANGER: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut now = Instant::now();
    let real: SocketAddr = "127.0.0.20:20".parse().unwrap();
    let evil: SocketAddr = "127.0.0.66:66".parse().unwrap();
    let mut a = open(dir.path(), 1, now);
    assert!(handshake(&mut a, now, STRANGER, real, TOKEN));
    drop(a);
    let mut a = open(dir.path(), 1, now);
    let before = a.store().inspect();
    for _ in 0..4 {
        assert!(!handshake(&mut a, now, STRANGER, evil, 0xbad));
        now += Duration::from_secs(4);
        a.handle_timeout(now);
    }
    assert!(a.stats().dropped(DropReason::UnvalidatedRestart) >= 4);
    assert_eq!(a.stats().peer_resets, 0);
    assert_eq!(before, a.store().inspect(), "the claim changed the store");
    assert_eq!(a.peer_info(STRANGER).and_then(|p| p.addr), None);
    // The real session, from where it is.
    assert!(handshake(&mut a, now, STRANGER, real, TOKEN));
    assert_eq!(a.peer_info(STRANGER).and_then(|p| p.addr), Some(real));
}

/// Invariant: two nodes that start at the same instant and send to each other, each seeing
/// the other's first datagram before its answer (a symmetric simultaneous open), complete
/// the handshake and deliver both ways — even when each may answer only one unsolicited
/// datagram per second.
#[test]
fn simultaneous_open_completes() {
    use common::cluster::Cluster;
    use hrpc_node::proto::CoreConfig;
    use hrpc_store::StoreConfig;
    for per_sec in [1, 1000] {
        let mut cfg = CoreConfig::default();
        cfg.max_unsolicited_per_sec = per_sec;
        let mut c = Cluster::empty();
        c.add(1, StoreConfig::new(1), cfg.clone());
        c.add(2, StoreConfig::new(2), cfg.clone());
        c.latency(1, 2, 1);
        c.latency(2, 1, 1);
        c.core(1).producer().send(2, b"from 1").unwrap();
        c.core(2).producer().send(1, b"from 2").unwrap();
        let done = c.run_until(
            |c| !c.seen(1).got.is_empty() && !c.seen(2).got.is_empty(),
            4000,
        );
        let drops1 = c.core(1).stats().dropped_by_reason;
        let drops2 = c.core(2).stats().dropped_by_reason;
        assert!(
            done.is_some(),
            "{per_sec}/s: no delivery in 20 s; drops at 1: {drops1:?}; at 2: {drops2:?}"
        );
    }
}
