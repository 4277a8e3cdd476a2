//! Helpers shared by the protocol-core tests: nodes 1..=9 at fixed loopback
//! labels (no sockets are opened), each with its own store under a test dir.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use hrpc_node::proto::{Core, CoreConfig, StaticResolver};
use hrpc_store::{Store, StoreConfig};

/// The address node `id` is known by.
pub(crate) fn addr(id: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], id as u16))
}

/// Opens (or reopens) node `id`'s core on `dir/<id>`, resolving nodes 1..=9.
pub(crate) fn open(dir: &Path, id: u32, now: Instant) -> Core {
    let resolver = StaticResolver((1..=9).map(|i| (i, addr(i))).collect());
    let store = Store::open(&dir.join(id.to_string()), &StoreConfig::new(id)).unwrap();
    Core::new(store, CoreConfig::default(), Box::new(resolver), now).unwrap()
}
