//! Damaged files: a closed, valid store is mutated (bit flips, zeroed pages, garbage pages,
//! truncation) and opened. Opening never panics or faults; it either returns a typed error or a
//! store whose every message is one that was committed, byte for byte. The harness
//! (`hrpc_store::corruption`) is the one `fuzz/fuzz_targets/store_open.rs` drives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use hrpc_store::Store;
use hrpc_store::corruption::{Template, check_open, config};
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
    check_open(dir.path(), t);
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
        check_open(dir.path(), t);
    }
}
