//! A virtual-time harness for N protocol cores, in the spirit of quinn's `Pair`.
//!
//! A [`Cluster`] owns nodes by id, each with its own store under one temporary directory,
//! known to the others at [`addr`]. Nodes can be opened, crashed (core and store dropped
//! between two calls, as a killed process leaves them) and restarted on their store.
//! [`Cluster::step`] runs one round of [`Cluster::tick`] (5 ms by default) of virtual time:
//! every open node, in id order, does what a driver's loop does ([`round`]: receive, group
//! commit, deliver, timers, transmit), and what it records (deliveries and events) lands in
//! its [`Seen`].
//!
//! The network is data: a datagram sent in one round arrives in the receiver's next turn (a
//! link's latency can be set in whole rounds; with 0, a datagram to a node later in id order
//! arrives in the same round, as two cores driven in turn see it). A link (sender, receiver)
//! may be rate limited (so many datagrams a round; the rest wait in a drop-tail queue), and
//! every datagram leaving a link passes a filter that can pass, drop, duplicate or hold it
//! ([`Verdict`]); held datagrams go on when released.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hrpc_node::proto::{Core, CoreConfig, Event, StaticResolver};
use hrpc_store::{Store, StoreConfig};

use super::{Seen, addr};

/// A datagram on the simulated network.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) bytes: Vec<u8>,
    /// The round it was sent in.
    pub(crate) sent: u64,
    /// The round from which it may arrive.
    due: u64,
}

/// What the network does with one datagram leaving a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    /// Two copies arrive.
    Duplicate,
    /// Kept aside until [`Cluster::release_held`].
    Hold,
}

/// The per-datagram fault hook.
pub(crate) type Filter = Box<dyn FnMut(&Packet) -> Verdict>;

/// A rate-limited link: `rate` datagrams a round out of a drop-tail queue of `cap`.
#[derive(Debug, Clone, Copy)]
struct Limit {
    rate: usize,
    cap: usize,
}

/// The network between the nodes of a [`Cluster`].
#[derive(Default)]
pub(crate) struct Net {
    /// Per link (from, to): datagrams sent and not yet arrived, oldest first.
    links: BTreeMap<(u32, u32), VecDeque<Packet>>,
    limits: BTreeMap<(u32, u32), Limit>,
    /// Per link: rounds from sending to arrival, if not 1.
    latency: BTreeMap<(u32, u32), u64>,
    filter: Option<Filter>,
    /// Datagrams the filter held back.
    pub(crate) held: Vec<Packet>,
    /// Datagrams sent by any node.
    pub(crate) sent: u64,
    /// Datagrams dropped: by the filter, by a full link queue, or to a down or unknown node.
    pub(crate) dropped: u64,
}

/// One node of a [`Cluster`].
pub(crate) struct Member {
    /// The open core, or `None` while the node is down.
    pub(crate) core: Option<Core>,
    /// What the node delivered and reported.
    pub(crate) seen: Seen,
    /// Whether each round delivers (off: messages stay in the store).
    pub(crate) deliver: bool,
    /// Most datagrams (or GSO batches) taken from `poll_transmit` per round, as a driver whose
    /// socket would block.
    pub(crate) transmit_budget: usize,
    pub(crate) store_cfg: StoreConfig,
    pub(crate) cfg: CoreConfig,
    /// Datagrams that arrived and wait for the node's next round.
    inbox: Vec<Packet>,
}

/// N cores in virtual time over a simulated network.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) now: Instant,
    /// Virtual time per [`Cluster::step`].
    pub(crate) tick: Duration,
    pub(crate) nodes: BTreeMap<u32, Member>,
    pub(crate) net: Net,
    /// Rounds run so far.
    pub(crate) rounds: u64,
    buf: Vec<u8>,
}

/// Opens a core on `store_dir` resolving nodes 1..=9 at [`addr`].
fn open_core(store_dir: &Path, store_cfg: &StoreConfig, cfg: &CoreConfig, now: Instant) -> Core {
    let resolver = StaticResolver((1..=9).map(|i| (i, addr(i))).collect());
    let store = Store::open(store_dir, store_cfg).unwrap();
    Core::new(store, cfg.clone(), Box::new(resolver), now).unwrap()
}

/// The id a node known at `a` has, if it is one of [`addr`]'s.
fn id_of(a: SocketAddr) -> Option<u32> {
    (1..=255).find(|&i| addr(i) == a)
}

