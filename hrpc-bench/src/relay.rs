//! A seeded user-space UDP relay that impairs traffic: drop, duplicate, reorder, delay and
//! corrupt datagrams with given probabilities, cut the path during partition windows, and stop
//! by itself after a bounded lifetime.
//!
//! The relay sits between clients and one server, like a NAT: clients send to its
//! [`Relay::front_addr`]; for each client address it opens one socket facing the server, so
//! the server sees every client at its own address and its replies come back through the
//! right socket to the right client. Both directions are impaired with the same
//! [`RelayConfig`]. Only loopback addresses are used.
//!
//! [`Relay::link`] joins two fixed endpoints instead: each side is given the relay address that
//! stands for the other ([`Relay::front_addr`] for `b`, [`Relay::link_addr`] for `a`), so
//! either may send first, and a side that restarts on the same port is reached again through
//! the same addresses. [`partition_schedule`] draws partition windows from a seed.
//!
//! What happens to each datagram is decided by [`Impairment`], a pure function of the seed and
//! the order of datagrams, so it can be tested without sockets:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hrpc_bench::relay::{Impairment, RelayConfig};
//!
//! let mut cfg = RelayConfig::new(7);
//! cfg.duplicate = 1.0;
//! let mut imp = Impairment::new(&cfg, Instant::now());
//! let fate = imp.fate(Instant::now(), 100);
//! assert_eq!(fate.copies().count(), 2);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Most client addresses one relay maps (one server-facing socket each).
pub const MAX_CLIENTS: usize = 4096;
/// Largest datagram the relay forwards.
const MAX_DATAGRAM: usize = 65_535;

/// What the relay does to traffic. Probabilities are in `0.0..=1.0` and independent.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a forwarded datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a forwarded datagram is held back by up to [`RelayConfig::reorder_by`]
    /// so later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held at most (uniformly chosen up to this).
    pub reorder_by: Duration,
    /// Probability that a forwarded datagram is delayed by [`RelayConfig::delay_by`].
    pub delay: f64,
    /// Delay applied to delayed datagrams.
    pub delay_by: Duration,
    /// Probability that one byte of a forwarded datagram is flipped.
    pub corrupt: f64,
    /// Seed of the relay's random decisions.
    pub seed: u64,
    /// Windows (measured from the relay's start) during which every datagram is dropped.
    pub partitions: Vec<Range<Duration>>,
    /// The relay stops by itself this long after it started.
    pub lifetime: Duration,
}

impl RelayConfig {
    /// A relay that forwards everything unchanged, seeded with `seed`, living 60 s.
    pub fn new(seed: u64) -> Self {
        RelayConfig {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_by: Duration::from_millis(2),
            delay: 0.0,
            delay_by: Duration::from_millis(5),
            corrupt: 0.0,
            seed,
            partitions: Vec::new(),
            lifetime: Duration::from_secs(60),
        }
    }

    /// The `--loss P` relay of `hrpc-bench pair`: drop, duplicate and reorder each with
    /// probability `percent / 100`.
    pub fn lossy(percent: f64, seed: u64) -> Self {
        let p = (percent / 100.0).clamp(0.0, 1.0);
        RelayConfig {
            drop: p,
            duplicate: p,
            reorder: p,
            ..RelayConfig::new(seed)
        }
    }
}

/// One copy of a datagram to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// How long to hold it before sending (zero = at once).
    pub hold: Duration,
    /// A byte to flip: (index, xor mask).
    pub flip: Option<(usize, u8)>,
}

/// What happens to one datagram: zero, one or two copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fate {
    copies: [Option<Copy>; 2],
}

impl Fate {
    /// The copies to forward (none = dropped).
    pub fn copies(&self) -> impl Iterator<Item = Copy> + '_ {
        self.copies.iter().flatten().copied()
    }
}

/// The relay's decisions, from a seeded generator: the same seed and the same sequence of
/// datagram lengths give the same fates.
#[derive(Debug)]
pub struct Impairment {
    cfg: RelayConfig,
    rng: StdRng,
    start: Instant,
}

impl Impairment {
    /// Decisions per `cfg`, with partition windows measured from `start`.
    pub fn new(cfg: &RelayConfig, start: Instant) -> Self {
        Impairment {
            cfg: cfg.clone(),
            rng: StdRng::seed_from_u64(cfg.seed),
            start,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.rng.random_bool(p))
    }

