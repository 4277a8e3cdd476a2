//! Closing a store while a producer holds a reservation: the store's files are not handed to
//! a new owner while the reservation can still write into them, and the reservation can no
//! longer commit. And the per-peer limit of `reserve_within` counts reservations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hrpc_store::{SendWindow, Store, StoreConfig, StoreError};

/// A reservation outlives its store: a new open gets `Locked` until the reservation is gone;
/// its commit fails with `Closed` (nothing published); then the directory opens, with none of
/// its bytes in it.
#[test]
fn reservation_outliving_its_store_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(1);
    let store = Store::open(dir.path(), &cfg).unwrap();
    let p = store.producer();
    p.send(2, b"before").unwrap();
    let mut r = p.reserve(2, 5).unwrap();
    drop(store);
    let e = Store::open(dir.path(), &cfg).err();
    assert!(
        matches!(e, Some(StoreError::Locked { .. })),
        "opened while a reservation could still write: {e:?}"
    );
    r.payload_mut().copy_from_slice(b"after");
    let e = r.commit();
    assert!(matches!(e, Err(StoreError::Closed)), "{e:?}");
    assert!(matches!(p.reserve(2, 1), Err(StoreError::Closed)));
    assert!(matches!(p.send(2, b"x"), Err(StoreError::Closed)));
    let store = Store::open(dir.path(), &cfg).unwrap();
    assert_eq!(store.outbound_seqs(2), vec![1]);
    assert_eq!(store.outbound_message(2, 1).unwrap().payload(), b"before");
}

/// `close_producers` refuses reserves and commits at once, while the store itself still works
/// (the poll thread can sync and read); `wait_producers` reports whether reservations remain.
#[test]
fn close_producers_fences_reserve_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(1);
    let mut store = Store::open(dir.path(), &cfg).unwrap();
    let p = store.producer();
    let r = p.reserve(2, 3).unwrap();
    p.send(2, b"one").unwrap();
    store.close_producers();
    assert!(p.is_closed());
    assert!(
        !store.wait_producers(Duration::ZERO),
        "a reservation is still out"
    );
    assert!(matches!(r.commit(), Err(StoreError::Closed)));
    assert!(store.wait_producers(Duration::ZERO));
    assert!(matches!(p.reserve(2, 1), Err(StoreError::Closed)));
    store.sync().unwrap();
    assert_eq!(store.outbound_seqs(2), vec![1]);
    assert_eq!(
        store.usage().0,
        128,
        "the refused reservation's slot was returned"
    );
    drop(store);
    let store = Store::open(dir.path(), &cfg).unwrap();
    assert_eq!(store.outbound_seqs(2), vec![1]);
}

/// `reserve_within(peer, len, limit)` refuses with `WindowFull` once committed-and-unacked
/// messages plus reservations in progress reach the limit; a dropped reservation gives its
/// place back, and so does an acknowledgement.
#[test]
fn reserve_within_counts_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &StoreConfig::new(1)).unwrap();
    let p = store.producer();
    p.send(2, b"a").unwrap();
    let r1 = p.reserve_within(2, 1, 3).unwrap();
    let r2 = p.reserve_within(2, 1, 3).unwrap();
    let e = p.reserve_within(2, 1, 3).err();
    assert!(
        matches!(
            e,
            Some(StoreError::WindowFull {
                peer: 2,
                unacked: 3,
                unacked_bytes: 3,
            })
        ),
        "{e:?}"
    );
    assert!(e.unwrap().is_backpressure());
    drop(r1);
    let r3 = p.reserve_within(2, 1, 3).unwrap();
    assert_eq!(r2.commit().unwrap(), 2);
    assert!(p.reserve_within(2, 1, 3).is_err());
    store.release_outbound_through(2, 2).unwrap();
    let r4 = p.reserve_within(2, 1, 3).unwrap();
    assert_eq!(r3.commit().unwrap(), 3);
    assert_eq!(r4.commit().unwrap(), 4);
    // Other peers have their own count.
    assert!(p.reserve_within(3, 1, 1).is_ok());
}

/// A byte limit counts the payload of committed-and-unacked messages and of reservations in
/// progress; one message larger than the limit still goes when nothing is pending.
#[test]
fn reserve_within_counts_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &StoreConfig::new(1)).unwrap();
    let p = store.producer();
    let limit = SendWindow {
        msgs: 100,
        bytes: 1000,
    };
    let big = p.reserve_within(2, 5000, limit).unwrap();
    let e = p.reserve_within(2, 1, limit).err();
    assert!(
        matches!(
            e,
            Some(StoreError::WindowFull {
                peer: 2,
                unacked: 1,
                unacked_bytes: 5000,
            })
        ),
        "{e:?}"
    );
    assert_eq!(big.commit().unwrap(), 1);
    store.release_outbound_through(2, 1).unwrap();
    let r1 = p.reserve_within(2, 600, limit).unwrap();
    assert!(p.reserve_within(2, 401, limit).is_err(), "1001 bytes");
    let r2 = p.reserve_within(2, 400, limit).unwrap();
    drop(r1);
    assert!(
        p.reserve_within(2, 600, limit).is_ok(),
        "the dropped one gave its bytes back"
    );
    assert_eq!(r2.commit().unwrap(), 2);
}

/// `Store::close(wait)` reports whether the files were released when it returned: not while a
/// reservation is out (the directory stays `Locked` until that reservation ends), at once
/// otherwise.
#[test]
fn close_reports_whether_the_files_were_released() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(1);
    let store = Store::open(dir.path(), &cfg).unwrap();
    let p = store.producer();
    let r = p.reserve(2, 4).unwrap();
    assert!(!store.close(Duration::ZERO));
    assert!(matches!(
        Store::open(dir.path(), &cfg),
        Err(StoreError::Locked { .. })
    ));
    drop(r);
    let store = Store::open(dir.path(), &cfg).unwrap();
    assert!(store.close(Duration::ZERO));
    assert!(Store::open(dir.path(), &cfg).is_ok());
}

/// Files a process holds open under `dir` (from /proc/self/fd).
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Committing owned reservations leaves nothing behind: once the store and its producer are
/// dropped, no file of the store stays open in the process (a committed owned reservation
/// gives its producer handle back like any other).
#[test]
fn committed_owned_reservations_release_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = Store::open(&root, &StoreConfig::new(1)).unwrap();
    let p = store.producer();
    for i in 0..3u8 {
        let mut r = p.reserve_owned_within(2, 1, 16).unwrap();
        r.payload_mut()[0] = i;
        r.commit().unwrap();
    }
    assert!(
        open_files_under(&root) > 0,
        "the open store holds its files"
    );
    drop(p);
    drop(store);
    assert_eq!(
        open_files_under(&root),
        0,
        "files still open after the store was dropped"
    );
}
