//! Closing a node against senders on other threads, on real threads.
//!
//! The adversary: a `Sender` inside its fill callback (the message half written into the
//! store's mapping) at the moment the node is closed or dropped, and the same directory opened
//! again right away. Promise checked: a send that did not commit before the close returns
//! `SendError::Closed`; nothing is written into a store after its lock is released (a new
//! open of the directory gets `StoreLocked` while the old send can still write, and succeeds
//! once it is over); the new node's messages are intact (checksums valid) after a further
//! reopen. And `max_unacked_per_peer` is exact with several threads sending at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hrpc_node::driver::{Node, NodeConfig, NodeError, SendError};
use hrpc_store::{Store, StoreConfig};

/// Longest any test here waits for another thread before it fails.
const STUCK: Duration = Duration::from_secs(20);

/// A barrier whose `wait` panics after [`STUCK`] instead of hanging the test run.
struct Gate {
    n: usize,
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl Gate {
    fn new(n: usize) -> Arc<Gate> {
        Arc::new(Gate {
            n,
            state: Mutex::new((0, 0)),
            cv: Condvar::new(),
        })
    }

    fn wait(&self) {
        let mut g = self.state.lock().unwrap();
        let round = g.1;
        g.0 += 1;
        if g.0 == self.n {
            g.0 = 0;
            g.1 += 1;
            self.cv.notify_all();
            return;
        }
        let (g, timeout) = self
            .cv
            .wait_timeout_while(g, STUCK, |s| s.1 == round)
            .unwrap();
        assert!(!timeout.timed_out(), "gate: the other threads never came");
        drop(g);
    }
}

/// An address nobody answers at (the node is never polled anyway).
fn dead_peer() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn open_node(dir: &Path, peer: SocketAddr) -> Result<Node, NodeError> {
    NodeConfig::new(dir, 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .peer(2, peer)
        .open()
}

/// Every outbound message to peer 2 in the store at `dir`, as (seq, payload), after checking
/// that each one's payload matches its stored checksum. A clean open (no `recover_damaged`)
/// also refuses a published slot that fails its checksum.
fn outbound(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let store = Store::open(dir, &StoreConfig::new(1))
        .unwrap_or_else(|e| panic!("reopen after everything finished: {e:#}"));
    store
        .outbound_seqs(2)
        .into_iter()
        .map(|seq| {
            let m = store.outbound_message(2, seq).unwrap();
            assert_eq!(
                crc32c::crc32c(m.payload()),
                m.crc(),
                "seq {seq}: payload does not match its checksum"
            );
            (seq, m.payload().to_vec())
        })
        .collect()
}

/// How the node goes away in [`send_racing_close`].
#[derive(Clone, Copy, Debug)]
enum Ending {
    Close,
    Drop,
}

/// The report, as a test: a `Sender` is inside its fill callback while the main thread closes
/// (or drops) the node and opens a new node on the same directory, which sends its own seq 1.
/// Then the old fill finishes. The old send must fail with `Closed`, the new open must not get
/// the store while the old send can still write into it, and after everything the store holds
/// exactly the new node's messages, intact.
fn send_racing_close(ending: Ending) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let peer = dead_peer();
    let node = open_node(&dir, peer).unwrap();
    let sender = node.sender();
    let in_fill = Gate::new(2);
    let release = Gate::new(2);
    let old = {
        let (in_fill, release) = (in_fill.clone(), release.clone());
        std::thread::spawn(move || {
            sender.send_with(2, 64, |buf| {
                in_fill.wait();
                release.wait();
                buf.fill(0xAA);
            })
        })
    };
    in_fill.wait();
    match ending {
        Ending::Close => node.close(Duration::ZERO).unwrap(),
        Ending::Drop => drop(node),
    }
    // The old send is still filling its slot: the directory must not be handed over.
    let mut second = open_node(&dir, peer);
    let new_seq = match &mut second {
        Ok(n) => Some(n.send(2, b"the new node's first message").unwrap()),
        Err(_) => None,
    };
    release.wait();
    let old = old.join().unwrap();
    let second_err = second.as_ref().err().map(|e| format!("{e:?}"));
    if let Ok(n) = second {
        n.close(Duration::ZERO).unwrap();
    }

    // Once the old send is over, the directory opens, and holds nothing but intact messages
    // of the nodes that owned it when they committed them.
    let mut third = open_node(&dir, peer).unwrap_or_else(|e| panic!("{ending:?}: reopen: {e:#}"));
    let seq = third.send(2, b"third").unwrap();
    third.close(Duration::ZERO).unwrap();
    let msgs = outbound(&dir);
    let mut want = Vec::new();
    if let Some(s) = new_seq {
        want.push((s, b"the new node's first message".to_vec()));
    }
    want.push((seq, b"third".to_vec()));
    assert_eq!(msgs, want, "{ending:?}: the store's messages");
    assert!(
        matches!(old, Err(SendError::Closed)),
        "{ending:?}: a send still filling when the node closed returned {old:?}"
    );
    assert!(
        second_err
            .as_deref()
            .is_some_and(|e| e.starts_with("StoreLocked")),
        "{ending:?}: the directory was opened again while an old send could still write \
         into it (open returned {second_err:?})"
    );
}

#[test]
fn send_racing_close_cannot_write_into_the_next_owner() {
    send_racing_close(Ending::Close);
}

#[test]
fn send_racing_drop_cannot_write_into_the_next_owner() {
    send_racing_close(Ending::Drop);
}

/// `Node::close` fences off sends in progress and waits (up to its linger) for them to end, so
/// the directory can be opened again as soon as it returns. The send, whose fill callback was
/// running when the close began, returns `Closed`.
#[test]
fn close_waits_for_a_send_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let peer = dead_peer();
    let node = open_node(&dir, peer).unwrap();
    let sender = node.sender();
    let in_fill = Gate::new(2);
    let closing = Arc::new(AtomicBool::new(false));
    let old = {
        let (in_fill, closing) = (in_fill.clone(), closing.clone());
        std::thread::spawn(move || {
            sender.send_with(2, 64, |buf| {
                in_fill.wait();
                // Bounded: the main thread sets the flag right after the gate.
                let start = std::time::Instant::now();
                while !closing.load(Ordering::Acquire) && start.elapsed() < STUCK {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(20));
                buf.fill(0xAA);
            })
        })
    };
    in_fill.wait();
    closing.store(true, Ordering::Release);
    node.close(STUCK).unwrap();
    let again = open_node(&dir, peer);
    assert!(
        again.is_ok(),
        "close returned while a send could still write into the store: {:?}",
        again.err()
    );
    let old = old.join().unwrap();
    assert!(matches!(old, Err(SendError::Closed)), "{old:?}");
    drop(again);
    assert_eq!(outbound(&dir), Vec::new());
}

