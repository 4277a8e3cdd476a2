//! The deterministic simulation's machinery: nodes with real stores and cores in virtual
//! time over the simulated network of [`net`], crashes (with power loss in sync mode) and
//! store loss, and the check of what was delivered. Everything is driven by one seeded RNG
//! over ordered maps, so a seed replays bit for bit; [`run_seeds`] runs the seeds and prints
//! the one that fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod net;

use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hrpc_node::proto::{Core, CoreConfig, Delivery, StaticResolver};
use hrpc_store::{Durability, Store, StoreConfig, StoreError, power_loss};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use net::{Faults, InFlight, Scenario, message_len, payload};

struct SimNode {
    id: u32,
    addr: SocketAddr,
    dir: PathBuf,
    core: Option<Core>,
    /// Next message index to commit, per destination.
    next_index: BTreeMap<u32, u64>,
    /// Messages still to commit, per destination.
    quota: BTreeMap<u32, u64>,
    /// What was delivered: per source, the list of (seq, index).
    delivered: BTreeMap<u32, Vec<(u64, u64)>>,
    restarts: u32,
    /// Sync mode: what each store file holds on "disk" (updated by the
    /// store's flush hook); a power loss keeps only this plus random parts
    /// of what was written since.
    durable: power_loss::Images,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    faults: Faults,
    durability: Durability,
    start: Instant,
    now: Duration,
    nodes: Vec<SimNode>,
    net: BinaryHeap<InFlight>,
    order: u64,
    cfg: CoreConfig,
    resolver: BTreeMap<u32, SocketAddr>,
    scenario: Scenario,
    /// Store-loss scenario: when node 2 loses its store.
    wipe_at: Option<Duration>,
    /// Per (sender, receiver): the first message index committed after a
    /// store loss on either side; earlier ones may be lost with the store.
    boundary: BTreeMap<(u32, u32), u64>,
    _tmp: tempfile::TempDir,
}

