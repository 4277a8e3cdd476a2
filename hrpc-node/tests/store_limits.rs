//! Store limits as a node's caller meets them: a capacity that can never work is refused when
//! the node opens; a message that can never fit is `TooLarge` (not backpressure, so a
//! well-behaved caller does not retry it forever); a full store that acks will drain is
//! `StoreFull` (backpressure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_node::{NodeConfig, NodeError, SendError};

/// `store_capacity(1000)` is refused by `open` with a message naming the minimum.
#[test]
fn capacity_below_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = NodeConfig::new(dir.path().join("n"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .store_capacity(1000)
        .open()
        .unwrap_err();
    match &err {
        NodeError::Config(m) => {
            assert!(
                m.contains("1000") && m.contains(&hrpc_store::MIN_CAPACITY.to_string()),
                "{m}"
            );
        }
        e => panic!("expected a configuration error, got {e:?}"),
    }
    assert!(
        !dir.path().join("n").exists(),
        "a refused open created the store"
    );
}

/// With the smallest legal capacity: a message larger than it is `TooLarge` and not
/// backpressure; filling the store gives `StoreFull`, which is backpressure.
#[test]
fn too_large_is_not_backpressure_but_full_is() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeConfig::new(dir.path().join("n"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .store_capacity(hrpc_store::MIN_CAPACITY)
        .open()
        .unwrap();
    let sender = node.sender();
    let cap = hrpc_store::MIN_CAPACITY as usize;
    match sender.send(2, &vec![0; cap]) {
        Err(e @ SendError::TooLarge { len, max }) => {
            assert_eq!(len, cap);
            assert!(max < cap, "{max}");
            assert!(!e.is_backpressure());
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut sent = 0;
    let err = loop {
        match sender.send(2, &vec![1; 20_000]) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "a 64 KiB store took {sent} messages of 20 kB");
    };
    assert!(sent >= 2, "{sent}");
    assert!(matches!(err, SendError::StoreFull(_)), "{err:?}");
    assert!(err.is_backpressure());
}
