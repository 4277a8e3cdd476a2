//! Space, as a user meets it: a capacity that can never work is refused at open, and a message
//! that can never fit is `TooLarge` (not the retryable `Full`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_store::{MIN_CAPACITY, Store, StoreConfig, StoreError};

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
        store.begin_inbound(3, 1, max as u32 + 1, 0),
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
