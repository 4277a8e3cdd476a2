//! Helpers shared by the tests: nodes 1..=9 at fixed loopback labels (no
//! sockets are opened), each with its own store under a test dir; the N-node
//! virtual-time harness ([`cluster::Cluster`]) and [`drive`], its two-node form
//! over cores the caller owns; real nodes on loopback ([`nodes`]); and the
//! deterministic simulation's machinery ([`sim`]).
#![allow(dead_code, clippy::unwrap_used)]

pub(crate) mod child;
pub(crate) mod cluster;
pub(crate) mod nodes;
pub(crate) mod sim;

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

/// What one core delivered, and the events it reported.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Deliveries as (peer, seq, payload).
    pub(crate) got: Vec<(u32, u64, Vec<u8>)>,
    /// Events, in order.
    pub(crate) events: Vec<hrpc_node::proto::Event>,
}

impl Seen {
    /// Seqs delivered from `peer`, in order.
    pub(crate) fn seqs(&self, peer: u32) -> Vec<u64> {
        self.got
            .iter()
            .filter(|g| g.0 == peer)
            .map(|g| g.1)
            .collect()
    }

    /// Ranges reported lost from `peer`.
    pub(crate) fn lost(&self, peer: u32) -> Vec<std::ops::RangeInclusive<u64>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                hrpc_node::proto::Event::Lost { peer: p, range } if *p == peer => {
                    Some(range.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// One side of a [`drive`]: a core, what it saw, and whether it delivers.
pub(crate) struct Side<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) seen: &'a mut Seen,
    pub(crate) deliver: bool,
}

/// Drives two cores the caller owns for `rounds` steps of 5 ms of virtual time,
/// each a [`cluster::round`] as a driver would (receive, group commit, deliver,
/// timers, transmit); what a sends reaches b in the same step, what b sends
/// reaches a in the next. A datagram from
/// node `from` arrives only if `pass(from, bytes)` says so.
pub(crate) fn drive(
    a: Side<'_>,
    b: Side<'_>,
    now: &mut Instant,
    rounds: usize,
    pass: &mut dyn FnMut(u32, &[u8]) -> bool,
) {
    let mut sides = [a, b];
    let ids = [sides[0].core.node_id(), sides[1].core.node_id()];
    let mut buf = vec![0u8; 64 * 1500];
    let mut inflight: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        *now += std::time::Duration::from_millis(5);
        let t = *now;
        for i in 0..2 {
            let s = &mut sides[i];
            let inbox = std::mem::take(&mut inflight[i])
                .into_iter()
                .map(|d| (addr(ids[1 - i]), d));
            let (to, other) = inflight.split_at_mut(1);
            let out = if i == 0 { &mut other[0] } else { &mut to[0] };
            cluster::round(
                s.core,
                s.seen,
                s.deliver,
                t,
                inbox,
                usize::MAX,
                &mut buf,
                &mut |_, d| {
                    if pass(ids[i], d) {
                        out.push(d.to_vec());
                    }
                },
            );
        }
    }
    // What b sent in the last round reaches a now, so calls of a few rounds
    // each lose nothing between them.
    for d in std::mem::take(&mut inflight[0]) {
        sides[0].core.handle_datagram(*now, addr(ids[1]), &d);
    }
}

/// Whether a datagram holds a frame of the kind `want` (decoded; false if it does not parse).
pub(crate) fn has_frame(bytes: &[u8], want: fn(&hrpc_wire::Frame<'_>) -> bool) -> bool {
    hrpc_wire::Datagram::parse(bytes).is_ok_and(|d| d.frames().any(|f| want(&f)))
}

/// Opens node `id`'s core on `dir/<id>` with a store and core configuration of the caller's.
pub(crate) fn open_with(
    dir: &Path,
    id: u32,
    now: Instant,
    store_cfg: StoreConfig,
    cfg: CoreConfig,
) -> Result<Core, hrpc_store::StoreError> {
    let resolver = StaticResolver((1..=9).map(|i| (i, addr(i))).collect());
    let store = Store::open(&dir.join(id.to_string()), &store_cfg)?;
    Ok(Core::new(store, cfg, Box::new(resolver), now).unwrap())
}

/// A side of [`drive`] that delivers.
pub(crate) fn side<'a>(core: &'a mut Core, seen: &'a mut Seen) -> Side<'a> {
    Side {
        core,
        seen,
        deliver: true,
    }
}

/// Cuts the file at `path` to half its length (damage done while its store is closed).
pub(crate) fn cut_in_half(path: &Path) -> u64 {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    len
}

/// The seqs delivered plus those reported lost, sorted: what a stream accounted for.
pub(crate) fn accounted(delivered: &[u64], lost: &[std::ops::RangeInclusive<u64>]) -> Vec<u64> {
    let mut all = delivered.to_vec();
    for r in lost {
        all.extend(r.clone());
    }
    all.sort_unstable();
    all
}
