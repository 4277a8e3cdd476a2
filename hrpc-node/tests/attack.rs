//! An off-path attacker with its own UDP socket against two live nodes on loopback.
//!
//! The attacker can read whatever a node sends to its socket and send anything from it. It
//! claims to be peer B (hello with `dst_epoch` 0, a wrong `dst_epoch`, a forged restart with
//! epoch `u64::MAX`, address moves with whatever session values it could learn), echoes every
//! challenge it gets, acknowledges every message it receives, and floods node A with 1,500 new
//! node ids. Invariant: B receives every message A sends it, in order; the attacker receives
//! none of them; A delivers nothing the attacker injected and keeps B's address; A's counters
//! show the rejected attempts; and a legitimate new node still joins after the flood.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/forge.rs"]
mod forge;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::nodes::pump;
use forge::{hello, push_evil};
use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::{DropReason, Event};
use hrpc_wire::{AckFrame, Datagram, DatagramWriter, Frame, HeaderFields, SackRanges};

const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(30);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// What the attacker has seen so far.
#[derive(Default)]
struct Loot {
    /// Every nonzero session value found in a header or a RESET frame from A or B.
    values: Vec<u64>,
    /// DATA frames A addressed to B that reached the attacker.
    b_messages: u64,
    /// Datagrams A sent to the attacker that were addressed to B and carried a session value
    /// or stream positions (anything a later datagram could use).
    b_leaks: Vec<String>,
    /// Challenges answered.
    echoed: u64,
}

struct Attacker {
    sock: UdpSocket,
    a_addr: SocketAddr,
    loot: Loot,
}

fn datagram(header: &HeaderFields, build: impl FnOnce(&mut DatagramWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut w = DatagramWriter::new(&mut buf, header).unwrap();
    build(&mut w);
    let n = w.finish();
    buf.truncate(n);
    buf
}

impl Attacker {
    fn send(&self, to: SocketAddr, bytes: &[u8]) {
        // A full socket buffer on loopback is no failure of the node under test.
        let _ = self.sock.send_to(bytes, to);
    }

    /// Reads everything waiting (up to `budget` datagrams), loots it, acknowledges every
    /// message as its addressee and echoes every challenge.
    fn drain(&mut self, budget: usize) {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..budget {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                return;
            };
            let Ok(d) = Datagram::parse(&buf[..n]) else {
                continue;
            };
            let h = d.header();
            for v in [h.src_epoch, h.dst_epoch] {
                if v != 0 && !self.loot.values.contains(&v) {
                    self.loot.values.push(v);
                }
            }
            // Answer as the node the datagram was addressed to.
            let mut reply = HeaderFields {
                src: h.dst,
                dst: h.src,
                src_epoch: h.dst_epoch,
                dst_epoch: h.src_epoch,
                auth: false,
            };
            if reply.src_epoch == 0 {
                reply.src_epoch = u64::MAX;
            }
            let mut ack_through = 0;
            for f in d.frames() {
                match f {
                    Frame::Data(df) => {
                        if h.dst == B {
                            self.loot.b_messages += 1;
                        }
                        ack_through = ack_through.max(df.seq);
                    }
                    Frame::Reset(r) => {
                        for v in [r.epoch, r.seen_epoch] {
                            if v != 0 && !self.loot.values.contains(&v) {
                                self.loot.values.push(v);
                            }
                        }
                    }
                    _ => {}
                }
                if h.dst == B && from == self.a_addr && !is_harmless(&f, &h) {
                    self.loot.b_leaks.push(format!("{h:?} {f:?}"));
                }
            }
            if let Some(bytes) = self.echo_challenge(&d, &reply) {
                self.send(from, &bytes);
                self.loot.echoed += 1;
            }
            if ack_through > 0 {
                let ack = datagram(&reply, |w| {
                    w.push_ack(&AckFrame {
                        cumulative: ack_through,
                        ack_delay_us: 0,
                        window_msgs: 1 << 20,
                        window_bytes: u32::MAX,
                        sacks: SackRanges::Native(&[]),
                    })
                    .unwrap();
                });
                self.send(from, &ack);
            }
        }
    }

    /// A reply echoing the challenge in `d`, if it holds one.
    fn echo_challenge(&self, d: &Datagram<'_>, reply: &HeaderFields) -> Option<Vec<u8>> {
        let cookie = d.frames().find_map(|f| match f {
            Frame::Challenge(c) => Some(c.cookie),
            _ => None,
        })?;
        Some(datagram(reply, |w| w.push_response(cookie).unwrap()))
    }
}

