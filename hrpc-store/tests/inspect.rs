//! `hrpc_store::inspect`: read-only inspection of a store directory. It reports what the store
//! itself reports (`Store::inspect`, `Store::usage`) about a live store and about a closed one;
//! it runs beside a live `Store` without taking its lock or changing a byte; it lists damage
//! with file and offset, the same damage `open` with `recover_damaged` finds; and it never
//! panics on damaged, truncated, garbage or missing files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use hrpc_store::corruption::{Template, config, mutate};
use hrpc_store::inspect::{FileKind, Inspection, LockState, inspect_dir};
use hrpc_store::{Durability, PeerReport, Store, StoreConfig, StoreError};
use proptest::prelude::*;

/// Every file of `dir`, by name, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn peer_reports(i: &Inspection) -> Vec<PeerReport> {
    i.peers.iter().map(|p| p.peer_report()).collect()
}

/// Asserts that the inspection says what `store` says about itself.
fn assert_agrees(i: &Inspection, store: &Store) {
    let own = store.inspect();
    assert!(i.is_healthy(), "damage in a healthy store: {:?}", i.damage);
    assert_eq!(i.node_id, store.node_id());
    assert_eq!(i.epoch, store.epoch());
    assert_eq!(peer_reports(i), own.peers);
    assert_eq!(i.used_bytes, own.used_bytes);
    assert_eq!(i.used_bytes, store.usage().0);
    let seg_bytes: u64 = i.segments.iter().map(|s| s.bytes).sum();
    let own_seg_bytes: u64 = own
        .files
        .iter()
        .filter(|f| {
            f.path
                .file_name()
                .is_some_and(|n| n != "LOCK" && n != "meta")
        })
        .map(|f| f.bytes)
        .sum();
    assert_eq!(seg_bytes, own_seg_bytes);
    for s in &i.segments {
        assert!(s.header_ok);
        assert_eq!(s.bytes, s.expected_bytes);
        assert_eq!(s.live_slots + s.stale_slots + s.free_slots, s.slots);
        assert_eq!(s.used_bytes + s.free_bytes, s.expected_bytes - 64);
    }
    for p in &i.peers {
        if let Some(low) = p.lowest_outbound_seq {
            // Outbound pending seqs are contiguous: lowest unacked .. next.
            assert_eq!(low, p.acked_outbound_seq + 1, "peer {}", p.peer);
        }
    }
}

/// A store with traffic: messages of several size classes (one above the chunked read size),
/// some acknowledged, some discarded (a gap marker), inbound messages some consumed, a peer
/// session token.
fn populate(s: &mut Store) {
    let p = s.producer();
    for i in 0..40u64 {
        let peer = (i % 3) as u32 + 1;
        let len = [0usize, 10, 100, 1000, 5000][(i % 5) as usize];
        p.send(peer, &vec![i as u8; len]).unwrap();
    }
    p.send(3, &vec![7u8; 700_000]).unwrap();
    s.release_outbound_through(1, 7).unwrap();
    s.discard_outbound(2, 4).unwrap();
    s.release_outbound_through(3, 10).unwrap();
    for seq in 1..=10u64 {
        s.put_inbound(9, seq, &vec![seq as u8; 300 * seq as usize])
            .unwrap();
    }
    s.consume_inbound(9, 1).unwrap();
    s.consume_inbound(9, 2).unwrap();
    s.set_peer_epoch(2, 0xfeed).unwrap();
}

/// Inspecting a store that another `Store` has open: it reports the lock as held, says exactly
/// what the owner reports about itself, changes no byte of any file, and the owner keeps
/// working. Once the owner is gone, the same again with the lock free, and a store reopened on
/// the directory agrees too.
#[test]
fn agrees_with_a_live_store_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &StoreConfig::new(7)).unwrap();
    populate(&mut store);

    let before = snapshot(dir.path());
    let i = inspect_dir(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before, "inspection changed the files");
    assert_eq!(i.lock, LockState::Held);
    assert_agrees(&i, &store);
    let p9 = i.peer(9).unwrap();
    assert_eq!(
        (
            p9.consumed_inbound_seq,
            p9.lowest_inbound_seq,
            p9.highest_inbound_seq,
            p9.inbound_count
        ),
        (2, Some(3), Some(10), 8)
    );
    let p1 = i.peer(1).unwrap();
    assert_eq!(
        (
            p1.lowest_outbound_seq,
            p1.next_outbound_seq,
            p1.outbound_count
        ),
        (Some(8), 15, 7)
    );
    assert_eq!(i.peer(2).unwrap().session_epoch, Some(0xfeed));
    assert!(i.files.iter().any(|f| f.kind == FileKind::Lock));

    // The owner was not disturbed: it still holds the lock and works.
    assert!(matches!(
        Store::open(dir.path(), &StoreConfig::new(7)),
        Err(StoreError::Locked { .. })
    ));
    let seq = store.producer().send(1, b"after").unwrap();
    assert_eq!(seq, 15);
    store.release_outbound_through(1, 10).unwrap();
    store.consume_inbound(9, 3).unwrap();
    let i = inspect_dir(dir.path()).unwrap();
    assert_agrees(&i, &store);
    drop(store);

    let i = inspect_dir(dir.path()).unwrap();
    assert_eq!(i.lock, LockState::Free);
    let store = Store::open(dir.path(), &StoreConfig::new(7)).unwrap();
    assert_agrees(&i, &store);
}

