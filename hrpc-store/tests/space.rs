//! Space, as a user meets it: a capacity that can never work is refused at open, a message that
//! can never fit is `TooLarge` (not the retryable `Full`), a large message does not waste much,
//! and the disk space of acknowledged traffic goes back to the file system once the store is
//! idle — measured the way `ls -l` and `du` would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hrpc_store::{Durability, MAX_MESSAGE_LEN, MIN_CAPACITY, Store, StoreConfig, StoreError};

const MIB: u64 = 1 << 20;

/// `(sum of file lengths, sum of allocated bytes)` of the files in `dir` (`ls -l`, `du`).
fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut len, mut alloc) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        len += m.len();
        alloc += m.blocks() * 512;
    }
    (len, alloc)
}

/// Length of the segment files in `dir`.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn cfg(durability: Durability) -> StoreConfig {
    StoreConfig {
        durability,
        ..StoreConfig::new(1)
    }
}

/// A capacity below the minimum is refused at open with a typed error naming the minimum, and
/// nothing is created; the minimum itself works.
#[test]
fn capacity_below_minimum_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    let small = StoreConfig {
        capacity_bytes: 1000,
        ..StoreConfig::new(1)
    };
    match Store::open(&store_dir, &small) {
        Err(StoreError::CapacityTooSmall { capacity, min }) => {
            assert_eq!((capacity, min), (1000, MIN_CAPACITY));
        }
        Err(e) => panic!("expected CapacityTooSmall, got {e:?}"),
        Ok(_) => panic!("a 1000-byte capacity was accepted"),
    }
    assert!(!store_dir.exists(), "a refused open created files");
    let min = StoreConfig {
        capacity_bytes: MIN_CAPACITY,
        ..StoreConfig::new(1)
    };
    let store = Store::open(&store_dir, &min).unwrap();
    store.producer().send(2, &[1; 100]).unwrap();
}

/// A message whose slot is larger than the capacity is `TooLarge` with the largest payload
/// that could ever fit, outbound and inbound; that largest payload does fit an empty store;
/// with the store full it is `Full` (backpressure), and fits again once the peer acks.
#[test]
fn never_fitting_message_is_too_large_not_full() {
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        capacity_bytes: MIN_CAPACITY,
        ..StoreConfig::new(1)
    };
    let mut store = Store::open(dir.path(), &c).unwrap();
    let p = store.producer();
    let max = match p.reserve(2, 100_000) {
        Err(e @ StoreError::TooLarge { len: 100_000, max }) => {
            assert!(!e.is_backpressure());
            max
        }
        other => panic!("expected TooLarge, got {other:?}"),
    };
    assert!(
        max < MIN_CAPACITY as usize && max > MIN_CAPACITY as usize / 2,
        "{max}"
    );
    assert!(matches!(
        store.put_inbound(3, 1, &vec![0; 100_000]),
        Err(StoreError::TooLarge { max: m, .. }) if m == max
    ));
    assert!(matches!(
        store.begin_inbound(3, 1, max as u32 + 1, 0, 0),
        Err(StoreError::TooLarge { max: m, .. }) if m == max
    ));
    assert!(matches!(
        p.reserve(2, max + 1),
        Err(StoreError::TooLarge { .. })
    ));
    // The largest that fits, fits an empty store ...
    let seq = p.send(2, &vec![7; max]).unwrap();
    // ... and while it is pending, another is Full: backpressure, it will fit later.
    match p.reserve(2, max) {
        Err(e @ StoreError::Full { .. }) => assert!(e.is_backpressure()),
        other => panic!("expected Full, got {other:?}"),
    }
    store.release_outbound_through(2, seq).unwrap();
    p.send(2, &vec![8; max]).unwrap();
}

/// A large message takes a slot at most a tenth larger than it needs (payload + 64-byte
/// header), in memory accounting and in the segment file it lives in.
#[test]
fn large_messages_waste_at_most_a_tenth() {
    for len in [
        1 << 20,
        MAX_MESSAGE_LEN,
        100_000,
        3_000_000,
        (1 << 20) + 1,
        MAX_MESSAGE_LEN - 1,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &cfg(Durability::Process)).unwrap();
        store.producer().send(2, &vec![3; len]).unwrap();
        let need = (len + 64) as f64;
        let used = store.usage().0 as f64;
        assert!(
            used <= 1.1 * need,
            "{len}-byte message takes a {used}-byte slot"
        );
        let seg = segment_bytes(dir.path()) as f64;
        assert!(
            seg <= 1.1 * need + 64.0,
            "{len}-byte message takes {seg} bytes of segment files"
        );
    }
}

