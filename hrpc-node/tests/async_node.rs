//! The tokio handle (`AsyncNode`) on real sockets and stores: two nodes exchange messages both
//! ways in order exactly once (single- and multi-threaded runtimes); `send().await` rides out
//! backpressure and sees a close; a delivery dropped without commit comes again (in this
//! process, also under load, and after a close and reopen) while a committed one never does;
//! an idle node uses no CPU; counters and peer figures asked through the handle tell the
//! traffic; `reserve().await` fills messages in place and rides out a full store.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hrpc_node::{AsyncNode, NodeConfig, NodeError, SendError};
use tokio::time::timeout;

/// Wall-time bound for any step that waits on the network.
const DEADLINE: Duration = Duration::from_secs(60);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Message `i` from `from`: tells its origin and index, and varies in length.
fn msg(from: u32, i: u64) -> Vec<u8> {
    let mut m = format!("{from}:{i}:").into_bytes();
    m.resize(m.len() + (i as usize * 13) % 300, from as u8);
    m
}

fn open_a(dir: &Path, addr: SocketAddr) -> AsyncNode {
    NodeConfig::new(dir.join("a"), 1)
        .bind(addr)
        .open_async()
        .unwrap()
}

/// Receives `n` deliveries, committing each; returns (peer, seq, payload) in order received.
async fn recv_commit(node: &mut AsyncNode, n: usize) -> Vec<(u32, u64, Vec<u8>)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let d = timeout(DEADLINE, node.recv()).await.unwrap().unwrap();
        got.push((d.peer(), d.seq(), d.payload().to_vec()));
        d.commit().unwrap();
    }
    got
}

/// Nothing is delivered within `d`.
async fn assert_quiet(node: &mut AsyncNode, d: Duration) {
    if let Ok(got) = timeout(d, node.recv()).await {
        panic!("unexpected delivery {got:?}");
    }
}

/// Two nodes send each other N messages at once, from tasks, and receive each stream whole,
/// in order, exactly once: on a single-threaded runtime, and on a multi-threaded one (where
/// the driver tasks, senders and receivers run on different threads).
#[tokio::test]
async fn two_nodes_exchange_both_ways_in_order_exactly_once() {
    exchange(3000).await;
}

/// [`two_nodes_exchange_both_ways_in_order_exactly_once`] on worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_on_a_multi_threaded_runtime() {
    exchange(3000).await;
}

async fn exchange(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .open_async()
        .unwrap();
    let (sa, sb) = (a.sender(), b.sender());
    // A knows B only once B's first datagram arrives: its sends wait in its store until then.
    let send_a = tokio::spawn(async move {
        for i in 0..n {
            sa.send(2, &msg(1, i)).await.unwrap();
        }
    });
    let send_b = tokio::spawn(async move {
        for i in 0..n {
            sb.send(1, &msg(2, i)).await.unwrap();
        }
    });
    let recv_a = tokio::spawn(async move {
        let got = recv_commit(&mut a, n as usize).await;
        (a, got)
    });
    let (mut b_node, got_b) = {
        let got = recv_commit(&mut b, n as usize).await;
        (b, got)
    };
    let (mut a, got_a) = recv_a.await.unwrap();
    send_a.await.unwrap();
    send_b.await.unwrap();
    for (got, from) in [(&got_a, 2u32), (&got_b, 1u32)] {
        for (i, (peer, seq, payload)) in got.iter().enumerate() {
            assert_eq!((*peer, *seq), (from, i as u64 + 1));
            assert_eq!(*payload, msg(from, i as u64));
        }
    }
    assert_quiet(&mut a, Duration::from_millis(300)).await;
    assert_quiet(&mut b_node, Duration::from_millis(10)).await;
    a.close(Duration::from_millis(100)).await.unwrap();
    b_node.close(Duration::from_millis(100)).await.unwrap();
}

