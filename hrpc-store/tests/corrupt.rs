//! Damaged files: a closed, valid store is mutated (bit flips, zeroed pages, garbage pages,
//! truncation, a stale copy) and opened. Opening never panics or faults, and damage is never
//! silent: a plain open fails with a typed error naming the file and offset and changes nothing,
//! or it lost nothing; with `recover_damaged` it opens and reports every lost outbound seq. The
//! harness (`hrpc_store::corruption`) is the one `fuzz/fuzz_targets/store_open.rs` drives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use hrpc_store::corruption::{Template, check_open, config};
use hrpc_store::{LostRange, Store, StoreConfig, StoreError};
use proptest::prelude::*;

/// The template store, built once.
fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| Template::build(tempfile::tempdir().unwrap().path()).unwrap())
}

/// The unmodified template opens with all messages intact (the baseline the mutations break).
#[test]
fn template_round_trips() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    t.write_damaged(dir.path(), &[]).unwrap();
    let s = Store::open(dir.path(), &config()).unwrap();
    let n: usize = s.peers().iter().map(|&p| s.outbound_seqs(p).len()).sum();
    assert_eq!(n, t.outbound.len());
    assert_eq!(s.inbound_seqs(9).len(), t.inbound.len());
    drop(s);
    check_open(dir.path(), t, true);
}

/// Truncating the superblock file to nothing is a typed error, not a panic.
#[test]
fn truncated_meta_is_corrupt() {
    let t = template();
    let meta = t.files.iter().position(|(n, _)| n == "meta").unwrap() as u8;
    let dir = tempfile::tempdir().unwrap();
    t.write_damaged(dir.path(), &[7, meta, 0, 0, 0]).unwrap();
    let err = Store::open(dir.path(), &config()).unwrap_err();
    assert!(
        matches!(err, hrpc_store::StoreError::Corrupt { .. }),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any combination of bit flips, zeroed/garbage pages and truncations: open never panics,
    /// never faults, and returns either a typed error or only intact committed messages.
    #[test]
    fn mutated_store_opens_safely(mutations in proptest::collection::vec(any::<u8>(), 5..30)) {
        let t = template();
        let dir = tempfile::tempdir().unwrap();
        t.write_damaged(dir.path(), &mutations).unwrap();
        check_open(dir.path(), t, mutations.len() < 10);
    }

    /// One damage at a time, the strict invariant: never silent, every lost message reported.
    #[test]
    fn single_damage_is_never_silent(mutation in proptest::collection::vec(any::<u8>(), 5..=5)) {
        let t = template();
        let dir = tempfile::tempdir().unwrap();
        t.write_damaged(dir.path(), &mutation).unwrap();
        check_open(dir.path(), t, true);
    }
}

fn recovering() -> StoreConfig {
    StoreConfig {
        recover_damaged: true,
        ..config()
    }
}

/// The first segment of a store holding 300 pending messages to one peer is cut from 64 KiB to
/// 32 KiB while the store is closed. A plain open refuses with `Damaged`, naming the file and the
/// offset of the cut, and leaves the files alone; a recovering open reports exactly the seqs that
/// were in the lost half, keeps the others, and the next seq does not go back.
#[test]
fn segment_cut_in_half_is_refused_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), &config()).unwrap();
        for i in 0..300u32 {
            s.producer().send(4, &i.to_le_bytes().repeat(25)).unwrap();
        }
    }
    let seg = dir.path().join("seg-000000");
    let full = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(full, 64 << 10);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(full / 2).unwrap();
    drop(f);

    let err = Store::open(dir.path(), &config()).unwrap_err();
    match &err {
        StoreError::Damaged { file, offset, .. } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset, full / 2);
        }
        e => panic!("expected Damaged, got {e:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("seg-000000") && msg.contains("32768"), "{msg}");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        full / 2,
        "refused open changed the file"
    );

    let s = Store::open(dir.path(), &recovering()).unwrap();
    let held: Vec<u64> = s
        .outbound_seqs(4)
        .into_iter()
        .filter(|&q| s.outbound_message(4, q).unwrap().lost_through().is_none())
        .collect();
    let lost = &s.open_report().lost.clone();
    let mut accounted: Vec<u64> = held.clone();
    for r in lost {
        assert_eq!(r.peer, 4);
        accounted.extend(r.first..=r.last);
    }
    accounted.sort_unstable();
    assert_eq!(accounted, (1..=300).collect::<Vec<_>>(), "lost: {lost:?}");
    assert!(!lost.is_empty() && held.len() < 300);
    for q in held {
        let m = s.outbound_message(4, q).unwrap();
        assert_eq!(m.payload(), ((q - 1) as u32).to_le_bytes().repeat(25));
    }
    assert_eq!(
        s.outbound_pending(4).unwrap().1,
        301,
        "seq numbering went back"
    );
    assert_eq!(s.producer().send(4, b"next").unwrap(), 301);
    drop(s);
    // Recovered: a plain open now succeeds and still holds the markers.
    let s = Store::open(dir.path(), &config()).unwrap();
    let markers: Vec<LostRange> = s
        .outbound_seqs(4)
        .into_iter()
        .filter_map(|q| {
            let m = s.outbound_message(4, q)?;
            Some(LostRange {
                peer: 4,
                first: q,
                last: m.lost_through()?,
            })
        })
        .collect();
    assert_eq!(&markers, lost);
}