/// After one 16 MiB message (plus a mix of smaller traffic, both directions) is acknowledged
/// and consumed, the store goes back to at most 1 MiB on disk — file lengths and allocated
/// blocks — within 3 s of `maintain` calls; it reopens with nothing lost, and big messages
/// work again afterwards. Both durability modes.
#[test]
fn space_returns_after_traffic_is_acked() {
    for durability in [Durability::Process, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(durability);
        let mut store = Store::open(dir.path(), &c).unwrap();
        let p = store.producer();
        let big = p.send(2, &vec![7; MAX_MESSAGE_LEN]).unwrap();
        let mut last = big;
        for i in 0..3000usize {
            last = p
                .send(2, &vec![i as u8; [10, 100, 1000, 5000, 70_000][i % 5]])
                .unwrap();
        }
        for seq in 1..=200u64 {
            store.put_inbound(3, seq, &vec![seq as u8; 3000]).unwrap();
        }
        store.sync().unwrap();
        let (len, alloc) = disk_usage(dir.path());
        assert!(len > 16 * MIB && alloc > 16 * MIB, "{len} {alloc}");

        store.release_outbound_through(2, last).unwrap();
        for seq in 1..=200u64 {
            store.consume_inbound(3, seq).unwrap();
        }
        let start = Instant::now();
        loop {
            store.sync().unwrap();
            store.maintain();
            let (len, alloc) = disk_usage(dir.path());
            if len <= MIB && alloc <= MIB {
                eprintln!(
                    "{durability:?}: {len} bytes long, {alloc} allocated after {:?}",
                    start.elapsed()
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{durability:?}: still {len} bytes long, {alloc} allocated: {:?}",
                store.inspect().files
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(store.inspect().disk_bytes <= MIB);
        drop(store);

        let mut store = Store::open(dir.path(), &c).unwrap();
        assert_eq!(store.outbound_pending(2), Some((last + 1, last + 1)));
        assert_eq!(store.inbound_consumed(3), 200);
        let seq = store.producer().send(2, &vec![9; MAX_MESSAGE_LEN]).unwrap();
        assert_eq!(seq, last + 1);
        store.put_inbound(3, 201, &vec![5; 2 << 20]).unwrap();
        store.sync().unwrap();
        store.maintain();
        drop(store);
        let store = Store::open(dir.path(), &c).unwrap();
        let m = store.outbound_message(2, seq).unwrap();
        assert!(m.payload().len() == MAX_MESSAGE_LEN && m.payload().iter().all(|&b| b == 9));
        let m = store.inbound_message(3, 201).unwrap();
        assert!(m.payload().len() == 2 << 20 && m.payload().iter().all(|&b| b == 5));
    }
}

/// Reclaim never takes a segment from under a slot in use: a reservation being filled, an
/// inbound message being assembled, a pending message, all survive `maintain` long past the
/// idle delay; the segment goes only once they are released.
#[test]
fn maintain_keeps_segments_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &cfg(Durability::Process)).unwrap();
    let p = store.producer();
    let t0 = Instant::now();
    let mut r = p.reserve(2, 2 << 20).unwrap();
    let inb = store
        .begin_inbound(3, 1, 3 << 20, crc32c::crc32c(&vec![4; 3 << 20]), 0)
        .unwrap();
    let pending = p.send(2, &vec![6; 4 << 20]).unwrap();
    for s in 0..10 {
        store.maintain_at(t0 + Duration::from_secs(s * 10));
    }
    r.payload_mut().fill(1);
    let seq = r.commit().unwrap();
    store.write_inbound(&inb, 0, &vec![4; 3 << 20]).unwrap();
    store.commit_inbound(inb).unwrap();
    for s in 10..20 {
        store.maintain_at(t0 + Duration::from_secs(s * 10));
    }
    assert!(
        store
            .outbound_message(2, seq)
            .unwrap()
            .payload()
            .iter()
            .all(|&b| b == 1)
    );
    assert!(
        store
            .outbound_message(2, pending)
            .unwrap()
            .payload()
            .iter()
            .all(|&b| b == 6)
    );
    assert!(
        store
            .inbound_message(3, 1)
            .unwrap()
            .payload()
            .iter()
            .all(|&b| b == 4)
    );
    let before = segment_bytes(dir.path());
    assert!(before > 9 * MIB, "{before}");
    store.release_outbound_through(2, seq.max(pending)).unwrap();
    store.consume_inbound(3, 1).unwrap();
    store.maintain_at(t0 + Duration::from_secs(300));
    store.maintain_at(t0 + Duration::from_secs(310));
    assert_eq!(segment_bytes(dir.path()), 0, "{:?}", store.inspect().files);
}

/// Producer threads committing messages of changing sizes while the poll thread releases them
/// and reclaims empty segments as eagerly as it can: every payload reads back intact, nothing
/// faults, and the store reopens with exactly what is pending.
#[test]
fn reclaim_races_producers() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(Durability::Process);
    let mut store = Store::open(dir.path(), &c).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let p = store.producer();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 3000 {
                    let len = [50usize, 3000, 70_000, 300_000][(n as usize + t as usize) % 4];
                    let b = (n % 251) as u8;
                    match p.reserve(10 + t, len) {
                        Ok(mut r) => {
                            r.payload_mut().fill(b);
                            r.commit().unwrap();
                            n += 1;
                        }
                        Err(StoreError::Full { .. }) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut tick = 0u64;
    while threads.iter().any(|t| !t.is_finished()) {
        for peer in [10, 11] {
            for seq in store.outbound_seqs(peer) {
                let m = store.outbound_message(peer, seq).unwrap();
                let b = m.payload()[0];
                assert!(
                    m.payload().iter().all(|&x| x == b),
                    "torn payload {peer}/{seq}"
                );
                assert_eq!(u32::from(b), (seq as u32 - 1) % 251);
            }
            if let Some((_, next)) = store.outbound_pending(peer)
                && next > 1
            {
                store.release_outbound_through(peer, next - 1).unwrap();
            }
        }
        tick += 1;
        store.maintain_at(t0 + Duration::from_secs(tick * 5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let pending: Vec<Vec<u64>> = [10, 11].iter().map(|&p| store.outbound_seqs(p)).collect();
    drop(store);
    let store = Store::open(dir.path(), &c).unwrap();
    let again: Vec<Vec<u64>> = [10, 11].iter().map(|&p| store.outbound_seqs(p)).collect();
    assert_eq!(pending, again);
}
