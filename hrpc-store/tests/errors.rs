//! Errors a user meets first: an I/O failure names the file and the operation, and no error's
//! message repeats its cause (the cause is reached through `source()`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error;

use hrpc_store::{Durability, Store, StoreConfig, StoreError};

/// The messages of `e` and its sources, outermost first.
fn chain(e: &dyn Error) -> Vec<String> {
    let mut v = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        v.push(s.to_string());
        cur = s.source();
    }
    v
}

/// No message of the chain contains a later one (std/anyhow convention: `{:#}` prints
/// each part once).
fn assert_no_repeats(e: &dyn Error) {
    let c = chain(e);
    for (i, outer) in c.iter().enumerate() {
        for inner in &c[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats {inner:?} in {c:?}"
            );
        }
    }
}

/// A store path that is a regular file: the error names the path and what was tried, the OS
/// error is its source, and the chain reads like `create store directory /x: File exists`.
#[test]
fn store_path_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, &StoreConfig::new(1)).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(shown.contains(&file.display().to_string()), "{shown}");
    assert!(shown.contains("create store directory"), "{shown}");
    let c = chain(&err);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(!c[0].contains("os error"), "{c:?}");
    assert!(c[1].contains("os error"), "{c:?}");
    assert_no_repeats(&err);
}

/// A segment file that is not a file (here a directory): open names the segment and the step.
#[test]
fn unopenable_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &StoreConfig::new(1)).unwrap());
    let seg = dir.path().join("seg-000003");
    std::fs::create_dir(&seg).unwrap();
    let err = Store::open(dir.path(), &StoreConfig::new(1)).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains(&seg.display().to_string()), "{shown}");
    assert!(shown.contains("segment"), "{shown}");
    assert_no_repeats(&err);
}

/// The store lock file cannot be opened: named, with the operation.
#[test]
fn unopenable_lock_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    std::fs::create_dir(&lock).unwrap();
    let err = Store::open(dir.path(), &StoreConfig::new(1)).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&lock.display().to_string()) && shown.contains("lock"),
        "{shown}"
    );
    assert_no_repeats(&err);
}

/// Representative errors of every kind: no message repeats its cause.
#[test]
fn error_chains_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        dir.path(),
        &StoreConfig {
            durability: Durability::Sync,
            ..StoreConfig::new(1)
        },
    )
    .unwrap();
    store.__inject_sync_error();
    let stopped = store.sync().unwrap_err();
    assert!(matches!(stopped, StoreError::Stopped(_)));
    assert_eq!(chain(&stopped).len(), 2, "{:?}", chain(&stopped));
    assert_no_repeats(&stopped);
    let io = StoreError::Io {
        op: "open segment",
        path: "/x/seg-000003".into(),
        source: std::io::Error::from_raw_os_error(17),
    };
    assert_eq!(io.to_string(), "open segment /x/seg-000003");
    assert_no_repeats(&io);
    for e in [
        StoreError::NoSpace,
        StoreError::CapacityTooSmall {
            capacity: 1,
            min: 2,
        },
        StoreError::TooLarge { len: 3, max: 2 },
        StoreError::Full {
            used: 1,
            requested: 2,
            capacity: 3,
        },
    ] {
        assert_eq!(chain(&e).len(), 1);
    }
}
