//! Error messages as a caller prints them: each error's `Display` says its own part only and the
//! cause is its `source()`, so printing the chain (`{:#}` in anyhow, or walking `source()` and
//! joining with ": ") never says the same thing twice. And every type in a public signature is
//! reachable from the crate root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error;
use std::io;

use hrpc_node::{CoreError, NodeError, SendError, StoreError};

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

/// No message of the chain contains a later one, and the chain has `len` parts.
fn assert_chain(e: &dyn Error, len: usize) {
    let c = chain(e);
    assert_eq!(c.len(), len, "{c:?}");
    for (i, outer) in c.iter().enumerate() {
        assert!(!outer.is_empty(), "{c:?}");
        for inner in &c[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats {inner:?} in {c:?}"
            );
        }
    }
}

fn store_io() -> StoreError {
    StoreError::Io {
        op: "open segment",
        path: "/x/seg-000003".into(),
        source: io::Error::from_raw_os_error(17),
    }
}

fn stopped() -> StoreError {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hrpc_node::StoreConfig {
        durability: hrpc_node::Durability::Sync,
        ..hrpc_node::StoreConfig::new(1)
    };
    let mut store = hrpc_node::Store::open(dir.path(), &cfg).unwrap();
    store.__inject_sync_error();
    store.sync().unwrap_err()
}

#[test]
fn chains_never_repeat() {
    assert_chain(&store_io(), 2);
    assert_chain(&stopped(), 2);
    assert_chain(&NodeError::Store(store_io()), 3);
    assert_chain(&NodeError::Store(stopped()), 3);
    assert_chain(&NodeError::Io(io::Error::from_raw_os_error(24)), 2);
    assert_chain(
        &NodeError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io::Error::from_raw_os_error(13),
        },
        2,
    );
    assert_chain(&NodeError::Core(CoreError::Store(store_io())), 4);
    assert_chain(
        &NodeError::Core(CoreError::MissingDelivery { peer: 2, seq: 3 }),
        2,
    );
    assert_chain(&CoreError::Store(stopped()), 3);
    let full = StoreError::Full {
        used: 1,
        requested: 2,
        capacity: 3,
    };
    let e = SendError::from(full);
    assert!(e.is_backpressure());
    assert_chain(&e, 2);
    assert_chain(&SendError::from(stopped()), 3);
    assert_chain(&SendError::from(StoreError::TooManyPeers { max: 4 }), 2);
    let e = SendError::from(StoreError::TooLarge { len: 9, max: 8 });
    assert!(matches!(e, SendError::TooLarge { len: 9, max: 8 }) && !e.is_backpressure());
    assert_chain(&e, 1);
}

/// A store directory that is a regular file: `NodeConfig::open` names the path and the step.
#[test]
fn store_dir_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = hrpc_node::NodeConfig::new(&file, 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .open()
        .unwrap_err();
    let c = chain(&err);
    let all = c.join(": ");
    assert!(all.contains(&file.display().to_string()), "{all}");
    assert!(all.contains("create store directory"), "{all}");
    assert!(all.contains("os error"), "{all}");
    assert_chain(&err, c.len());
}

/// Every type appearing in a public signature of hrpc-node can be named from the crate root.
#[test]
fn public_types_are_reexported() {
    #[allow(unused_imports)]
    use hrpc_node::{
        Core, CoreConfig, CoreError, DROP_REASONS, Delivery, DropReason, Durability, Event,
        FileReport, InboundSlot, MessageRef, NoResolver, Node, NodeConfig, NodeError, NodeStats,
        OutboundOnReset, OutboundProducer, OutboundReservation, PeerInfo, PeerReport, PeerState,
        PollReport, Readiness, ResetReport, Resolver, SendError, Sender, StaticResolver, Stats,
        Store, StoreConfig, StoreError, StoreReport, Transmit, UdpCaps, UdpConfig, UdpIo, UdpStats,
        WakeFlag, Waker,
    };
    #[allow(unused_imports)]
    use hrpc_node::{Damage, LostRange, OpenReport};
    fn _report(node: &Node) -> (&OpenReport, Option<&LostRange>, Option<&Damage>) {
        let r = node.open_report();
        (r, r.lost.first(), r.damage.first())
    }
    fn _signatures(node: &Node) -> (&Store, UdpCaps, NodeStats, Option<PeerInfo>) {
        (
            node.store(),
            node.udp_caps(),
            node.stats(),
            node.peer_info(2),
        )
    }
    let _ = DROP_REASONS;
}