/// A zeroed page in a segment frees its slots silently unless something notices: the store's
/// outbound stream is contiguous, so the hole is found, refused, and reported on recovery.
#[test]
fn zeroed_page_is_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), &config()).unwrap();
        for i in 0..100u32 {
            s.producer().send(4, &i.to_le_bytes().repeat(25)).unwrap();
        }
    }
    let seg = dir.path().join("seg-000000");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8192..12288].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        Store::open(dir.path(), &config()),
        Err(StoreError::Damaged { .. })
    ));
    let s = Store::open(dir.path(), &recovering()).unwrap();
    assert!(!s.open_report().lost.is_empty());
    assert_eq!(s.outbound_pending(4).unwrap().1, 101);
}

/// A segment replaced by an older copy of itself (a backup restored over a live store) lacks
/// the messages committed since: found and refused.
#[test]
fn stale_segment_copy_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("seg-000000");
    let old;
    {
        let mut s = Store::open(dir.path(), &config()).unwrap();
        for i in 0..50u32 {
            s.producer().send(4, &[i as u8; 100]).unwrap();
        }
        old = std::fs::read(&seg).unwrap();
        s.release_outbound_through(4, 50).unwrap();
        for i in 0..50u32 {
            s.producer().send(4, &[i as u8; 100]).unwrap();
        }
    }
    std::fs::write(&seg, &old).unwrap();
    assert!(matches!(
        Store::open(dir.path(), &config()),
        Err(StoreError::Damaged { .. })
    ));
}

/// A fuzzer input (`fuzz/regressions/store_open/peer-with-no-outbound-slot-left`): eight
/// truncations cut five segments short and take every slot of peer 1's pending seqs 6..=20. The
/// recovering open must report that range and publish its gap marker, so that the plain reopen
/// after the next send finds no damage.
#[test]
fn recovered_store_reopens_with_its_gap_marker() {
    let input = [
        0x97, 0x59, 0x3e, 0x01, 0x06, 0x57, 0xfe, 0xfd, 0xff, 0xff, 0xff, 0x66, 0xff, 0x07, 0x24,
        0xff, 0x66, 0x66, 0x66, 0x66, 0xff, 0xff, 0x36, 0x57, 0xbe, 0xff, 0xb8, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x29, 0x00,
    ];
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    t.write_damaged(dir.path(), &input).unwrap();
    check_open(dir.path(), t, false);
}

/// A peer whose only pending message is lost with a zeroed page has no outbound slot left at
/// all; its record still says seq 2 was committed and not acknowledged. The plain open refuses,
/// the recovering one reports 2..=2 lost and publishes a marker, and a plain reopen after the
/// next send finds the marker, not a hole.
#[test]
fn peer_with_every_pending_slot_lost_is_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path(), &config()).unwrap();
        // 4 KiB slots: seq 2 is in slot 1, whose state word is on the segment's second page.
        for i in 0..2u8 {
            s.producer().send(4, &[i; 4000]).unwrap();
        }
        s.release_outbound_through(4, 1).unwrap();
    }
    let seg = dir.path().join("seg-000000");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let plain = Store::open(dir.path(), &config());
    assert!(
        matches!(plain, Err(StoreError::Damaged { .. })),
        "seq 2 vanished silently: {:?}",
        plain.map(|s| s.outbound_seqs(4))
    );
    let s = Store::open(dir.path(), &recovering()).unwrap();
    let lost = s.open_report().lost.clone();
    assert_eq!(
        lost,
        vec![LostRange {
            peer: 4,
            first: 2,
            last: 2
        }]
    );
    assert_eq!(s.outbound_message(4, 2).unwrap().lost_through(), Some(2));
    assert_eq!(s.producer().send(4, b"next").unwrap(), 3);
    drop(s);
    let s = Store::open(dir.path(), &config()).unwrap();
    assert_eq!(s.outbound_seqs(4), vec![2, 3]);
}

/// Replays every input kept under `fuzz/regressions/store_open/` through the fuzz target's
/// harness, with the fuzz target's choice of strictness.
#[test]
fn replay_store_open_regressions() {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/store_open");
    let t = template();
    let mut replayed = 0;
    for entry in std::fs::read_dir(kept).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        t.write_damaged(dir.path(), &data).unwrap();
        check_open(dir.path(), t, data.len() < 10);
        replayed += 1;
    }
    assert!(replayed >= 1, "expected the kept inputs, found {replayed}");
}
