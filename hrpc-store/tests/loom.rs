//! loom model checks of the slot claim → write → publish → consume → free protocol between
//! producer threads (`OutboundProducer`) and the poll thread (`Store`), on the real code (the
//! crate's `sync` shim swaps in loom's Mutex/Arc/AtomicU64 under `--cfg loom`).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!       cargo test -p hrpc-store --release --test loom`
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_store::{Store, StoreConfig, StoreError};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_peers: 2,
        ..StoreConfig::new(1)
    };
    let store = Store::open(dir.path(), &cfg).unwrap();
    // Pre-create the segment so the model explores the protocol, not file creation.
    drop(store.reserve(1, 8).unwrap());
    (dir, store)
}

/// Two producers commit concurrently while the poll thread reads: no slot is handed out twice
/// (each message keeps its own bytes), a message is visible only once fully published (its
/// payload is complete whenever it is listed), and seqs are 1 and 2 with no gap.
#[test]
fn concurrent_commit_and_read() {
    loom::model(|| {
        let (_dir, store) = open();
        let threads: Vec<_> = (1..=2u8)
            .map(|t| {
                let p = store.producer();
                loom::thread::spawn(move || {
                    let mut r = p.reserve(1, 8).unwrap();
                    r.payload_mut().fill(t);
                    r.commit().unwrap()
                })
            })
            .collect();
        // Poll thread, concurrently: whatever is listed must be complete.
        for seq in store.outbound_seqs(1) {
            let m = store.outbound_message(1, seq).unwrap();
            let b = m.payload()[0];
            assert!(b == 1 || b == 2);
            assert!(m.payload().iter().all(|&x| x == b));
        }
        let mut seqs: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, vec![1, 2]);
        let a = store.outbound_message(1, 1).unwrap().payload().to_vec();
        let b = store.outbound_message(1, 2).unwrap().payload().to_vec();
        assert_ne!(a, b, "one slot handed out twice");
    });
}

/// The poll thread frees messages as they are published while a producer keeps claiming: a
/// freed slot is reused only after it was freed, and usage accounting ends exact (no slot lost
/// or freed twice).
#[test]
fn free_and_reuse() {
    loom::model(|| {
        let (_dir, mut store) = open();
        let p = store.producer();
        let t = loom::thread::spawn(move || {
            for i in 1..=2u8 {
                let mut r = p.reserve(1, 8).unwrap();
                r.payload_mut().fill(i);
                r.commit().unwrap();
            }
        });
        let mut freed = 0;
        for _ in 0..2 {
            if let Some(&seq) = store.outbound_seqs(1).first() {
                let m = store.outbound_message(1, seq).unwrap();
                assert!(m.payload().iter().all(|&x| x == seq as u8));
                assert_eq!(store.release_outbound_through(1, seq).unwrap(), 1);
                freed += 1;
            }
            loom::thread::yield_now();
        }
        t.join().unwrap();
        let left = store.outbound_seqs(1);

        assert_eq!(left.len(), 2 - freed);
        for seq in left {
            assert!(
                store
                    .outbound_message(1, seq)
                    .unwrap()
                    .payload()
                    .iter()
                    .all(|&x| x == seq as u8)
            );
        }
        assert_eq!(store.usage().0, 128 * (2 - freed) as u64);
    });
}

/// The group commit against a producer: whatever `sendable_next` reports after a `sync` was
/// published before that sync captured its dirty set (so its bytes were flushed): every seq
/// below the watermark is readable and complete, whatever the interleaving.
#[test]
fn sync_watermark_against_a_producer() {
    loom::model(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            max_peers: 2,
            durability: hrpc_store::Durability::Sync,
            ..StoreConfig::new(1)
        };
        let mut store = Store::open(dir.path(), &cfg).unwrap();
        drop(store.reserve(1, 8).unwrap());
        let p = store.producer();
        let t = loom::thread::spawn(move || {
            for i in 1..=2u8 {
                let mut r = p.reserve(1, 8).unwrap();
                r.payload_mut().fill(i);
                r.commit().unwrap();
            }
        });
        store.sync().unwrap();
        let w = store.sendable_next(1);
        for seq in 1..w {
            let m = store.outbound_message(1, seq).unwrap();
            assert!(m.payload().iter().all(|&x| x == seq as u8));
        }
        t.join().unwrap();
        store.sync().unwrap();
        assert_eq!(store.sendable_next(1), 3);
    });
}