/// Whether a frame a node sent towards an unvalidated claimant carries nothing a later
/// datagram could use: no session value in the header, no stream positions.
fn is_harmless(f: &Frame<'_>, h: &HeaderFields) -> bool {
    h.src_epoch == 0 && h.dst_epoch == 0 && matches!(f, Frame::Challenge(_))
}

/// Polls the nodes and the attacker once.
fn step(nodes: &mut [&mut Node], attacker: &mut Attacker, got: &mut [Vec<(u32, u64, Vec<u8>)>]) {
    for (n, g) in nodes.iter_mut().zip(got.iter_mut()) {
        n.poll(&mut |_, d| g.push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
    }
    attacker.drain(4096);
    if let Some(first) = nodes.first_mut() {
        first.wait(Some(Duration::from_millis(1))).unwrap();
    }
}

fn header_as(src: u32, src_epoch: u64, dst_epoch: u64) -> HeaderFields {
    HeaderFields {
        src,
        dst: A,
        src_epoch,
        dst_epoch,
        auth: false,
    }
}

#[test]
fn off_path_attacker_cannot_take_over_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeConfig::new(dir.path().join("a"), A)
        .bind(local())
        .open()
        .unwrap();
    let a_addr = a.local_addr();
    let mut b = NodeConfig::new(dir.path().join("b"), B)
        .bind(local())
        .peer(A, a_addr)
        .open()
        .unwrap();
    let b_addr = b.local_addr();
    let sock = UdpSocket::bind(local()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut evil = Attacker {
        sock,
        a_addr,
        loot: Loot::default(),
    };
    let mut got: Vec<Vec<(u32, u64, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + DEADLINE;

    // B and A meet: one message each way.
    b.send(A, b"b hello").unwrap();
    a.send(B, b"a hello").unwrap();
    while got[0].is_empty() || got[1].is_empty() {
        assert!(Instant::now() < deadline, "no warm-up: {:?}", a.stats());
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
    }

    // The attacker asks B who it is (as A, and as a stranger), to learn B's session value.
    for src in [A, 77] {
        let h = HeaderFields {
            src,
            dst: B,
            src_epoch: 99,
            dst_epoch: 0,
            auth: false,
        };
        evil.send(
            b_addr,
            &datagram(&h, |w| w.push_heartbeat(&hello()).unwrap()),
        );
    }
    // A challenge as B, to make A answer with its token for B.
    let h = header_as(B, 99, 0);
    evil.send(a_addr, &datagram(&h, |w| w.push_challenge(7).unwrap()));
    // 1. Hello as B (dst_epoch 0) and 2. a wrong dst_epoch as B.
    for dst_epoch in [0, 12_345] {
        let h = header_as(B, 99, dst_epoch);
        evil.send(
            a_addr,
            &datagram(&h, |w| w.push_heartbeat(&hello()).unwrap()),
        );
    }
    for _ in 0..50 {
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
    }
    // 3. A forged restart of B from the attacker's address, with every value it learned as
    // A's session, and 4. address moves with every pair of values it learned.
    let mut tries = vec![(u64::MAX, 0)];
    for &x in &evil.loot.values {
        tries.push((u64::MAX, x));
        for &y in &evil.loot.values {
            tries.push((y, x));
        }
    }
    for round in 0..20u64 {
        for &(src_epoch, dst_epoch) in &tries {
            let h = header_as(B, src_epoch, dst_epoch);
            let d = datagram(&h, |w| {
                w.push_heartbeat(&hello()).unwrap();
                push_evil(w, 1 + round);
            });
            evil.send(a_addr, &d);
        }
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
    }

    // 5. A flood of 1,500 new node ids from the attacker's one socket, each answered as far as
    // the attacker can (its replies and challenges are echoed by `drain`).
    for id in 1000..2500u32 {
        let h = header_as(id, u64::from(id), 0);
        evil.send(
            a_addr,
            &datagram(&h, |w| w.push_heartbeat(&hello()).unwrap()),
        );
        if id % 50 == 0 {
            step(&mut [&mut a, &mut b], &mut evil, &mut got);
        }
    }
    let learned = evil.loot.values.clone();
    for id in 1000..2500u32 {
        for &x in &learned {
            let h = header_as(id, u64::from(id), x);
            let d = datagram(&h, |w| {
                w.push_heartbeat(&hello()).unwrap();
                push_evil(w, 1);
            });
            evil.send(a_addr, &d);
        }
        if id % 50 == 0 {
            step(&mut [&mut a, &mut b], &mut evil, &mut got);
        }
    }
    for _ in 0..50 {
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
    }

    // A sends 100 messages to B, while the attacker keeps acknowledging whatever it gets.
    for i in 0..100u32 {
        a.send(B, format!("to b {i}").as_bytes()).unwrap();
    }
    let want_b = 101;
    while got[1].len() < want_b || a.unacked() > 0 {
        if Instant::now() > deadline {
            break;
        }
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
    }

    // A legitimate new node joins after the flood.
    let mut c = NodeConfig::new(dir.path().join("c"), C)
        .bind(local())
        .peer(A, a_addr)
        .open()
        .unwrap();
    c.send(A, b"c hello").unwrap();
    let mut got_c = Vec::new();
    let mut joined = false;
    while Instant::now() < deadline {
        step(&mut [&mut a, &mut b], &mut evil, &mut got);
        c.poll(&mut |_, d| got_c.push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        if got[0].iter().any(|g| g.0 == C) {
            joined = true;
            break;
        }
    }

    let st = a.stats().core;
    let events: Vec<Event> = std::iter::from_fn(|| a.next_event()).collect();
    let from_b: Vec<&[u8]> = got[1]
        .iter()
        .filter(|g| g.0 == A)
        .map(|g| &g.2[..])
        .collect();
    let mut want: Vec<Vec<u8>> = vec![b"a hello".to_vec()];
    want.extend((0..100).map(|i| format!("to b {i}").into_bytes()));
    assert_eq!(
        from_b,
        want.iter().map(|v| &v[..]).collect::<Vec<_>>(),
        "B must receive every message A sent it; attacker got {} of them; stats {st:?}",
        evil.loot.b_messages
    );
    assert_eq!(
        evil.loot.b_messages, 0,
        "the attacker received B's messages"
    );
    let injected: Vec<_> = got[0].iter().filter(|g| g.2.starts_with(b"evil")).collect();
    assert!(
        injected.is_empty(),
        "A delivered injected messages: {injected:?}"
    );
    assert!(
        evil.loot.b_leaks.is_empty(),
        "A answered a claim to be B with usable values: {:?}",
        &evil.loot.b_leaks[..evil.loot.b_leaks.len().min(4)]
    );
    assert_eq!(
        a.peer_info(B).unwrap().addr,
        Some(b_addr),
        "B's address moved"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::PeerReset { .. })),
        "A reset B's state: {events:?}"
    );
    assert!(joined, "a new node could not join after the flood: {st:?}");
    assert!(evil.loot.echoed > 0, "the attacker was never challenged");
    for reason in [
        DropReason::UnknownEpoch,
        DropReason::WrongEpoch,
        DropReason::UnvalidatedRestart,
        DropReason::BadCookie,
        DropReason::UnsolicitedChallenge,
        DropReason::AddressInUse,
    ] {
        assert!(st.dropped(reason) > 0, "no {reason:?} drop: {st:?}");
    }
    assert_eq!(st.peer_resets, 0, "{st:?}");
}

/// Runs `nodes` until `done` holds, or panics at the deadline with `what`.
fn run_until(
    nodes: &mut [&mut Node],
    got: &mut [Vec<(u32, u64, Vec<u8>)>],
    what: &str,
    done: impl FnMut(&[&mut Node], &[Vec<(u32, u64, Vec<u8>)>]) -> bool,
) {
    let ok = pump(nodes, got, Duration::from_millis(1), DEADLINE, done);
    assert!(
        ok,
        "{what}: got {:?}; A unacked {} {:?}; A {:?} {:?}; B {:?} {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        nodes[0].unacked(),
        nodes[0].store().outbound_pending(B),
        nodes[0].stats().core,
        nodes[0].peer_info(B),
        nodes[1].stats().core,
        nodes[1].peer_info(A),
    );
}

/// Payloads `node` received from `peer`, in delivery order.
fn payloads(got: &[(u32, u64, Vec<u8>)], peer: u32) -> Vec<String> {
    got.iter()
        .filter(|g| g.0 == peer)
        .map(|g| String::from_utf8_lossy(&g.2).into_owned())
        .collect()
}

/// Invariant: the handshake still lets the genuine peer through. B moves to a new port with
/// its store (its session is unchanged), then loses its store and comes back at the same
/// address, then loses it again and comes back at yet another port once its old address has
/// gone quiet. Each time A moves or resets its state for B only after the validation round
/// trip, and every message A sends B arrives, in order: nothing is lost.
#[test]
fn genuine_restart_and_address_change_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = hrpc_node::proto::CoreConfig::default();
    cfg.heartbeat_interval = Duration::from_millis(50);
    cfg.unreachable_after = Duration::from_millis(300);
    let mut a = NodeConfig::new(dir.path().join("a"), A)
        .bind(local())
        .core_config(cfg.clone())
        .open()
        .unwrap();
    let a_addr = a.local_addr();
    let open_b = |bind: SocketAddr| {
        NodeConfig::new(dir.path().join("b"), B)
            .bind(bind)
            .peer(A, a_addr)
            .core_config(cfg.clone())
            .open()
            .unwrap()
    };
    let mut b = open_b(local());
    let mut got: Vec<Vec<(u32, u64, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
    let mut want_b: Vec<String> = Vec::new();
    let send_a = |a: &mut Node, want: &mut Vec<String>, from: usize| {
        for i in from..from + 10 {
            let m = format!("to b {i}");
            a.send(B, m.as_bytes()).unwrap();
            want.push(m);
        }
    };

    // Meet, and exchange.
    b.send(A, b"b 0").unwrap();
    send_a(&mut a, &mut want_b, 0);
    run_until(&mut [&mut a, &mut b], &mut got, "first contact", |n, g| {
        g[1].len() == 10 && g[0].len() == 1 && n[0].unacked() == 0
    });

    // 1. B moves to a new port, with its store: A follows after the round trip.
    b.close(Duration::ZERO).unwrap();
    let mut b = open_b(local());
    let moved_to = b.local_addr();
    send_a(&mut a, &mut want_b, 10);
    b.send(A, b"b 1").unwrap();
    run_until(&mut [&mut a, &mut b], &mut got, "address change", |n, g| {
        g[1].len() == 20 && g[0].len() == 2 && n[0].unacked() == 0
    });
    assert_eq!(a.peer_info(B).unwrap().addr, Some(moved_to));
    let st = a.stats().core;
    assert!(st.address_changes >= 1, "{st:?}");
    assert!(st.dropped(DropReason::UnvalidatedAddress) >= 1, "{st:?}");

    // 2. B loses its store and comes back at the same address.
    b.close(Duration::ZERO).unwrap();
    std::fs::remove_dir_all(dir.path().join("b")).unwrap();
    send_a(&mut a, &mut want_b, 20);
    let mut b = open_b(moved_to);
    b.send(A, b"b 2").unwrap();
    run_until(
        &mut [&mut a, &mut b],
        &mut got,
        "restart in place",
        |n, g| g[1].len() == 30 && g[0].len() == 3 && n[0].unacked() == 0,
    );
    assert_eq!(a.stats().core.peer_resets, 1);

    // 3. B loses its store again and comes back at another port: accepted once A finds its
    // old address quiet.
    b.close(Duration::ZERO).unwrap();
    std::fs::remove_dir_all(dir.path().join("b")).unwrap();
    send_a(&mut a, &mut want_b, 30);
    let mut b = open_b(local());
    let last = b.local_addr();
    b.send(A, b"b 3").unwrap();
    run_until(
        &mut [&mut a, &mut b],
        &mut got,
        "restart elsewhere",
        |n, g| g[1].len() == 40 && g[0].len() == 4 && n[0].unacked() == 0,
    );
    assert_eq!(a.peer_info(B).unwrap().addr, Some(last));
    assert_eq!(a.stats().core.peer_resets, 2);

    assert_eq!(payloads(&got[0], B), ["b 0", "b 1", "b 2", "b 3"]);
    let events: Vec<Event> = std::iter::from_fn(|| a.next_event()).collect();
    let resets = events
        .iter()
        .filter(|e| matches!(e, Event::PeerReset { peer: B, .. }))
        .count();
    assert_eq!(resets, 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::PeerAddress { peer: B, addr } if *addr == moved_to)),
        "{events:?}"
    );
    assert_eq!(
        payloads(&got[1], A),
        want_b,
        "B must get every message, in order"
    );
}