/// One round of a driver's loop for `core` at `t`: handle what arrived, group commit,
/// deliver (if `deliver`), fire due timers, transmit (at most `budget` calls of
/// `poll_transmit`, each datagram passed to `emit` as (destination, bytes)), record events.
#[allow(clippy::too_many_arguments)]
pub(crate) fn round(
    core: &mut Core,
    seen: &mut Seen,
    deliver: bool,
    t: Instant,
    inbox: impl IntoIterator<Item = (SocketAddr, Vec<u8>)>,
    budget: usize,
    buf: &mut [u8],
    emit: &mut dyn FnMut(SocketAddr, &[u8]),
) {
    for (from, d) in inbox {
        core.handle_datagram(t, from, &d);
    }
    core.sync().unwrap();
    if deliver {
        let got = &mut seen.got;
        core.deliver(usize::MAX, &mut |d| {
            got.push((d.peer, d.seq, d.payload.to_vec()))
        })
        .unwrap();
    }
    if core.poll_timeout().is_some_and(|x| x <= t) {
        core.handle_timeout(t);
    }
    for _ in 0..budget {
        let Some(x) = core.poll_transmit(t, buf) else {
            break;
        };
        let seg = x.segment_size.unwrap_or(x.len).max(1);
        for d in buf[..x.len].chunks(seg) {
            emit(x.dst, d);
        }
    }
    while let Some(e) = core.poll_event() {
        seen.events.push(e);
    }
}

impl Cluster {
    /// Nodes `ids`, open, with default store and core configurations.
    pub(crate) fn new(ids: impl IntoIterator<Item = u32>) -> Cluster {
        let mut c = Cluster::empty();
        for id in ids {
            c.add(id, StoreConfig::new(id), CoreConfig::default());
        }
        c
    }

