//! Two real nodes in one process over loopback: every size, both directions, sends from the
//! handler and from another thread; the largest message; sync durability across a reopen;
//! wake-ups (`wait`, an external `poll(2)` on the node's fd); batching without GSO. What a
//! node refuses (open errors, backpressure, hostile input) is in `driver_refusals.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::nodes::{DEADLINE, Log, collect_at_a, local, make_msg, pair, pump_until, sizes};
use hrpc_node::driver::{Node, NodeConfig, Sender};
use hrpc_node::proto::{Delivery, DropReason, PeerState};

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

/// An acknowledgement means "persisted", not "handled": a poll acknowledges what it received
/// before it runs the handler, so a slow handler neither holds the sender's messages
/// unacknowledged (and its window closed) nor adds its time to the sender's round trip.
#[test]
fn acks_go_out_before_the_handler_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let acked = |n: &Node| n.peer_info(1).is_some_and(|p| p.unacked_messages == 0);
    b.send(1, b"hello").unwrap();
    pump_until(&mut a, &mut |_, _| {}, &mut b, &mut |_, _| {}, |_, b| {
        acked(b)
    });
    let th = std::thread::spawn(move || {
        b.send(1, b"slow").unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            b.poll(&mut |_, _| {}).unwrap();
            if acked(&b) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "{:?}", b.peer_info(1));
            b.wait(Some(Duration::from_millis(2))).unwrap();
        }
    });
    let hold = Duration::from_millis(600);
    let deadline = Instant::now() + DEADLINE;
    let mut handled = None;
    while handled.is_none() {
        a.poll(&mut |_, d| {
            if d.payload == b"slow" {
                std::thread::sleep(hold);
                handled = Some(Instant::now());
            }
        })
        .unwrap();
        assert!(Instant::now() < deadline);
        a.wait(Some(Duration::from_millis(2))).unwrap();
    }
    let acked_at = th.join().unwrap();
    let handled = handled.unwrap();
    assert!(
        acked_at + hold / 2 < handled,
        "acknowledged {:?} after the handler returned",
        acked_at.saturating_duration_since(handled)
    );
}