/// `max_unacked_per_peer` counts sends in progress: with a limit of 3, four threads whose fill
/// callbacks all wait for each other get three messages in and one `WindowFull`, never four.
#[test]
fn unacked_limit_counts_sends_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = NodeConfig::new(&dir, 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .peer(2, dead_peer())
        .max_unacked_per_peer(3)
        .open()
        .unwrap();
    let gate = Gate::new(4);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let (sender, gate) = (node.sender(), gate.clone());
            std::thread::spawn(move || {
                let mut waited = false;
                let r = sender.send_with(2, 8, |buf| {
                    waited = true;
                    gate.wait();
                    buf.fill(t);
                });
                if !waited {
                    gate.wait();
                }
                r
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    assert!(
        results.iter().any(|r| matches!(
            r,
            Err(SendError::WindowFull {
                peer: 2,
                unacked: 3,
                ..
            })
        )),
        "{results:?}"
    );
    assert_eq!(node.unacked(), 3);
}

/// The limit is exact under contention: four threads send as fast as they can to a peer that
/// never acknowledges; exactly `limit` sends succeed and the rest get `WindowFull`.
#[test]
fn unacked_limit_is_exact_under_contention() {
    const LIMIT: u64 = 200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = NodeConfig::new(&dir, 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .peer(2, dead_peer())
        .max_unacked_per_peer(LIMIT)
        .open()
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let start = Gate::new(4);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let (sender, accepted, start) = (node.sender(), accepted.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..LIMIT {
                    match sender.send_with(2, 100, |b| {
                        b.fill(t);
                        std::thread::yield_now();
                    }) {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(SendError::WindowFull { unacked, .. }) => {
                            assert!(unacked >= LIMIT, "refused at {unacked}")
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(accepted.load(Ordering::Relaxed) as u64, LIMIT);
    assert_eq!(node.unacked(), LIMIT);
}