    /// The fate of a datagram of `len` bytes arriving at `now`.
    pub fn fate(&mut self, now: Instant, len: usize) -> Fate {
        let since = now.saturating_duration_since(self.start);
        if self.cfg.partitions.iter().any(|w| w.contains(&since)) {
            return Fate::default();
        }
        if self.chance(self.cfg.drop) {
            return Fate::default();
        }
        let copies = if self.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        let mut fate = Fate::default();
        for slot in fate.copies.iter_mut().take(copies) {
            let mut hold = Duration::ZERO;
            if self.chance(self.cfg.reorder) {
                let max = self.cfg.reorder_by.as_micros().max(1) as u64;
                hold += Duration::from_micros(self.rng.random_range(1..=max));
            }
            if self.chance(self.cfg.delay) {
                hold += self.cfg.delay_by;
            }
            let flip = (len > 0 && self.chance(self.cfg.corrupt)).then(|| {
                (
                    self.rng.random_range(0..len),
                    self.rng.random_range(1..=255u8),
                )
            });
            *slot = Some(Copy { hold, flip });
        }
        fate
    }
}

/// Counters of a relay run (both directions together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received from either side.
    pub received: u64,
    /// Datagrams sent on (copies counted).
    pub forwarded: u64,
    /// Datagrams dropped on purpose (loss or partition).
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Copies held back (reorder or delay).
    pub held: u64,
    /// Copies with a flipped byte.
    pub corrupted: u64,
    /// Copies the kernel refused (socket buffer full); lost like on a real path.
    pub send_failed: u64,
    /// Client addresses refused because [`MAX_CLIENTS`] were mapped.
    pub clients_refused: u64,
}

/// `count` partition windows within `span`, drawn from `seed`: the span is cut into `count`
/// equal slots and each slot holds one window, its length uniform in `length` (capped at the
/// slot) and its start uniform within what the slot leaves. The windows are sorted, disjoint
/// and inside `span`; the same arguments give the same windows.
pub fn partition_schedule(
    seed: u64,
    span: Duration,
    count: u32,
    length: Range<Duration>,
) -> Vec<Range<Duration>> {
    if count == 0 || span.is_zero() {
        return Vec::new();
    }
    // A generator of its own, so the schedule does not shift the per-datagram decisions.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7061_7274_6974_696f);
    let slot = span / count;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let lo = length.start.min(slot);
        let hi = length.end.min(slot).max(lo);
        let len = if hi > lo {
            Duration::from_nanos(rng.random_range(lo.as_nanos() as u64..=hi.as_nanos() as u64))
        } else {
            lo
        };
        let room = (slot - len).as_nanos() as u64;
        let offset = Duration::from_nanos(if room > 0 {
            rng.random_range(0..=room)
        } else {
            0
        });
        let start = slot * i + offset;
        if !len.is_zero() {
            out.push(start..start + len);
        }
    }
    out
}

/// A running relay; stops when [`Relay::stop`] is called, when dropped, or when its lifetime
/// ends.
#[derive(Debug)]
pub struct Relay {
    front: SocketAddr,
    link: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RelayStats>>,
}

impl Relay {
    /// Starts a relay thread forwarding to `server` (a loopback address) from a front socket on
    /// 127.0.0.1 with an ephemeral port.
    pub fn start(cfg: RelayConfig, server: SocketAddr) -> io::Result<Relay> {
        Self::spawn(cfg, server, None)
    }