/// With at most 4 unacknowledged messages per peer, `try_send` reports backpressure and
/// `send().await` waits (the peer is not there yet); once the peer is up, `send().await`
/// completes every one of N sends without an error, and all arrive in order.
#[tokio::test]
async fn send_waits_out_backpressure() {
    const N: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    // A's address, held by a silent socket until A opens on it.
    let placeholder = std::net::UdpSocket::bind(local()).unwrap();
    let a_addr = placeholder.local_addr().unwrap();
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a_addr)
        .max_unacked_per_peer(4)
        .open_async()
        .unwrap();
    let sb = b.sender();
    for i in 0..4 {
        assert_eq!(sb.try_send(1, &msg(2, i)).unwrap(), i + 1);
    }
    let e = sb.try_send(1, &msg(2, 4)).unwrap_err();
    assert!(e.is_backpressure(), "{e}");
    assert!(
        timeout(Duration::from_millis(300), sb.send(1, &msg(2, 4)))
            .await
            .is_err(),
        "send returned although nothing was acknowledged"
    );

    drop(placeholder);
    let mut a = open_a(dir.path(), a_addr);
    let sender = tokio::spawn(async move {
        for i in 4..N {
            assert_eq!(sb.send(1, &msg(2, i)).await.unwrap(), i + 1);
        }
    });
    let got = recv_commit(&mut a, N as usize).await;
    timeout(DEADLINE, sender).await.unwrap().unwrap();
    for (i, (peer, seq, payload)) in got.iter().enumerate() {
        assert_eq!((*peer, *seq), (2, i as u64 + 1));
        assert_eq!(*payload, msg(2, i as u64));
    }
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}

/// A send waiting out backpressure returns `SendError::Closed` when the node closes.
#[tokio::test]
async fn waiting_send_sees_close() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::UdpSocket::bind(local()).unwrap();
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, silent.local_addr().unwrap())
        .max_unacked_per_peer(1)
        .open_async()
        .unwrap();
    let sb = b.sender();
    sb.try_send(1, b"one").unwrap();
    let waiting = tokio::spawn(async move { sb.send(1, b"two").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    b.close(Duration::ZERO).await.unwrap();
    let r = timeout(DEADLINE, waiting).await.unwrap().unwrap();
    assert!(matches!(r, Err(SendError::Closed)), "{r:?}");
}

/// A delivery dropped without commit comes again at once, and again after a close and a
/// reopen of the store; committed ones (also committed out of order) never come again.
#[tokio::test]
async fn uncommitted_delivery_comes_again_committed_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let a_addr = a.local_addr();
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a_addr)
        .open_async()
        .unwrap();
    let sb = b.sender();
    for i in 0..4 {
        sb.send(1, &msg(2, i)).await.unwrap();
    }

    let got = recv_commit(&mut a, 1).await;
    assert_eq!(got[0].1, 1);
    // 2 is dropped: it comes again, then 3 and 4 after it.
    let d2 = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    assert_eq!((d2.peer(), d2.seq()), (2, 2));
    drop(d2);
    let d2 = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    assert_eq!((d2.seq(), d2.payload()), (2, &msg(2, 1)[..]));
    let d3 = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    assert_eq!(d3.seq(), 3);
    // Never committed: the close keeps 2 and what follows in the store. A commit after the
    // close is refused.
    drop(d2);
    a.close(Duration::ZERO).await.unwrap();
    assert!(matches!(d3.commit(), Err(NodeError::Closed)));

    let mut a = open_a(dir.path(), a_addr);
    let d2 = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    let d3 = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    assert_eq!((d2.seq(), d2.payload()), (2, &msg(2, 1)[..]));
    assert_eq!(d3.seq(), 3);
    // Committed out of order: both are consumed once both are committed.
    d3.commit().unwrap();
    d2.commit().unwrap();
    let got = recv_commit(&mut a, 1).await;
    assert_eq!(got[0].1, 4);
    a.close(Duration::ZERO).await.unwrap();

    let mut a = open_a(dir.path(), a_addr);
    assert_quiet(&mut a, Duration::from_millis(500)).await;
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}

/// Under a steady stream, every 7th delivery is dropped the first time: the next one out of
/// `recv` is always that same message again (the later ones already queued are voided), so the
/// application sees each seq in order and commits each exactly once; after a reopen nothing
/// comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_deliveries_come_again_in_order_under_load() {
    const N: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let a_addr = a.local_addr();
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a_addr)
        .open_async()
        .unwrap();
    let sb = b.sender();
    let sending = tokio::spawn(async move {
        for i in 0..N {
            sb.send(1, &msg(2, i)).await.unwrap();
        }
    });
    let mut next = 1;
    let mut dropped = std::collections::HashSet::new();
    while next <= N {
        let d = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
        assert_eq!(d.seq(), next, "out of order after a drop");
        assert_eq!(d.payload(), &msg(2, next - 1)[..]);
        if next % 7 == 0 && dropped.insert(next) {
            drop(d);
            continue;
        }
        d.commit().unwrap();
        next += 1;
    }
    sending.await.unwrap();
    a.close(Duration::ZERO).await.unwrap();
    let mut a = open_a(dir.path(), a_addr);
    assert_quiet(&mut a, Duration::from_millis(300)).await;
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}

