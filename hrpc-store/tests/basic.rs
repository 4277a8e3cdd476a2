//! Core behaviour: open/reserve/commit/read/free/recover/lock/cursors and typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_store::{Durability, MAX_MESSAGE_LEN, OutboundOnReset, Store, StoreConfig, StoreError};

fn cfg() -> StoreConfig {
    StoreConfig::new(1)
}

/// A committed message is readable byte-for-byte, gets seq 1, 2, ... per peer, and survives
/// drop + reopen (drop does no work, so this is the process-death path).
#[test]
fn commit_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let epoch;
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        epoch = store.epoch();
        assert_ne!(epoch, 0);
        let p = store.producer();
        assert_eq!(p.send(5, b"one").unwrap(), 1);
        assert_eq!(p.send(5, b"two").unwrap(), 2);
        assert_eq!(p.send(6, &[7u8; 3000]).unwrap(), 1);
        assert_eq!(store.outbound_message(5, 2).unwrap().payload(), b"two");
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.epoch(), epoch);
    assert_eq!(store.peers(), vec![5, 6]);
    assert_eq!(store.outbound_seqs(5), vec![1, 2]);
    assert_eq!(store.outbound_message(5, 1).unwrap().payload(), b"one");
    assert_eq!(
        store.outbound_message(6, 1).unwrap().payload(),
        &[7u8; 3000][..]
    );
    assert_eq!(store.outbound_pending(5), Some((1, 3)));
}

/// Released messages are gone after reopen and seq numbering never restarts, even when the
/// highest seq was discarded.
#[test]
fn release_persists_cursor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        let p = store.producer();
        for i in 0..5u8 {
            p.send(9, &[i; 10]).unwrap();
        }
        assert_eq!(store.release_outbound_through(9, 2).unwrap(), 2);
        assert_eq!(store.discard_outbound(9, 5).unwrap(), Some(3..=5));
        assert_eq!(store.discard_outbound(9, 2).unwrap(), None);
        assert_eq!(
            store.outbound_message(9, 5).unwrap().lost_through(),
            Some(5)
        );
        assert_eq!(
            store.outbound_message(9, 4).unwrap().lost_through(),
            Some(5)
        );
        assert!(matches!(
            store.release_outbound_through(9, 6),
            Err(StoreError::BadSeq { .. })
        ));
    }
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.outbound_seqs(9), vec![3]);
    assert_eq!(
        store.outbound_message(9, 3).unwrap().lost_through(),
        Some(5)
    );
    assert_eq!(store.outbound_pending(9), Some((3, 6)));
    assert_eq!(store.producer().send(9, b"x").unwrap(), 6);
    // An ack inside the marker's range keeps it; one past it frees it.
    assert_eq!(store.release_outbound_through(9, 4).unwrap(), 0);
    assert_eq!(store.release_outbound_through(9, 6).unwrap(), 2);
    drop(store);
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.outbound_pending(9), Some((7, 7)));
}

/// Inbound: fragments assembled in place, published only when complete, consumed in order; the
/// consumed cursor persists; a bad crc or out-of-bounds write is a typed error.
#[test]
fn inbound_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let msg: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        let slot = store
            .begin_inbound(3, 1, 5000, crc32c::crc32c(&msg), 0)
            .unwrap();
        store.write_inbound(&slot, 4000, &msg[4000..]).unwrap();
        assert!(matches!(
            store.write_inbound(&slot, 4001, &msg[4000..]),
            Err(StoreError::OutOfBounds { .. })
        ));
        assert!(!store.has_inbound(3, 1));
        store.write_inbound(&slot, 0, &msg[..4000]).unwrap();
        store.commit_inbound(slot).unwrap();
        assert!(store.has_inbound(3, 1));
        let bad = store.begin_inbound(3, 2, 4, 0xdead, 0).unwrap();
        store.write_inbound(&bad, 0, b"abcd").unwrap();
        assert!(matches!(
            store.commit_inbound(bad),
            Err(StoreError::ChecksumMismatch { .. })
        ));
        // Unfinished slot at "crash" time: never published.
        let half = store
            .begin_inbound(3, 3, 4, crc32c::crc32c(b"wxyz"), 0)
            .unwrap();
        store.write_inbound(&half, 0, b"wx").unwrap();
        let _never_finished = half; // neither committed nor aborted: stays unpublished
        store.put_inbound(3, 4, b"four").unwrap();
        assert!(matches!(
            store.consume_inbound(3, 4),
            Err(StoreError::BadSeq { .. })
        ));
    }
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.inbound_seqs(3), vec![1, 4]);
    assert_eq!(store.inbound_message(3, 1).unwrap().payload(), &msg[..]);
    store.consume_inbound(3, 1).unwrap();
    assert!(matches!(
        store.begin_inbound(3, 1, 1, 0, 0),
        Err(StoreError::BadSeq { .. })
    ));
    drop(store);
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.inbound_consumed(3), 1);
    assert_eq!(store.inbound_seqs(3), vec![4]);
}

