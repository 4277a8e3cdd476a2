//! Where a node listens when nobody said.
#![allow(clippy::unwrap_used)]

use hrpc_node::driver::{DEFAULT_BIND, NodeConfig};

/// Invariant: a node opened without [`NodeConfig::bind`] listens on loopback only (an
/// ephemeral port), so it is not reachable from other hosts unless the caller chose an
/// address they can reach; binding all interfaces is still possible when asked for.
#[test]
fn default_bind_is_loopback_and_all_interfaces_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    assert!(DEFAULT_BIND.ip().is_loopback() && DEFAULT_BIND.port() == 0);
    let node = NodeConfig::new(dir.path().join("a"), 1).open().unwrap();
    let addr = node.local_addr();
    assert!(addr.ip().is_loopback(), "default bind is {addr}");
    assert_ne!(addr.port(), 0);
    let all = NodeConfig::new(dir.path().join("b"), 2)
        .bind("0.0.0.0:0".parse().unwrap())
        .open()
        .unwrap();
    assert!(all.local_addr().ip().is_unspecified());
}