/// Reopens the directory of a closed store: succeeds only if its lock was released. (Under
/// loom, state words live in side tables, not in the files, so a reopened store does not see
/// what the model committed — to it, the committed messages the records account for are
/// missing, and it is opened with `recover_damaged`; the contents are checked before the
/// close.)
fn reopen(dir: &std::path::Path) {
    let cfg = StoreConfig {
        max_peers: 2,
        recover_damaged: true,
        ..StoreConfig::new(1)
    };
    if let Err(e) = Store::open(dir, &cfg) {
        panic!("the closed store's directory does not open: {e}");
    }
}

/// Commit against close: a producer reserves, fills and commits while the poll thread closes
/// the store to producers. Whatever the interleaving, the commit either happened before the
/// close (the message is listed, intact) or fails with `Closed` (nothing of it is listed); the
/// reserve itself may be refused with `Closed`. Once both are over and the store is dropped,
/// the directory opens again.
#[test]
fn commit_against_close() {
    loom::model(|| {
        let (dir, mut store) = open();
        let p = store.producer();
        let t = loom::thread::spawn(move || {
            let mut r = p.reserve(1, 8)?;
            r.payload_mut().fill(7);
            r.commit()
        });
        store.close_producers();
        let listed = store.outbound_seqs(1);
        let res = t.join().unwrap();
        match res {
            Ok(seq) => {
                assert_eq!(seq, 1);
                assert_eq!(store.outbound_seqs(1), vec![1]);
                let m = store.outbound_message(1, 1).unwrap();
                assert!(m.payload().iter().all(|&x| x == 7));
            }
            Err(StoreError::Closed) => assert!(store.outbound_seqs(1).is_empty()),
            Err(e) => panic!("{e}"),
        }
        // Whatever was listed right after the close stays exactly that: no later commit.
        assert_eq!(store.outbound_seqs(1), listed);
        drop(store);
        reopen(dir.path());
    });
}

/// Commit against drop: the store is dropped (on another thread) while a reservation is held
/// and committed. The commit succeeds only if it came first (seq 1); otherwise it fails with
/// `Closed`. Either way the lock is released once both are over: by the drop if the
/// reservation was gone, by the reservation's end otherwise.
#[test]
fn reservation_holds_the_lock_after_close() {
    loom::model(|| {
        let (dir, store) = open();
        let p = store.producer();
        let mut r = p.reserve(1, 8).unwrap();
        let t = loom::thread::spawn(move || drop(store));
        r.payload_mut().fill(3);
        let res = r.commit();
        assert!(matches!(res, Ok(1) | Err(StoreError::Closed)), "{res:?}");
        t.join().unwrap();
        assert!(matches!(p.reserve(1, 8), Err(StoreError::Closed)));
        reopen(dir.path());
    });
}

/// `close_producers` then `wait_producers`: once the wait returns, no reservation is left, so
/// dropping the store releases the directory at once (before the producer thread is even
/// joined), and the producer's commit either preceded the fence or failed with `Closed`.
#[test]
fn wait_producers_then_reopen() {
    loom::model(|| {
        let (dir, mut store) = open();
        let p = store.producer();
        let t = loom::thread::spawn(move || {
            let mut r = p.reserve(1, 8)?;
            r.payload_mut().fill(5);
            r.commit()
        });
        store.close_producers();
        assert!(store.wait_producers(std::time::Duration::from_secs(3600)));
        let listed = store.outbound_seqs(1);
        drop(store);
        reopen(dir.path());
        let res = t.join().unwrap();
        match res {
            Ok(1) => assert_eq!(listed, vec![1]),
            Err(StoreError::Closed) => assert!(listed.is_empty()),
            other => panic!("{other:?}"),
        }
    });
}