    /// Starts a relay joining two fixed loopback endpoints `a` and `b`: `b` sends to
    /// [`Relay::front_addr`] to reach `a`, `a` sends to [`Relay::link_addr`] to reach `b`. Both
    /// addresses exist from the start, so either side may send first, and they stay the same
    /// while the relay runs (a side that restarts must bind its old address again).
    pub fn link(cfg: RelayConfig, a: SocketAddr, b: SocketAddr) -> io::Result<Relay> {
        if !b.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the relay only forwards to loopback addresses",
            ));
        }
        Self::spawn(cfg, a, Some(b))
    }

    fn spawn(cfg: RelayConfig, server: SocketAddr, peer: Option<SocketAddr>) -> io::Result<Relay> {
        if !server.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the relay only forwards to loopback addresses",
            ));
        }
        let front_sock = bind_loopback()?;
        let front = front_sock.local_addr()?;
        let mut clients = Vec::new();
        let mut link = None;
        if let Some(b) = peer {
            let sock = bind_loopback()?;
            link = Some(sock.local_addr()?);
            clients.push((b, sock));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hrpc-relay".to_owned())
            .spawn(move || run(front_sock, server, clients, cfg, &flag))?;
        Ok(Relay {
            front,
            link,
            stop,
            thread: Some(thread),
        })
    }

    /// Where clients send: the relay's front socket. For a [`Relay::link`], the address `b`
    /// sends to in order to reach `a`.
    pub fn front_addr(&self) -> SocketAddr {
        self.front
    }

    /// For a [`Relay::link`], the address `a` sends to in order to reach `b` (`None` for a
    /// relay made by [`Relay::start`]).
    pub fn link_addr(&self) -> Option<SocketAddr> {
        self.link
    }

    /// Stops the relay and returns its counters.
    pub fn stop(mut self) -> RelayStats {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_loopback() -> io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let s = UdpSocket::bind(crate::procs::LOOPBACK)?;
    s.set_nonblocking(true)?;
    // Large buffers so the relay itself drops as little as possible (the force variants
    // work as root; otherwise the kernel caps the plain ones at rmem_max/wmem_max).
    if setsockopt(&s, sockopt::RcvBufForce, &(8 << 20)).is_err() {
        let _ = setsockopt(&s, sockopt::RcvBuf, &(8 << 20));
    }
    if setsockopt(&s, sockopt::SndBufForce, &(4 << 20)).is_err() {
        let _ = setsockopt(&s, sockopt::SndBuf, &(4 << 20));
    }
    Ok(s)
}

/// Which way a held datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    /// From client `i` to the server, out of back socket `i`.
    ToServer(usize),
    /// From the server to client `i`, out of the front socket.
    ToClient(usize),
}

struct Held {
    at: Instant,
    order: u64,
    dir: Dir,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

struct State {
    front: UdpSocket,
    server: SocketAddr,
    clients: Vec<(SocketAddr, UdpSocket)>,
    by_addr: HashMap<SocketAddr, usize>,
    held: BinaryHeap<Reverse<Held>>,
    order: u64,
    imp: Impairment,
    stats: RelayStats,
}

impl State {
    fn send(&mut self, dir: Dir, bytes: &[u8]) {
        let sent = match dir {
            Dir::ToServer(i) => self
                .clients
                .get(i)
                .map(|(_, s)| s.send_to(bytes, self.server)),
            Dir::ToClient(i) => self
                .clients
                .get(i)
                .map(|(a, _)| self.front.send_to(bytes, *a)),
        };
        match sent {
            Some(Ok(_)) => self.stats.forwarded += 1,
            _ => self.stats.send_failed += 1,
        }
    }

    fn impair(&mut self, now: Instant, dir: Dir, bytes: &mut [u8]) {
        self.stats.received += 1;
        let fate = self.imp.fate(now, bytes.len());
        let mut n = 0;
        for copy in fate.copies() {
            n += 1;
            if n > 1 {
                self.stats.duplicated += 1;
            }
            let mut out = std::borrow::Cow::Borrowed(&*bytes);
            if let Some((i, mask)) = copy.flip {
                let owned = out.to_mut();
                if let Some(b) = owned.get_mut(i) {
                    *b ^= mask;
                }
                self.stats.corrupted += 1;
            }
            if copy.hold.is_zero() {
                self.send(dir, &out);
            } else {
                self.stats.held += 1;
                self.order += 1;
                self.held.push(Reverse(Held {
                    at: now + copy.hold,
                    order: self.order,
                    dir,
                    bytes: out.into_owned(),
                }));
            }
        }
        if n == 0 {
            self.stats.dropped += 1;
        }
    }

    fn release_due(&mut self, now: Instant) {
        while self.held.peek().is_some_and(|Reverse(h)| h.at <= now) {
            if let Some(Reverse(h)) = self.held.pop() {
                self.send(h.dir, &h.bytes);
            }
        }
    }

