//! Sync-mode durability against a concurrent `Sender`: the group commit must
//! never let a message onto the wire that a power loss could take back.
//!
//! Node A (Durability::Sync, power-loss tracked) sends to node B while a
//! second thread commits to A's store as fast as it can, so commits land while
//! A's `sync` is flushing. The two cores exchange datagrams in memory. Then A
//! "loses power": its files are rebuilt from what its syncs flushed (every page
//! written since the last flush reverts to its old contents), and the store is
//! reopened.
//!
//! Invariant checked: every seq A put on the wire is either covered by A's
//! durable acknowledged cursor or still held by A's recovered store, and A's
//! recovered next seq is above every seq it transmitted (no seq is ever handed
//! out twice).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Verdict};

use hrpc_node::proto::{Core, CoreConfig, StaticResolver};
use hrpc_store::power_loss::{Images, crash_image, snapshot, track};
use hrpc_store::{Durability, Store, StoreConfig};
use hrpc_wire::{Datagram, Frame};

const A: u32 = 1;
const B: u32 = 2;

/// Adds the seqs of the data frames in datagram `d` to `out`.
fn data_seqs(d: &[u8], out: &mut BTreeSet<u64>) {
    let Ok(d) = Datagram::parse(d) else { return };
    for f in d.frames() {
        if let Frame::Data(f) = f {
            out.insert(f.seq);
        }
    }
}

#[test]
fn sync_watermark_covers_only_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let cfg = StoreConfig {
        durability: Durability::Sync,
        ..StoreConfig::new(A)
    };
    let mut store = Store::open(&a_dir, &cfg).unwrap();
    let images: Images = Arc::new(Mutex::new(snapshot(&a_dir).unwrap()));
    track(&mut store, images.clone());
    let mut c = Cluster::empty();
    let resolver = StaticResolver([(B, common::addr(B))].into_iter().collect());
    let a = Core::new(store, CoreConfig::default(), Box::new(resolver), c.now).unwrap();
    let producer = a.producer();
    c.insert(A, a);
    c.add(B, StoreConfig::new(B), CoreConfig::default());

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline && n < 400_000 {
            // Mixed sizes so new segments are created while syncs run.
            let len = if n.is_multiple_of(97) { 3000 } else { 100 };
            if producer.send(B, &vec![n as u8; len]).is_ok() {
                n += 1;
            }
            // Paced so that the sender keeps up and transmits what was just
            // committed: the race is between a commit and the sync after it.
            if n.is_multiple_of(16) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        n
    });

    // What A sends reaches B in the same round and B's answers reach A in the next, every
    // 200 µs of virtual time; every seq A puts on the wire is recorded.
    c.tick = Duration::from_micros(200);
    c.latency(A, B, 0);
    let sent: Rc<RefCell<BTreeSet<u64>>> = Rc::default();
    let seen = sent.clone();
    c.filter(move |p| {
        if p.from == A {
            data_seqs(&p.bytes, &mut seen.borrow_mut());
        }
        Verdict::Pass
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        c.step();
    }
    stop.store(true, Ordering::Relaxed);
    let committed = thread.join().unwrap();
    assert!(committed > 1000, "the producer committed only {committed}");
    let sent = sent.take();
    assert!(sent.len() > 1000, "only {} messages went out", sent.len());
    c.crash(A);

    // Power loss: every page written since the last flush reverts.
    let durable = images.lock().unwrap().clone();
    let crashed = dir.path().join("a-crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    crash_image(&a_dir, &durable, &crashed, &mut || 1).unwrap();
    let store = Store::open(&crashed, &cfg).unwrap();
    let report = store.inspect();
    let peer = report.peers.iter().find(|p| p.peer == B).unwrap();
    let held: BTreeSet<u64> = store.outbound_seqs(B).into_iter().collect();
    let max_sent = *sent.last().unwrap();
    let missing: Vec<u64> = sent
        .iter()
        .copied()
        .filter(|&s| s > peer.acked_outbound_seq && !held.contains(&s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} transmitted messages are gone after the power loss (first {:?}); acked {}",
        missing.len(),
        &missing[..missing.len().min(5)],
        peer.acked_outbound_seq
    );
    assert!(
        peer.next_outbound_seq > max_sent,
        "seq {} would be handed out again (highest transmitted {max_sent})",
        peer.next_outbound_seq
    );
}