/// Peer epoch and reset: reset drops inbound state and (on Drop) outbound, restarting seqs.
#[test]
fn epochs_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        store.set_peer_epoch(4, 77).unwrap();
        store.producer().send(4, b"a").unwrap();
        store.producer().send(4, b"b").unwrap();
        store.put_inbound(4, 1, b"in").unwrap();
        let r = store.reset_peer(4, 78, OutboundOnReset::Keep).unwrap();
        assert_eq!((r.inbound_dropped, r.outbound_kept), (1, 2));
        store.put_inbound(4, 1, b"new").unwrap();
    }
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.peer_epoch(4), Some(78));
    assert_eq!(store.outbound_seqs(4), vec![1, 2]);
    assert_eq!(store.inbound_message(4, 1).unwrap().payload(), b"new");
    let r = store.reset_peer(4, 79, OutboundOnReset::Drop).unwrap();
    assert_eq!((r.inbound_dropped, r.outbound_dropped), (1, 2));
    assert_eq!(store.producer().send(4, b"c").unwrap(), 1);
    drop(store);
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.outbound_seqs(4), vec![1]);
    assert_eq!(store.outbound_message(4, 1).unwrap().payload(), b"c");
    assert_eq!(store.peer_epoch(4), Some(79));
}

/// A second open of a locked store (same process) is `Locked`; after drop it opens.
#[test]
fn locked_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), &cfg()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), &cfg()),
        Err(StoreError::Locked { .. })
    ));
    drop(a);
    Store::open(dir.path(), &cfg()).unwrap();
}

/// Oversized messages, capacity exhaustion and a wrong node id are typed errors that change
/// nothing.
#[test]
fn typed_errors_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        capacity_bytes: hrpc_store::MIN_CAPACITY,
        ..cfg()
    };
    let mut store = Store::open(dir.path(), &c).unwrap();
    let p = store.producer();
    assert!(matches!(
        p.reserve(1, MAX_MESSAGE_LEN + 1),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.begin_inbound(1, 1, MAX_MESSAGE_LEN as u32 + 1, 0, 0),
        Err(StoreError::TooLarge { .. })
    ));
    let before = store.inspect();
    assert!(matches!(
        p.reserve(1, 70_000),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.inspect(), before);
    let mut n = 0;
    loop {
        match p.send(1, &[1u8; 100]) {
            Ok(_) => n += 1,
            Err(StoreError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, (hrpc_store::MIN_CAPACITY / 192) as usize);
    let before = store.inspect();
    assert!(matches!(p.reserve(1, 5000), Err(StoreError::Full { .. })));
    assert_eq!(store.inspect(), before);
    store.release_outbound_through(1, 1).unwrap();
    p.send(1, &[1u8; 100]).unwrap();
    // A reservation dropped without commit releases its slot.
    drop(store.reserve(1, 10));
    assert_eq!(store.usage().0, (n as u64) * 192);
    drop(store);
    assert!(matches!(
        Store::open(dir.path(), &StoreConfig::new(2)),
        Err(StoreError::NodeIdMismatch {
            stored: 1,
            requested: 2
        })
    ));
}

/// An empty store is at most 1 MiB on disk, and steady commit+free traffic reuses slots instead
/// of growing the files.
#[test]
fn footprint_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert!(
        store.inspect().disk_bytes <= 1 << 20,
        "{:?}",
        store.inspect()
    );
    let p = store.producer();
    for _ in 0..100 {
        p.send(1, &[0u8; 100]).unwrap();
    }
    let size = store.inspect().disk_bytes;
    for i in 0..100_000u64 {
        let seq = p.send(1, &[0u8; 100]).unwrap();
        store.release_outbound_through(1, seq - 100).unwrap();
        let _ = i;
    }
    assert_eq!(store.inspect().disk_bytes, size);
}

/// Sync mode: a sync error is sticky (every later call fails with `Stopped`) until reopen.
#[test]
fn sync_error_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        durability: Durability::Sync,
        ..cfg()
    };
    let mut store = Store::open(dir.path(), &c).unwrap();
    store.producer().send(1, b"x").unwrap();
    store.sync().unwrap();
    store.__inject_sync_error();
    assert!(matches!(store.sync(), Err(StoreError::Stopped(_))));
    assert!(matches!(store.sync(), Err(StoreError::Stopped(_))));
    assert!(matches!(
        store.producer().send(1, b"y"),
        Err(StoreError::Stopped(_))
    ));
    assert!(matches!(
        store.release_outbound_through(1, 1),
        Err(StoreError::Stopped(_))
    ));
    drop(store);
    let store = Store::open(dir.path(), &c).unwrap();
    assert_eq!(store.outbound_seqs(1), vec![1]);
}

/// Producers on several threads commit concurrently: every seq 1..=N appears exactly once per
/// peer with its own payload.
#[test]
fn concurrent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let p = store.producer();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let mut r = p.reserve(1, 8).unwrap();
                    r.payload_mut()[..4].copy_from_slice(&i.to_le_bytes());
                    r.payload_mut()[4..].copy_from_slice(&[t; 4]);
                    r.commit().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seqs = store.outbound_seqs(1);
    assert_eq!(seqs, (1..=8000).collect::<Vec<_>>());
    let mut seen = std::collections::HashSet::new();
    for s in seqs {
        let m = store.outbound_message(1, s).unwrap();
        assert!(seen.insert(m.payload().to_vec()));
    }
}

/// Thread-safety contract: `Store` is `Send`; `OutboundProducer` is `Clone + Send + Sync`;
/// a reservation can be filled on another thread.
#[test]
fn auto_traits() {
    fn send<T: Send>() {}
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send::<Store>();
    send_sync_clone::<hrpc_store::OutboundProducer>();
    send::<hrpc_store::InboundSlot>();
    send::<StoreError>();
}
