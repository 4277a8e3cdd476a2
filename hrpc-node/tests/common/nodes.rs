//! Real nodes on loopback UDP sockets, driven by the test's own thread: [`Mesh`] opens N
//! nodes that find each other through a shared address table and polls them all until a
//! condition holds (recording deliveries and events per node); [`pump`] does the same for
//! nodes the test holds itself; [`pump_until`] drives a pair with handlers of the test's own;
//! self-describing messages of every size.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig, Sender};
use hrpc_node::proto::{Delivery, Event};

/// How long a pump may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A loopback address with an ephemeral port.
pub(crate) fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A self-describing message: `[stream u8][idx u32][crc32c of the rest u32][pattern...]`.
pub(crate) fn make_msg(stream: u8, idx: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(idx) as u8 ^ stream)
        .collect();
    if len >= 9 {
        m[0] = stream;
        m[1..5].copy_from_slice(&idx.to_le_bytes());
        let crc = crc32c(&m[9..]);
        m[5..9].copy_from_slice(&crc.to_le_bytes());
    }
    m
}

/// CRC-32C of `b`.
pub(crate) fn crc32c(b: &[u8]) -> u32 {
    // Bitwise CRC-32C: small and independent of the code under test.
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The sizes every test run covers: empty to far beyond one datagram.
pub(crate) fn sizes() -> Vec<usize> {
    vec![
        0,
        1,
        8,
        9,
        100,
        1000,
        1400,
        1471,
        1472,
        1500,
        4096,
        20_000,
        65_507,
        100_000,
        1 << 20,
        8 << 20,
    ]
}

/// Records deliveries per peer and checks order and contiguity as they come.
#[derive(Default)]
pub(crate) struct Log {
    pub(crate) got: Vec<(u32, u64, Vec<u8>)>,
    pub(crate) errors: Vec<String>,
    pub(crate) last_seq: std::collections::HashMap<u32, u64>,
}

impl Log {
    pub(crate) fn record(&mut self, d: &Delivery<'_>) {
        let last = self.last_seq.entry(d.peer).or_insert(0);
        if d.seq != *last + 1 {
            self.errors
                .push(format!("peer {} seq {} after {}", d.peer, d.seq, last));
        }
        *last = d.seq;
        self.got.push((d.peer, d.seq, d.payload.to_vec()));
    }
}

/// Polls A and B (each with its handler) until `done`, waiting 1 ms when neither had work;
/// fails past [`DEADLINE`].
pub(crate) fn pump_until(
    a: &mut Node,
    ha: &mut dyn FnMut(&Sender, Delivery<'_>),
    b: &mut Node,
    hb: &mut dyn FnMut(&Sender, Delivery<'_>),
    mut done: impl FnMut(&Node, &Node) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    let mut iterations = 0u64;
    while !done(a, b) {
        assert!(
            Instant::now() < deadline,
            "deadline passed\nA: {:#?}\n{:#?}\nB: {:#?}\n{:#?}",
            a.stats(),
            a.peer_info(2),
            b.stats(),
            b.peer_info(1)
        );
        iterations += 1;
        assert!(iterations < 50_000_000, "iteration bound passed");
        let ra = a.poll(&mut |s, d| ha(s, d)).unwrap();
        let rb = b.poll(&mut |s, d| hb(s, d)).unwrap();
        if !ra.more && !rb.more && ra.received == 0 && rb.received == 0 {
            a.wait(Some(Duration::from_millis(1))).unwrap();
        }
    }
}

/// Pumps both nodes until `a` has delivered `total` messages (counting
/// earlier ones); returns the payloads delivered meanwhile.
pub(crate) fn collect_at_a(a: &mut Node, b: &mut Node, total: u64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    pump_until(
        a,
        &mut |_, d| got.push(d.payload.to_vec()),
        b,
        &mut |_, _| {},
        |a, _| a.stats().delivered >= total,
    );
    got
}

/// Node A (id 1) bound on loopback and node B (id 2) on an ephemeral port, knowing A.
pub(crate) fn pair(dir: &std::path::Path) -> (Node, Node) {
    let a = NodeConfig::new(dir.join("a"), 1)
        .bind(local())
        .open()
        .unwrap();
    let a_addr = a.local_addr();
    let b = NodeConfig::new(dir.join("b"), 2)
        .peer(1, a_addr)
        .open()
        .unwrap();
    (a, b)
}

/// What a node delivered: (peer, seq, payload).
pub(crate) type Got = Vec<(u32, u64, Vec<u8>)>;

/// Polls `nodes` in turn, appending what `nodes[i]` delivers to `got[i]`, until
/// `done(nodes, got)` holds (checked before each round); after each round waits up to `idle`
/// on `nodes[0]` (zero: never). Returns whether `done` held within `limit` of wall time.
pub(crate) fn pump(
    nodes: &mut [&mut Node],
    got: &mut [Got],
    idle: Duration,
    limit: Duration,
    mut done: impl FnMut(&[&mut Node], &[Got]) -> bool,
) -> bool {
    assert_eq!(nodes.len(), got.len());
    let deadline = Instant::now() + limit;
    loop {
        if done(nodes, got) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for (n, g) in nodes.iter_mut().zip(got.iter_mut()) {
            n.poll(&mut |_, d| g.push((d.peer, d.seq, d.payload.to_vec())))
                .unwrap();
        }
        if !idle.is_zero() {
            nodes[0].wait(Some(idle)).unwrap();
        }
    }
}

/// Real nodes on loopback, by id, that resolve each other through one address table.
pub(crate) struct Mesh {
    pub(crate) nodes: BTreeMap<u32, Node>,
    /// Deliveries per node, in order.
    pub(crate) got: BTreeMap<u32, Got>,
    /// Events per node, in order.
    pub(crate) events: BTreeMap<u32, Vec<Event>>,
    /// Where each node is bound, for the resolvers.
    pub(crate) table: Arc<Mutex<HashMap<u32, SocketAddr>>>,
}

impl Mesh {
    /// No nodes yet.
    pub(crate) fn new() -> Mesh {
        Mesh {
            nodes: BTreeMap::new(),
            got: BTreeMap::new(),
            events: BTreeMap::new(),
            table: Arc::default(),
        }
    }

    /// Nodes `ids`, each on `dir/<id>` bound to an ephemeral loopback port, resolving the
    /// others through the table; `configure` adds anything else to each configuration.
    pub(crate) fn open(
        dir: &Path,
        ids: impl IntoIterator<Item = u32>,
        configure: impl Fn(NodeConfig) -> NodeConfig,
    ) -> Mesh {
        let mut mesh = Mesh::new();
        for id in ids {
            let table = mesh.table.clone();
            let cfg = NodeConfig::new(dir.join(id.to_string()), id)
                .bind(local())
                .resolver(move |peer| table.lock().unwrap().get(&peer).copied());
            mesh.insert(configure(cfg).open().unwrap());
        }
        mesh
    }

    /// Adds a node the caller opened; the others can find it through the table.
    pub(crate) fn insert(&mut self, node: Node) -> &mut Node {
        let id = node.node_id();
        self.table.lock().unwrap().insert(id, node.local_addr());
        self.nodes.insert(id, node);
        self.nodes.get_mut(&id).unwrap()
    }

    /// Takes node `id` out (to drop, close or reopen it).
    pub(crate) fn remove(&mut self, id: u32) -> Node {
        self.nodes.remove(&id).expect("no such node")
    }

    /// Node `id`.
    pub(crate) fn node(&mut self, id: u32) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// What node `id` delivered so far.
    pub(crate) fn got(&self, id: u32) -> &[(u32, u64, Vec<u8>)] {
        self.got.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Polls every node once, in id order, recording deliveries and events. Returns whether
    /// any node had work (received, delivered or has more to do).
    pub(crate) fn poll_all(&mut self) -> bool {
        let mut busy = false;
        for (&id, node) in &mut self.nodes {
            let got = self.got.entry(id).or_default();
            let r = node
                .poll(&mut |_, d| got.push((d.peer, d.seq, d.payload.to_vec())))
                .unwrap();
            busy |= r.more || r.received > 0 || r.delivered > 0;
            let events = self.events.entry(id).or_default();
            while let Some(e) = node.next_event() {
                events.push(e);
            }
        }
        busy
    }

    /// Polls every node until `done` holds (checked before each round; it may also send),
    /// waiting up to `idle` on the lowest node when no node had work. Returns whether `done`
    /// held within `limit` of wall time.
    pub(crate) fn run_until(
        &mut self,
        mut done: impl FnMut(&mut Mesh) -> bool,
        idle: Duration,
        limit: Duration,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if !self.poll_all()
                && !idle.is_zero()
                && let Some(n) = self.nodes.values_mut().next()
            {
                n.wait(Some(idle)).unwrap();
            }
        }
    }
}