/// Invariant: strangers validated from many sockets never take the whole peer table: the
/// last quarter stays for the peers a node is configured with, so a configured peer that
/// was never heard from still joins, in both directions, after the flood.
#[test]
fn strangers_cannot_crowd_out_configured_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = NodeConfig::new(dir.path().join("c"), C)
        .bind(local())
        .open()
        .unwrap();
    let mut a = NodeConfig::new(dir.path().join("a"), A)
        .bind(local())
        .store_max_peers(8)
        .peer(C, c.local_addr())
        .open()
        .unwrap();
    let a_addr = a.local_addr();
    // Twelve sockets, one stranger id each, every challenge echoed.
    let mut evil: Vec<Attacker> = (0..12)
        .map(|_| {
            let sock = UdpSocket::bind(local()).unwrap();
            sock.set_nonblocking(true).unwrap();
            Attacker {
                sock,
                a_addr,
                loot: Loot::default(),
            }
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let mut got: Vec<Vec<(u32, u64, Vec<u8>)>> = vec![Vec::new()];
    for round in 0..20 {
        for (i, e) in evil.iter_mut().enumerate() {
            if round % 5 == 0 {
                let h = header_as(1000 + i as u32, 5, 0);
                e.send(
                    a_addr,
                    &datagram(&h, |w| w.push_heartbeat(&hello()).unwrap()),
                );
            }
            e.drain(64);
        }
        a.poll(&mut |_, d| got[0].push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        a.wait(Some(Duration::from_millis(2))).unwrap();
    }
    let st = a.stats().core;
    assert!(st.dropped(DropReason::TooManyPeers) > 0, "{st:?}");
    assert!(st.peers_validated <= 6, "{st:?}");

    // The configured peer: A sends first, then C answers.
    a.send(C, b"a to c").unwrap();
    let mut got_c = Vec::new();
    let mut replied = false;
    while !got[0].iter().any(|g| g.0 == C) {
        assert!(
            Instant::now() < deadline,
            "configured peer locked out: {:?}",
            a.stats().core
        );
        a.poll(&mut |_, d| got[0].push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        c.poll(&mut |_, d| got_c.push((d.peer, d.seq, d.payload.to_vec())))
            .unwrap();
        if !replied && !got_c.is_empty() {
            c.send(A, b"c to a").unwrap();
            replied = true;
        }
        for e in &mut evil {
            e.drain(64);
        }
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(payloads(&got_c, A), ["a to c"]);
    assert_eq!(payloads(&got[0], C), ["c to a"]);
}