/// Sync mode: the same agreement for a store used with `Durability::Sync` (frees deferred to
/// the next sync show as stale slots, not damage).
#[test]
fn agrees_with_a_sync_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        durability: Durability::Sync,
        ..StoreConfig::new(8)
    };
    let mut store = Store::open(dir.path(), &cfg).unwrap();
    populate(&mut store);
    store.sync().unwrap();
    let i = hrpc_store::inspect::inspect_dir_as(dir.path(), Durability::Sync).unwrap();
    assert_agrees(&i, &store);
}

/// The probe never creates the lock file, and reads an empty store.
#[test]
fn creates_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &StoreConfig::new(3)).unwrap());
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    let before = snapshot(dir.path());
    let i = inspect_dir(dir.path()).unwrap();
    assert_eq!(i.lock, LockState::NoLockFile);
    assert!(i.is_healthy() && i.peers.is_empty() && i.segments.is_empty());
    assert_eq!(snapshot(dir.path()), before);
}

/// Nothing to inspect is an error, not a panic: a missing directory, a directory without a
/// store, an empty or garbage `meta`.
#[test]
fn unreadable_stores_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = inspect_dir(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    let err = inspect_dir(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    std::fs::write(dir.path().join("meta"), b"").unwrap();
    assert!(matches!(
        inspect_dir(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(dir.path().join("meta"), vec![0x5a; 10_000]).unwrap();
    assert!(matches!(
        inspect_dir(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
}

/// The template store, built once.
fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| Template::build(tempfile::tempdir().unwrap().path()).unwrap())
}

fn write(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `(file name, offset)` of each damage entry.
fn places(d: &[hrpc_store::Damage]) -> Vec<(String, u64)> {
    d.iter()
        .map(|d| {
            let name = d.file.file_name().unwrap().to_string_lossy().into_owned();
            (name, d.offset)
        })
        .collect()
}

/// Inspects `dir` and checks the invariant of the module: no file changed; and if an open
/// with `recover_damaged` (of a copy) succeeds, it found exactly the damage inspection listed
/// (same files, same offsets, same lost outbound ranges), and a healthy inspection means a
/// plain open succeeds and agrees with it.
fn inspect_and_compare(dir: &Path) -> Result<Inspection, StoreError> {
    let before = snapshot(dir);
    let i = inspect_dir(dir);
    assert_eq!(snapshot(dir), before, "inspection changed the files");
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in &before {
        std::fs::write(copy.path().join(name), bytes).unwrap();
    }
    let recover = StoreConfig {
        recover_damaged: true,
        ..config()
    };
    match (&i, Store::open(copy.path(), &recover)) {
        (Ok(i), Ok(s)) => {
            assert_eq!(
                places(&i.damage),
                places(&s.open_report().damage),
                "{:#?}",
                i.damage
            );
            assert_eq!(i.damage_count, s.open_report().damage_count);
            assert_eq!(i.lost, s.open_report().lost);
            if i.is_healthy() {
                assert_agrees(i, &s);
            }
        }
        (Ok(i), Err(e)) => assert!(!i.is_healthy(), "healthy, yet open fails: {e}"),
        (Err(_), _) => {}
    }
    i
}

/// Damage is listed with file and offset: a segment cut short, a flipped byte in a slot
/// header, a garbage segment header, a zero-length segment, a duplicate peer record; files
/// that are not the store's are listed but are not damage.
#[test]
fn damage_is_reported_with_file_and_offset() {
    let t = template();
    let seg = |name: &str| t.files.iter().position(|(n, _)| n == name).unwrap();
    let healthy = {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &t.files);
        inspect_and_compare(dir.path()).unwrap()
    };
    assert!(healthy.is_healthy() && healthy.segments.len() >= 3);
    let s0 = healthy.segments[0].clone();
    let s0_live = s0.live_slots;
    assert!(s0_live > 0);

    // A segment cut in the middle of its slots.
    let dir = tempfile::tempdir().unwrap();
    let mut files = t.files.clone();
    let cut = 64 + 3 * s0.slot_size as usize + 10;
    files[seg(&s0.name)].1.truncate(cut);
    write(dir.path(), &files);
    let i = inspect_and_compare(dir.path()).unwrap();
    assert_eq!(i.damage[0].file, dir.path().join(&s0.name));
    assert_eq!(i.damage[0].offset, cut as u64);
    assert!(i.damage[0].what.contains("cut short"), "{:?}", i.damage);
    assert!(!i.lost.is_empty());

    // A flipped byte in the header of the last published slot of segment 0 (the first slot
    // the scan meets).
    let dir = tempfile::tempdir().unwrap();
    let mut files = t.files.clone();
    let f = &mut files[seg(&s0.name)].1;
    let ss = s0.slot_size as usize;
    let idx = (0..s0.slots as usize)
        .rev()
        .find(|&k| f[64 + k * ss..64 + k * ss + 8] != [0; 8])
        .unwrap();
    f[64 + idx * ss + 20] ^= 0x40;
    write(dir.path(), &files);
    let i = inspect_and_compare(dir.path()).unwrap();
    assert_eq!(i.damage[0].file, dir.path().join(&s0.name));
    assert_eq!(i.damage[0].offset, (64 + idx * ss) as u64);
    assert!(i.damage[0].what.contains(&format!("slot {idx}")));
    assert_eq!(i.damaged_slots, 1);
    assert_eq!(i.segments[0].damaged_slots, 1);

    // A segment of garbage, a zero-length segment and a stray file.
    let dir = tempfile::tempdir().unwrap();
    let mut files = t.files.clone();
    let s1 = &healthy.segments[1];
    for (k, b) in files[seg(&s1.name)].1.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31).wrapping_add(7);
    }
    files[seg(&healthy.segments[2].name)].1.clear();
    files.push(("junk.bin".into(), vec![1, 2, 3]));
    write(dir.path(), &files);
    let i = inspect_and_compare(dir.path()).unwrap();
    let d: Vec<_> = places(&i.damage);
    assert!(d.contains(&(s1.name.clone(), 0)), "{:?}", i.damage);
    assert!(
        d.contains(&(healthy.segments[2].name.clone(), 0)),
        "{:?}",
        i.damage
    );
    assert!(
        i.damage
            .iter()
            .any(|d| d.what.contains("bad segment magic"))
    );
    assert!(i.damage.iter().any(|d| d.what.contains("truncated to 0")));
    assert!(!i.segments[1].header_ok && !i.segments[2].header_ok);
    let junk = i.files.iter().find(|f| f.name == "junk.bin").unwrap();
    assert_eq!((junk.kind, junk.bytes), (FileKind::Other, 3));

    // A second record for one peer: entry 7 gets a copy of entry 0.
    let dir = tempfile::tempdir().unwrap();
    let mut files = t.files.clone();
    let meta = &mut files[seg("meta")].1;
    let entry0: Vec<u8> = meta[4096..4096 + 192].to_vec();
    if entry0.iter().any(|&b| b != 0) {
        meta[4096 + 7 * 192..4096 + 8 * 192].copy_from_slice(&entry0);
        write(dir.path(), &files);
        let i = inspect_and_compare(dir.path()).unwrap();
        assert!(
            i.damage.iter().any(|d| d.what.contains("a second record")),
            "{:?}",
            i.damage
        );
    }

    // The peer table cut short: `open` refuses the store; inspection reads what is there.
    let dir = tempfile::tempdir().unwrap();
    let mut files = t.files.clone();
    files[seg("meta")].1.truncate(4096 + 192 * 2 + 5);
    write(dir.path(), &files);
    let i = inspect_and_compare(dir.path()).unwrap();
    assert_eq!(
        places(&i.damage)[0],
        ("meta".to_string(), 4096 + 192 * 2 + 5)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Invariant: for any bit flips, zeroed or garbage pages, truncations (to any length,
    /// zero included) and deletions of a real store's files, inspection never panics and
    /// changes no file; it returns an error only when `meta` cannot be used; and whenever
    /// `open` with `recover_damaged` succeeds, inspection listed exactly the damage (files,
    /// offsets, lost ranges) it found — no damage at all meaning a plain open agrees with it.
    #[test]
    fn random_damage_never_panics(
        mutations in proptest::collection::vec(any::<u8>(), 0..40),
        delete in proptest::option::of(0usize..8),
    ) {
        let t = template();
        let dir = tempfile::tempdir().unwrap();
        let mut files = t.files.clone();
        mutate(&mut files, &mutations);
        if let Some(k) = delete {
            let k = k % files.len();
            files.remove(k);
        }
        write(dir.path(), &files);
        match inspect_and_compare(dir.path()) {
            Ok(_) => {}
            Err(StoreError::Corrupt { file, .. }) => prop_assert!(file.ends_with("meta")),
            Err(e) => prop_assert!(false, "unexpected error: {e:?}"),
        }
    }
}

/// A peer record copy (64 bytes) with a valid checksum: generation, peer, then the cursors.
fn record(generation: u64, peer: u32, next_out: u64, acked_out: u64, consumed_in: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&generation.to_le_bytes());
    r.extend_from_slice(&peer.to_le_bytes());
    r.extend_from_slice(&[0; 12]); // incarnations, flags
    r.extend_from_slice(&next_out.to_le_bytes());
    r.extend_from_slice(&acked_out.to_le_bytes());
    r.extend_from_slice(&consumed_in.to_le_bytes());
    r.extend_from_slice(&[0; 12]); // peer epoch, reserved
    let crc = crc32c::crc32c(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

/// Crafted records with valid checksums and extreme cursors (a newer record for a peer that
/// has slots, acknowledging and consuming everything up to `u64::MAX`): reported, no panic,
/// no overflow.
#[test]
fn extreme_cursors_do_not_overflow() {
    let t = template();
    let meta = t.files.iter().position(|(n, _)| n == "meta").unwrap();
    for (next, acked, consumed) in [
        (u64::MAX, u64::MAX, u64::MAX),
        (u64::MAX, 0, 0),
        (1, u64::MAX - 1, u64::MAX - 1),
    ] {
        for peer in [1u32, 9, 77] {
            let dir = tempfile::tempdir().unwrap();
            let mut files = t.files.clone();
            let at = 4096 + 6 * 192;
            files[meta].1[at..at + 64].copy_from_slice(&record(
                1 << 40,
                peer,
                next,
                acked,
                consumed,
            ));
            write(dir.path(), &files);
            let i = inspect_and_compare(dir.path()).unwrap();
            assert!(i.peer(peer).is_some());
        }
    }
}

/// The largest peer table (`MAX_PEERS` entries, all free but one) is read in linear time.
#[test]
fn largest_peer_table() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_peers: hrpc_store::MAX_PEERS,
        ..StoreConfig::new(2)
    };
    let t0 = std::time::Instant::now();
    drop(Store::open(dir.path(), &cfg).unwrap());
    let s = Store::open(dir.path(), &cfg).unwrap();
    s.producer().send(5, b"x").unwrap();
    drop(s);
    let i = inspect_dir(dir.path()).unwrap();
    // Quadratic, this took 50 s in a debug build; linear, well under one.
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t0.elapsed()
    );
    assert!(i.is_healthy());
    assert_eq!(i.max_peers, hrpc_store::MAX_PEERS);
    assert_eq!(i.peers.len(), 1);
}

/// FIFOs and directories under the names of store files: inspection neither hangs nor
/// panics; a segment that is not a regular file is damage, a `meta` that is not one an error.
#[test]
fn special_files_do_not_hang() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &t.files);
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    let fifo = |name: &str| {
        Command::new("mkfifo")
            .arg(dir.path().join(name))
            .status()
            .is_ok_and(|s| s.success())
    };
    if !fifo("LOCK") || !fifo("seg-000500") {
        eprintln!("skipped: mkfifo unavailable");
        return;
    }
    std::fs::create_dir(dir.path().join("seg-000501")).unwrap();
    let path = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(inspect_dir(&path)).unwrap());
    let i = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("inspection hung")
        .unwrap();
    assert!(matches!(i.lock, LockState::Unknown(_)), "{:?}", i.lock);
    let d = places(&i.damage);
    assert!(d.contains(&("seg-000500".into(), 0)), "{:?}", i.damage);
    assert!(d.contains(&("seg-000501".into(), 0)), "{:?}", i.damage);

    std::fs::remove_file(dir.path().join("meta")).unwrap();
    std::fs::create_dir(dir.path().join("meta")).unwrap();
    assert!(matches!(
        inspect_dir(dir.path()),
        Err(StoreError::Io { .. })
    ));
}