    fn client_index(&mut self, addr: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.by_addr.get(&addr) {
            return Some(i);
        }
        if self.clients.len() >= MAX_CLIENTS {
            self.stats.clients_refused += 1;
            return None;
        }
        let sock = bind_loopback().ok()?;
        self.clients.push((addr, sock));
        let i = self.clients.len() - 1;
        self.by_addr.insert(addr, i);
        Some(i)
    }
}

fn run(
    front: UdpSocket,
    server: SocketAddr,
    clients: Vec<(SocketAddr, UdpSocket)>,
    cfg: RelayConfig,
    stop: &AtomicBool,
) -> RelayStats {
    let start = Instant::now();
    let deadline = start + cfg.lifetime;
    let by_addr = clients
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (*a, i))
        .collect();
    let mut st = State {
        front,
        server,
        clients,
        by_addr,
        held: BinaryHeap::new(),
        order: 0,
        imp: Impairment::new(&cfg, start),
        stats: RelayStats::default(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ready = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Wait for input or the next held datagram, at most 5 ms (to notice `stop`).
        let mut wait = Duration::from_millis(5);
        if let Some(Reverse(h)) = st.held.peek() {
            wait = wait.min(h.at.saturating_duration_since(now));
        }
        ready.clear();
        {
            let mut fds = Vec::with_capacity(st.clients.len() + 1);
            fds.push(PollFd::new(st.front.as_fd(), PollFlags::POLLIN));
            for (_, s) in &st.clients {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let ms = wait.as_millis().min(5) as u8;
            let timeout = if wait.is_zero() {
                PollTimeout::ZERO
            } else {
                PollTimeout::from(ms.max(1))
            };
            if poll(&mut fds, timeout).is_ok() {
                for (i, fd) in fds.iter().enumerate() {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        ready.push(i);
                    }
                }
            }
        }
        for &i in &ready {
            // Bounded drain per socket so one busy direction cannot starve the other.
            for _ in 0..256 {
                let now = Instant::now();
                if i == 0 {
                    let Ok((n, from)) = st.front.recv_from(&mut buf) else {
                        break;
                    };
                    if let Some(c) = st.client_index(from) {
                        st.impair(now, Dir::ToServer(c), &mut buf[..n]);
                    }
                } else {
                    let c = i - 1;
                    let Some((_, s)) = st.clients.get(c) else {
                        break;
                    };
                    let Ok((n, from)) = s.recv_from(&mut buf) else {
                        break;
                    };
                    if from != st.server {
                        continue;
                    }
                    st.impair(now, Dir::ToClient(c), &mut buf[..n]);
                }
                st.release_due(Instant::now());
            }
        }
        st.release_due(Instant::now());
    }
    st.stats
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a fixed seed and any sequence of lengths: drop probability 1.0 drops every
    /// datagram, all-zero probabilities forward each exactly once without delay or damage
    /// (so in order), and duplicate probability 1.0 always gives two copies. The same seed
    /// gives the same fates.
    #[test]
    fn fates_follow_the_probabilities() {
        let now = Instant::now();
        let lens: Vec<usize> = (0..1000).map(|i| 1 + (i * 37) % 1500).collect();

        let mut cfg = RelayConfig::new(1);
        cfg.drop = 1.0;
        let mut imp = Impairment::new(&cfg, now);
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().count() == 0));