impl Sim {
    fn new(seed: u64, n: usize, per_pair: u64, durability: Durability, scenario: Scenario) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut faults = Faults::random(&mut rng);
        if scenario.large {
            let start = Duration::from_millis(rng.random_range(0..2000));
            let len = Duration::from_millis(rng.random_range(5..300));
            faults.reverse_cut = Some((start, start + len));
        }
        let wipe_at = scenario
            .store_loss
            .then(|| Duration::from_millis(rng.random_range(50..3000)));
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = CoreConfig::default();
        cfg.max_segments = if rng.random_bool(0.5) { 4 } else { 1 };
        cfg.recv_window_msgs = rng.random_range(8..256);
        cfg.initial_window_msgs = rng.random_range(4..64);
        let mut resolver = BTreeMap::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u32 + 1;
            let addr: SocketAddr = format!("127.0.0.{}:{}", id, 5000 + id).parse().unwrap();
            resolver.insert(id, addr);
            let dir = tmp.path().join(format!("node{id}"));
            let quota = (1..=n as u32)
                .filter(|&d| d != id)
                .map(|d| (d, per_pair))
                .collect();
            nodes.push(SimNode {
                id,
                addr,
                dir,
                core: None,
                next_index: BTreeMap::new(),
                quota,
                delivered: BTreeMap::new(),
                restarts: 0,
                durable: Arc::default(),
            });
        }
        let mut sim = Sim {
            seed,
            rng,
            faults,
            durability,
            start: Instant::now(),
            now: Duration::ZERO,
            nodes,
            net: BinaryHeap::new(),
            order: 0,
            cfg,
            resolver,
            scenario,
            wipe_at,
            boundary: BTreeMap::new(),
            _tmp: tmp,
        };
        for i in 0..n {
            sim.open(i);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.start + self.now
    }

    fn open(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut scfg = StoreConfig::new(node.id);
        scfg.durability = self.durability;
        scfg.capacity_bytes = if self.scenario.large {
            96 << 20
        } else {
            8 << 20
        };
        let fresh = !node.dir.exists();
        let mut store = Store::open(&node.dir, &scfg).unwrap_or_else(|e| {
            panic!("seed {}: reopen of node {} failed: {e}", self.seed, node.id)
        });
        if self.durability == Durability::Sync {
            if fresh {
                *node.durable.lock().unwrap() = power_loss::snapshot(&node.dir).unwrap();
            }
            power_loss::track(&mut store, node.durable.clone());
        }
        let resolver = StaticResolver(self.resolver.iter().map(|(k, v)| (*k, *v)).collect());
        let core = Core::new(store, self.cfg.clone(), Box::new(resolver), self.instant()).unwrap();
        self.nodes[i].core = Some(core);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].core = None;
        self.nodes[i].restarts += 1;
        if self.durability == Durability::Sync {
            // Power loss: the store keeps what its last syncs made durable.
            let node = &self.nodes[i];
            let durable = node.durable.lock().unwrap().clone();
            let rng = &mut self.rng;
            let after =
                power_loss::crash_image(&node.dir, &durable, &node.dir, &mut || rng.random())
                    .unwrap();
            *node.durable.lock().unwrap() = after;
            self.open(i);
            // Commits after the last sync may be gone; the store says what survived.
            // Deliveries consumed after the last sync come again (the contract).
            let node = &mut self.nodes[i];
            let store = node.core.as_ref().unwrap().store();
            for (dst, next) in node.next_index.iter_mut() {
                let kept = store.outbound_pending(*dst).map_or(0, |(_, n)| n - 1);
                assert!(kept <= *next, "seed {}: store invented messages", self.seed);
                *node.quota.get_mut(dst).unwrap() += *next - kept;
                *next = kept;
            }
            for (src, list) in node.delivered.iter_mut() {
                list.truncate(store.inbound_consumed(*src) as usize);
            }
        } else {
            self.open(i);
        }
    }

    /// Commits some of node `i`'s remaining messages (backpressure permitting).
    fn send_some(&mut self, i: usize) {
        let dests: Vec<u32> = self.nodes[i].quota.keys().copied().collect();
        for dst in dests {
            let burst = self.rng.random_range(0..8);
            for _ in 0..burst {
                let node = &mut self.nodes[i];
                let left = node.quota[&dst];
                if left == 0 {
                    break;
                }
                let index = *node.next_index.get(&dst).unwrap_or(&0);
                let len = message_len(&mut self.rng, self.scenario.large);
                let node = &mut self.nodes[i];
                let body = payload(node.id, dst, index, len);
                let producer = node.core.as_ref().unwrap().producer();
                match producer.send(dst, &body) {
                    Ok(_) => {
                        node.next_index.insert(dst, index + 1);
                        node.quota.insert(dst, left - 1);
                    }
                    Err(StoreError::Full { .. }) => break,
                    Err(e) => panic!("seed {}: send failed: {e}", self.seed),
                }
            }
        }
    }

    fn partitioned(&self, a: u32, b: u32) -> bool {
        let during = |w: Option<(Duration, Duration)>| {
            w.is_some_and(|(start, end)| self.now >= start && self.now < end)
        };
        (during(self.faults.partition) && (a == 1 || b == 1))
            || (during(self.faults.reverse_cut) && a == 2 && b == 1)
    }

    /// Node `i` loses its store: it restarts with a new, empty one (a new
    /// epoch). Messages it had acknowledged but not delivered, and messages
    /// it had committed but not yet seen acknowledged, may be gone.
    fn wipe(&mut self, i: usize) {
        let id = self.nodes[i].id;
        self.nodes[i].core = None;
        std::fs::remove_dir_all(&self.nodes[i].dir).unwrap();
        for n in 0..self.nodes.len() {
            let other = self.nodes[n].id;
            if other == id {
                continue;
            }
            let into = self.nodes[n].next_index.get(&id).copied().unwrap_or(0);
            let out = self.nodes[i].next_index.get(&other).copied().unwrap_or(0);
            self.boundary.insert((other, id), into);
            self.boundary.insert((id, other), out);
        }
        self.nodes[i].restarts += 1;
        self.open(i);
    }

    /// Messages from `src` to `dst` that must be delivered: all of them, or
    /// (after a store loss) those from the boundary on.
    fn required(&self, src: u32, dst: u32) -> std::ops::Range<u64> {
        let sent = self.nodes[src as usize - 1]
            .next_index
            .get(&dst)
            .copied()
            .unwrap_or(0);
        self.boundary.get(&(src, dst)).copied().unwrap_or(0)..sent
    }

    /// Runs node `i`'s loop body once: sync, deliver, transmit.
    fn service(&mut self, i: usize) {
        let now = self.instant();
        let seed = self.seed;
        let node = &mut self.nodes[i];
        let core = node.core.as_mut().unwrap();
        core.sync().unwrap();
        let delivered = &mut node.delivered;
        let mut record = |d: Delivery<'_>| {
            let src = u32::from_le_bytes(d.payload[0..4].try_into().unwrap());
            let dst = u32::from_le_bytes(d.payload[4..8].try_into().unwrap());
            let index = u64::from_le_bytes(d.payload[8..16].try_into().unwrap());
            assert_eq!(src, d.peer, "seed {seed}: message names another sender");
            assert_eq!(
                d.payload,
                payload(src, dst, index, d.payload.len()),
                "seed {seed}: corrupt"
            );
            delivered.entry(d.peer).or_default().push((d.seq, index));
        };
        core.deliver(usize::MAX, &mut record).unwrap();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        let mut buf = vec![0u8; self.cfg.mtu * self.cfg.max_segments];
        let from = node.addr;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(t) = core.poll_transmit(now, &mut buf) else {
                break;
            };
            let seg = t.segment_size.unwrap_or(t.len);
            for chunk in buf[..t.len].chunks(seg) {
                out.push((t.dst, chunk.to_vec()));
            }
        }
        for (dst, bytes) in out {
            self.route(from, dst, bytes);
        }
    }

    fn route(&mut self, from: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        let Some(to) = self.nodes.iter().position(|n| n.addr == dst) else {
            return;
        };
        let src_id = self
            .nodes
            .iter()
            .find(|n| n.addr == from)
            .map_or(0, |n| n.id);
        if self.partitioned(src_id, self.nodes[to].id) {
            return;
        }
        let f = self.faults;
        if self.rng.random_bool(f.loss) || (bytes.len() > 1200 && self.rng.random_bool(f.big_drop))
        {
            return;
        }
        let copies = if self.rng.random_bool(f.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.random_range(0..=f.jitter.as_micros() as u64);
            let at = self.now + Duration::from_micros(50 + jitter);
            self.order += 1;
            self.net.push(InFlight {
                at,
                order: self.order,
                to,
                from,
                bytes: bytes.clone(),
            });
        }
    }

    fn done(&self) -> bool {
        let all_sent = self.nodes.iter().all(|n| n.quota.values().all(|&q| q == 0));
        all_sent
            && self.nodes.iter().all(|n| {
                n.next_index.keys().all(|&dst| {
                    let need = self.required(n.id, dst);
                    let d = &self.nodes[dst as usize - 1];
                    let got = d.delivered.get(&n.id).map_or(0, |v| {
                        v.iter().filter(|&&(_, i)| need.contains(&i)).count() as u64
                    });
                    got >= need.end - need.start
                })
            })
    }

    /// Drives the simulation until every message is delivered, or the
    /// virtual-time and step bounds are hit (a failure).
    fn run(&mut self) {
        let limit = Duration::from_secs(600);
        let n = self.nodes.len();
        let verbose = std::env::var("HRPC_SIM_VERBOSE").is_ok();
        for step in 0..2_000_000u64 {
            if verbose && step % 20_000 == 0 {
                eprintln!("seed {} step {step}: {}", self.seed, self.progress());
            }
            if self.done() {
                if std::env::var("HRPC_SIM_VERBOSE").is_ok() {
                    eprintln!("seed {} done: {}", self.seed, self.progress());
                }
                return self.check();
            }
            assert!(
                self.now < limit,
                "seed {}: not done after {limit:?} of virtual time: {}",
                self.seed,
                self.progress()
            );
            for i in 0..n {
                self.send_some(i);
                self.service(i);
            }
            if self.wipe_at.is_some_and(|t| self.now >= t) {
                self.wipe_at = None;
                self.wipe(1);
            }
            if self.faults.crash > 0.0 && self.rng.random_bool(self.faults.crash) {
                let i = self.rng.random_range(0..n);
                self.crash(i);
            }
            // Advance to the next datagram arrival or timer.
            let mut next = self.net.peek().map(|d| d.at);
            for node in &self.nodes {
                if let Some(t) = node.core.as_ref().and_then(|c| c.poll_timeout()) {
                    let t = t.saturating_duration_since(self.start);
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            let next = next
                .unwrap_or(self.now + Duration::from_millis(1))
                .max(self.now);
            // Keep sending (commits happen in the loop) at a 1 ms pace at least.
            self.now = next.min(self.now + Duration::from_millis(1));
            while self.net.peek().is_some_and(|d| d.at <= self.now) {
                let d = self.net.pop().unwrap();
                let now = self.instant();
                if let Some(core) = self.nodes[d.to].core.as_mut() {
                    core.handle_datagram(now, d.from, &d.bytes);
                }
            }
        }
        panic!("seed {}: step bound hit: {}", self.seed, self.progress());
    }

    fn progress(&self) -> String {
        let mut s = format!("faults {:?}, t={:?}; ", self.faults, self.now);
        for n in &self.nodes {
            let core = n.core.as_ref().unwrap();
            s += &format!(
                "node {} sent {:?} left {:?} got {:?} stats {:?}; ",
                n.id,
                n.next_index,
                n.quota,
                n.delivered
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<BTreeMap<_, _>>(),
                core.stats()
            );
            for m in &self.nodes {
                if let Some(info) = core.peer_info(m.id) {
                    s += &format!("{info:?}; ");
                }
            }
        }
        s
    }

    /// Exactly once, in order, nothing extra.
    fn check(&self) {
        for n in &self.nodes {
            for (&src, list) in &n.delivered {
                let sent = self.nodes[src as usize - 1]
                    .next_index
                    .get(&n.id)
                    .copied()
                    .unwrap_or(0);
                let indexes: Vec<u64> = list.iter().map(|&(_, i)| i).collect();
                if let Some(&from) = self.boundary.get(&(src, n.id)) {
                    // Across a store loss: in order, at most once, and every
                    // message from the boundary on.
                    assert!(
                        indexes.windows(2).all(|w| w[0] < w[1]),
                        "seed {}: node {} from {src}: duplicated or out of order",
                        self.seed,
                        n.id
                    );
                    let after: Vec<u64> = indexes.iter().copied().filter(|&i| i >= from).collect();
                    assert_eq!(
                        after,
                        (from..sent).collect::<Vec<_>>(),
                        "seed {}: node {} from {src}: lost after the store loss",
                        self.seed,
                        n.id
                    );
                    continue;
                }
                let want: Vec<u64> = (0..sent).collect();
                assert_eq!(
                    indexes, want,
                    "seed {}: node {} from {src}: wrong deliveries",
                    self.seed, n.id
                );
                let seqs: Vec<u64> = list.iter().map(|&(s, _)| s).collect();
                assert!(
                    seqs.windows(2).all(|w| w[1] == w[0] + 1),
                    "seed {}: seqs not consecutive",
                    self.seed
                );
            }
        }
    }
}

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("HRPC_SIM_SEED") {
        return vec![s.parse().expect("HRPC_SIM_SEED is a number")];
    }
    let n = std::env::var("HRPC_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

pub(crate) fn run_seeds(
    name: &str,
    default: u64,
    nodes: usize,
    per_pair: u64,
    durability: Durability,
    scenario: Scenario,
) {
    let mut restarts = 0;
    for seed in seeds(default) {
        let result = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed, nodes, per_pair, durability, scenario);
            sim.run();
            sim.nodes.iter().map(|n| n.restarts).sum::<u32>()
        });
        match result {
            Ok(r) => restarts += r,
            Err(e) => {
                eprintln!("{name}: FAILED at seed {seed}; replay with HRPC_SIM_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{name}: ok ({restarts} restarts in total)");
}
