//! Fuzz target: open a damaged store.
//!
//! Invariant (`hrpc_store::corruption::check_open`): a valid store whose files
//! were damaged by the input's mutations (bit flips, zeroed or garbage pages,
//! truncations; five bytes each) opens without panicking, reading out of
//! bounds or faulting, and returns either a typed error (changing nothing) or a
//! store whose every message is one that was committed, byte for byte; with a
//! single damage, no loss is silent. `hrpc-store/tests/corrupt.rs`
//! runs the same harness as a proptest, so CI covers it without the fuzzer.
#![no_main]

use std::sync::OnceLock;

use hrpc_store::corruption::{Template, check_open};
use libfuzzer_sys::fuzz_target;

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        Template::build(dir.path()).expect("template store")
    })
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let dir = tempfile::tempdir().expect("tempdir");
    t.write_damaged(dir.path(), data)
        .expect("write damaged copy");
    check_open(dir.path(), t, data.len() < 10);
});