        let mut imp = Impairment::new(&RelayConfig::new(1), now);
        let plain = Copy {
            hold: Duration::ZERO,
            flip: None,
        };
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().eq([plain])));

        let mut cfg = RelayConfig::new(1);
        cfg.duplicate = 1.0;
        let mut imp = Impairment::new(&cfg, now);
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().count() == 2));

        let cfg = RelayConfig::lossy(30.0, 9);
        let a: Vec<Fate> = {
            let mut imp = Impairment::new(&cfg, now);
            lens.iter().map(|&l| imp.fate(now, l)).collect()
        };
        let mut imp = Impairment::new(&cfg, now);
        let b: Vec<Fate> = lens.iter().map(|&l| imp.fate(now, l)).collect();
        assert_eq!(a, b);
        let dropped = a.iter().filter(|f| f.copies().count() == 0).count();
        assert!(
            (200..400).contains(&dropped),
            "30% of 1000 dropped: {dropped}"
        );
    }

    /// Partition windows drop everything inside them and nothing outside.
    #[test]
    fn partitions_drop_inside_the_window() {
        let start = Instant::now();
        let mut cfg = RelayConfig::new(3);
        cfg.partitions = vec![Duration::from_secs(1)..Duration::from_secs(2)];
        let mut imp = Impairment::new(&cfg, start);
        assert_eq!(imp.fate(start, 10).copies().count(), 1);
        let inside = start + Duration::from_millis(1500);
        assert_eq!(imp.fate(inside, 10).copies().count(), 0);
        assert_eq!(
            imp.fate(start + Duration::from_secs(2), 10)
                .copies()
                .count(),
            1
        );
    }

    /// A partition schedule is a pure function of its arguments: sorted, disjoint windows
    /// inside the span with lengths in range, one per slot; another seed moves them.
    #[test]
    fn partition_schedules_are_seeded_and_bounded() {
        let span = Duration::from_secs(30);
        let len = Duration::from_millis(50)..Duration::from_millis(400);
        let a = partition_schedule(5, span, 10, len.clone());
        assert_eq!(a, partition_schedule(5, span, 10, len.clone()));
        assert_ne!(a, partition_schedule(6, span, 10, len.clone()));
        assert_eq!(a.len(), 10);
        let slot = span / 10;
        for (i, w) in a.iter().enumerate() {
            let l = w.end - w.start;
            assert!(len.start <= l && l <= len.end, "{w:?}");
            assert!(
                w.start >= slot * i as u32 && w.end <= slot * (i as u32 + 1),
                "{w:?}"
            );
        }
        assert!(a.windows(2).all(|p| p[0].end <= p[1].start));
        // Windows longer than a slot are cut to the slot; no windows for no span or count.
        let tight = partition_schedule(1, Duration::from_secs(1), 4, len.start * 10..len.end * 10);
        assert!(
            tight
                .iter()
                .all(|w| w.end - w.start <= Duration::from_millis(250))
        );
        assert!(partition_schedule(1, Duration::ZERO, 4, len.clone()).is_empty());
        assert!(partition_schedule(1, span, 0, len).is_empty());
    }

    /// During a scheduled partition every datagram is dropped, whatever the other
    /// probabilities, and outside all windows none is (with zero loss).
    #[test]
    fn scheduled_partitions_cut_everything() {
        let start = Instant::now();
        let mut cfg = RelayConfig::new(11);
        cfg.duplicate = 0.5;
        cfg.partitions = partition_schedule(
            11,
            Duration::from_secs(10),
            5,
            Duration::from_millis(100)..Duration::from_millis(500),
        );
        let windows = cfg.partitions.clone();
        let mut imp = Impairment::new(&cfg, start);
        let (mut cut, mut open) = (0, 0);
        for ms in (0..10_000).step_by(7) {
            let at = Duration::from_millis(ms);
            let n = imp.fate(start + at, 100).copies().count();
            if windows.iter().any(|w| w.contains(&at)) {
                assert_eq!(n, 0, "at {at:?}");
                cut += 1;
            } else {
                assert!(n >= 1, "at {at:?}");
                open += 1;
            }
        }
        assert!(cut > 50 && open > 500, "{cut} {open}");
    }

    proptest::proptest! {
        /// For any seed and probabilities, a fate has at most two copies, never two unless
        /// duplication is possible, and flips only bytes inside the datagram.
        #[test]
        fn fates_are_well_formed(seed in 0u64..1000, drop in 0.0f64..=1.0, dup in 0.0f64..=1.0,
                                 corrupt in 0.0f64..=1.0, len in 1usize..2000) {
            let now = Instant::now();
            let mut cfg = RelayConfig::new(seed);
            cfg.drop = drop;
            cfg.duplicate = dup;
            cfg.corrupt = corrupt;
            let mut imp = Impairment::new(&cfg, now);
            for _ in 0..20 {
                let f = imp.fate(now, len);
                let n = f.copies().count();
                proptest::prop_assert!(n <= 2);
                proptest::prop_assert!(dup > 0.0 || n <= 1);
                for c in f.copies() {
                    if let Some((i, m)) = c.flip {
                        proptest::prop_assert!(i < len && m != 0);
                    }
                }
            }
        }
    }
}