/// CPU time used by the calling thread so far (utime + stime from /proc/thread-self/stat,
/// in clock ticks of 10 ms).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Two nodes that have exchanged messages, then sit idle for a second on a runtime that has
/// its own thread: that thread (which runs both driver tasks, the I/O driver and the timers)
/// uses almost no CPU (none measurable in practice; a driver that woke every millisecond would
/// use about 50 ms). A bound on busy-looping, not a performance figure.
#[test]
fn idle_node_uses_no_cpu() {
    let th = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut a = open_a(dir.path(), local());
            let mut b = NodeConfig::new(dir.path().join("b"), 2)
                .peer(1, a.local_addr())
                .open_async()
                .unwrap();
            b.sender().send(1, b"ping").await.unwrap();
            recv_commit(&mut a, 1).await;
            a.sender().send(2, b"pong").await.unwrap();
            recv_commit(&mut b, 1).await;
            // Let the acknowledgements settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = thread_cpu();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let used = thread_cpu() - before;
            a.close(Duration::ZERO).await.unwrap();
            b.close(Duration::ZERO).await.unwrap();
            used
        })
    });
    let used = th.join().unwrap();
    eprintln!("idle nodes used {used:?} of CPU in 1 s");
    assert!(
        used < Duration::from_millis(30),
        "idle nodes used {used:?} of CPU in 1 s"
    );
}

/// The node's events reach the async side: once two nodes have exchanged a message, each
/// reports the other as active (`Event::PeerState`), in order, through `next_event`.
#[tokio::test]
async fn events_reach_the_async_side() {
    use hrpc_node::{Event, PeerState};
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .open_async()
        .unwrap();
    b.sender().send(1, b"hello").await.unwrap();
    let got = recv_commit(&mut a, 1).await;
    assert_eq!(got[0].2, b"hello");
    for (node, peer) in [(&mut a, 2u32), (&mut b, 1u32)] {
        let active = timeout(DEADLINE, async {
            while let Some(e) = node.next_event().await {
                if let Event::PeerState {
                    peer: p,
                    state: PeerState::Active,
                } = e
                {
                    return p;
                }
            }
            0
        })
        .await
        .unwrap();
        assert_eq!(active, peer);
    }
    a.close(Duration::from_millis(100)).await.unwrap();
    b.close(Duration::from_millis(100)).await.unwrap();
}