    /// No nodes yet.
    pub(crate) fn empty() -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            now: Instant::now(),
            tick: Duration::from_millis(5),
            nodes: BTreeMap::new(),
            net: Net::default(),
            rounds: 0,
            buf: vec![0u8; 64 * 65_536],
        }
    }

    /// Adds node `id` with these configurations and opens it.
    pub(crate) fn add(&mut self, id: u32, store_cfg: StoreConfig, cfg: CoreConfig) -> &mut Core {
        self.nodes.insert(
            id,
            Member {
                core: None,
                seen: Seen::default(),
                deliver: true,
                transmit_budget: usize::MAX,
                store_cfg,
                cfg,
                inbox: Vec::new(),
            },
        );
        self.open(id)
    }

    /// Adds node `id` with a core the caller opened (a store of its own making).
    pub(crate) fn insert(&mut self, id: u32, core: Core) -> &mut Core {
        let cfg = core.config().clone();
        self.nodes.insert(
            id,
            Member {
                core: Some(core),
                seen: Seen::default(),
                deliver: true,
                transmit_budget: usize::MAX,
                store_cfg: StoreConfig::new(id),
                cfg,
                inbox: Vec::new(),
            },
        );
        self.core(id)
    }

    /// Where node `id`'s store lives.
    pub(crate) fn store_dir(&self, id: u32) -> PathBuf {
        self.dir.path().join(id.to_string())
    }

    /// Opens node `id`'s core on its store (a new store if there is none).
    pub(crate) fn open(&mut self, id: u32) -> &mut Core {
        let dir = self.store_dir(id);
        let now = self.now;
        let m = self.nodes.get_mut(&id).expect("no such node");
        assert!(m.core.is_none(), "node {id} is already open");
        m.core = Some(open_core(&dir, &m.store_cfg, &m.cfg, now));
        m.core.as_mut().unwrap()
    }

    /// Node `id` stops, as a killed process: its core and store are dropped; what arrives
    /// for it meanwhile is lost.
    pub(crate) fn crash(&mut self, id: u32) {
        let m = self.nodes.get_mut(&id).expect("no such node");
        m.core = None;
        m.inbox.clear();
    }

    /// Node `id` crashes and opens again on the same store.
    pub(crate) fn restart(&mut self, id: u32) -> &mut Core {
        self.crash(id);
        self.open(id)
    }

    /// Node `id` crashes and loses its store; it comes back on a new one.
    pub(crate) fn wipe(&mut self, id: u32) -> &mut Core {
        self.crash(id);
        std::fs::remove_dir_all(self.store_dir(id)).unwrap();
        self.open(id)
    }

    /// Node `id`'s core (it must be open).
    pub(crate) fn core(&mut self, id: u32) -> &mut Core {
        self.nodes
            .get_mut(&id)
            .and_then(|m| m.core.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not open"))
    }

    /// Node `id`'s member record.
    pub(crate) fn node(&mut self, id: u32) -> &mut Member {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// What node `id` delivered and reported.
    pub(crate) fn seen(&self, id: u32) -> &Seen {
        &self.nodes[&id].seen
    }

    /// Takes the events node `id` reported since the last call.
    pub(crate) fn take_events(&mut self, id: u32) -> Vec<Event> {
        std::mem::take(&mut self.node(id).seen.events)
    }

    /// Takes the deliveries node `id` recorded since the last call.
    pub(crate) fn take_got(&mut self, id: u32) -> Vec<(u32, u64, Vec<u8>)> {
        std::mem::take(&mut self.node(id).seen.got)
    }

    /// Takes what node `id` delivered and reported so far.
    pub(crate) fn take_seen(&mut self, id: u32) -> Seen {
        std::mem::take(&mut self.node(id).seen)
    }

    /// Every datagram leaving a link passes `f` (replacing any earlier filter).
    pub(crate) fn filter(&mut self, f: impl FnMut(&Packet) -> Verdict + 'static) {
        self.net.filter = Some(Box::new(f));
    }

    /// Removes the filter: everything passes.
    pub(crate) fn clear_filter(&mut self) {
        self.net.filter = None;
    }

    /// The link from `from` to `to` carries `rate` datagrams a round from a drop-tail queue
    /// that holds at most `cap`; what finds it full is dropped.
    pub(crate) fn limit(&mut self, from: u32, to: u32, rate: usize, cap: usize) {
        self.net.limits.insert((from, to), Limit { rate, cap });
    }

    /// Datagrams from `from` to `to` arrive `rounds` rounds after they are sent (default 1);
    /// with 0 they arrive in the same round if `to` runs after `from` (a higher id), else in
    /// the next.
    pub(crate) fn latency(&mut self, from: u32, to: u32, rounds: u64) {
        self.net.latency.insert((from, to), rounds);
    }

    /// Held datagrams arrive at the start of the next round, in the order they were held.
    pub(crate) fn release_held(&mut self) {
        for p in std::mem::take(&mut self.net.held) {
            self.arrive(p);
        }
    }

    fn arrive(&mut self, p: Packet) {
        match self.nodes.get_mut(&p.to) {
            Some(m) if m.core.is_some() => m.inbox.push(p),
            _ => self.net.dropped += 1,
        }
    }

    /// Moves what each link into node `to` lets through by this round into its inbox, through
    /// the filter.
    fn carry_to(&mut self, to: u32) {
        let links: Vec<(u32, u32)> = self
            .net
            .links
            .keys()
            .copied()
            .filter(|k| k.1 == to)
            .collect();
        for link in links {
            let rate = self.net.limits.get(&link).map_or(usize::MAX, |l| l.rate);
            let q = self.net.links.get_mut(&link).unwrap();
            let ready = q.iter().take_while(|p| p.due <= self.rounds).count();
            let out: Vec<Packet> = q.drain(..ready.min(rate)).collect();
            for p in out {
                let v = match self.net.filter.as_mut() {
                    Some(f) => f(&p),
                    None => Verdict::Pass,
                };
                match v {
                    Verdict::Pass => self.arrive(p),
                    Verdict::Drop => self.net.dropped += 1,
                    Verdict::Duplicate => {
                        self.arrive(p.clone());
                        self.arrive(p);
                    }
                    Verdict::Hold => self.net.held.push(p),
                }
            }
        }
    }

    /// One round: time advances by `tick`, and every node in id order takes what arrived for
    /// it (datagrams sent in an earlier turn, after their link's latency) and, if it is up,
    /// runs [`round`].
    pub(crate) fn step(&mut self) {
        self.now += self.tick;
        self.rounds += 1;
        let t = self.now;
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for id in ids {
            self.carry_to(id);
            let m = self.nodes.get_mut(&id).unwrap();
            let Some(core) = m.core.as_mut() else {
                continue;
            };
            let inbox = std::mem::take(&mut m.inbox)
                .into_iter()
                .map(|p| (addr(p.from), p.bytes));
            let mut out = Vec::new();
            round(
                core,
                &mut m.seen,
                m.deliver,
                t,
                inbox,
                m.transmit_budget,
                &mut self.buf,
                &mut |dst, d| out.push((dst, d.to_vec())),
            );
            for (dst, bytes) in out {
                self.net.sent += 1;
                let Some(to) = id_of(dst).filter(|to| self.nodes.contains_key(to)) else {
                    self.net.dropped += 1;
                    continue;
                };
                let cap = self.net.limits.get(&(id, to)).map(|l| l.cap);
                let due = self.rounds + self.net.latency.get(&(id, to)).copied().unwrap_or(1);
                let q = self.net.links.entry((id, to)).or_default();
                if cap.is_some_and(|c| q.len() >= c) {
                    self.net.dropped += 1;
                } else {
                    q.push_back(Packet {
                        from: id,
                        to,
                        bytes,
                        sent: self.rounds,
                        due,
                    });
                }
            }
        }
    }

    /// Whether any datagram is on its way (sent and not yet handled; held ones excluded).
    pub(crate) fn in_flight(&self) -> bool {
        self.net.links.values().any(|q| !q.is_empty())
            || self.nodes.values().any(|m| !m.inbox.is_empty())
    }

    /// The earliest timer of any open node.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter_map(|m| m.core.as_ref()?.poll_timeout())
            .min()
    }

    /// Runs `rounds` rounds.
    pub(crate) fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.step();
        }
    }

    /// Runs until `pred` holds (checked before each round), for at most `max_rounds` rounds.
    /// Returns the rounds it took, or `None` if `pred` never held.
    pub(crate) fn run_until(
        &mut self,
        mut pred: impl FnMut(&mut Cluster) -> bool,
        max_rounds: usize,
    ) -> Option<usize> {
        for r in 0..=max_rounds {
            if pred(self) {
                return Some(r);
            }
            if r < max_rounds {
                self.step();
            }
        }
        None
    }

    /// Runs for `dur` of virtual time (whole rounds).
    pub(crate) fn run_for(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.step();
        }
    }
}