/// Waits (bounded by [`DEADLINE`]) until `done` holds for what `node` answers.
async fn wait_for<T>(
    node: &AsyncNode,
    what: &str,
    ask: impl Fn(&hrpc_node::Node) -> T + Clone + Send + 'static,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: Send + std::fmt::Debug + 'static,
{
    let mut last = None;
    let waited = timeout(DEADLINE, async {
        loop {
            let v = node.inspect(ask.clone()).await.unwrap();
            if done(&v) {
                return v;
            }
            last = Some(v);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match waited {
        Ok(v) => v,
        Err(_) => panic!("{what}: still {last:?}"),
    }
}

/// B sends N messages to A, which commits them: asked through the async handles, B's
/// counters show N messages sent and (once acknowledged) nothing unacknowledged, A's show N
/// received and delivered; each side knows the other (`peer_info` with its id and address,
/// `peer_state` active) and knows nothing of an id that never appeared.
#[tokio::test]
async fn stats_and_peer_info_reflect_traffic() {
    use hrpc_node::PeerState;
    const N: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .open_async()
        .unwrap();
    assert_eq!(b.stats().await.unwrap().core.messages_sent, 0);
    let sb = b.sender();
    for i in 0..N {
        sb.send(1, &msg(2, i)).await.unwrap();
    }
    let got = recv_commit(&mut a, N as usize).await;
    assert_eq!(got.len(), N as usize);

    // Each message was transmitted before it arrived.
    let sent = b.stats().await.unwrap();
    assert_eq!(sent.core.messages_sent, N);
    assert!(sent.polls > 0 && sent.udp.datagrams_sent > 0, "{sent:?}");
    let received = a.stats().await.unwrap();
    assert_eq!(received.core.messages_received, N);
    assert_eq!(received.delivered, N);
    assert_eq!(received.core.messages_sent, 0);

    wait_for(
        &b,
        "B's unacknowledged messages",
        |n| n.unacked(),
        |u| *u == 0,
    )
    .await;
    assert_eq!(b.unacked().await.unwrap(), 0);
    let to_a = b.peer_info(1).await.unwrap().expect("B knows A");
    assert_eq!(to_a.peer, 1);
    assert_eq!(to_a.addr, Some(a.local_addr()));
    assert_eq!(to_a.unacked_messages, 0);
    // The commits went to A's driver before this request: all consumed.
    let from_b = a.peer_info(2).await.unwrap().expect("A knows B");
    assert_eq!(from_b.peer, 2);
    assert_eq!(from_b.undelivered_messages, 0);
    assert!(from_b.addr.is_some(), "{from_b:?}");

    wait_for(
        &a,
        "A's view of B",
        |n| n.peer_state(2),
        |s| *s == PeerState::Active,
    )
    .await;
    assert_eq!(a.peer_state(2).await.unwrap(), PeerState::Active);
    for node in [&a, &b] {
        assert_eq!(node.peer_info(99).await.unwrap(), None);
        assert_eq!(node.peer_state(99).await.unwrap(), PeerState::Unknown);
    }
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}

/// Payload `i` of a reserved message of `len` bytes.
fn filled(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j as u64 * 31 + i * 7 + 1) as u8)
        .collect()
}

/// Messages from `reserve().await`, filled in place and committed, arrive byte for byte and
/// in order: from empty to several datagrams long.
#[tokio::test]
async fn reserved_messages_arrive_byte_for_byte() {
    const LENS: [usize; 6] = [0, 1, 100, 1500, 5000, 70_000];
    let dir = tempfile::tempdir().unwrap();
    let mut a = open_a(dir.path(), local());
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .open_async()
        .unwrap();
    let sb = b.sender();
    for (i, len) in LENS.into_iter().enumerate() {
        let mut r = sb.reserve(1, len).await.unwrap();
        assert_eq!((r.peer(), r.len()), (1, len));
        r.payload_mut().copy_from_slice(&filled(i as u64, len));
        assert_eq!(r.commit().unwrap(), i as u64 + 1);
    }
    let got = recv_commit(&mut a, LENS.len()).await;
    for (i, (peer, seq, payload)) in got.iter().enumerate() {
        assert_eq!((*peer, *seq), (2, i as u64 + 1));
        assert!(*payload == filled(i as u64, LENS[i]), "message {i} differs");
    }
    let e = sb.try_reserve(2, 1).unwrap_err();
    assert!(matches!(e, SendError::InvalidPeer(2)), "{e}");
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}

/// With the smallest store and the peer not there yet, reservations fill the store until
/// `try_reserve` reports it full and `reserve().await` waits; once the peer is up and
/// acknowledges, `reserve().await` completes for each of many more messages than fit at once,
/// and all arrive byte for byte.
#[tokio::test]
async fn reserve_waits_out_a_full_store() {
    const LEN: usize = 8000;
    const N: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let placeholder = std::net::UdpSocket::bind(local()).unwrap();
    let a_addr = placeholder.local_addr().unwrap();
    let b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a_addr)
        .store_capacity(hrpc_store::MIN_CAPACITY)
        .open_async()
        .unwrap();
    let sb = b.sender();
    let mut fit = 0;
    let full = loop {
        assert!(fit < N, "{N} messages of {LEN} B fit in the smallest store");
        match sb.try_reserve(1, LEN) {
            Ok(mut r) => {
                r.payload_mut().copy_from_slice(&filled(fit, LEN));
                assert_eq!(r.commit().unwrap(), fit + 1);
                fit += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(full, SendError::StoreFull(_)), "{full}");
    assert!(fit > 0);
    assert!(
        timeout(Duration::from_millis(300), sb.reserve(1, LEN))
            .await
            .is_err(),
        "reserve returned although nothing was acknowledged"
    );

    drop(placeholder);
    let mut a = open_a(dir.path(), a_addr);
    let sender = tokio::spawn(async move {
        for i in fit..N {
            let mut r = sb.reserve(1, LEN).await.unwrap();
            r.payload_mut().copy_from_slice(&filled(i, LEN));
            assert_eq!(r.commit().unwrap(), i + 1);
        }
    });
    let got = recv_commit(&mut a, N as usize).await;
    timeout(DEADLINE, sender).await.unwrap().unwrap();
    for (i, (peer, seq, payload)) in got.iter().enumerate() {
        assert_eq!((*peer, *seq), (2, i as u64 + 1));
        assert!(*payload == filled(i as u64, LEN), "message {i} differs");
    }
    a.close(Duration::ZERO).await.unwrap();
    b.close(Duration::ZERO).await.unwrap();
}
