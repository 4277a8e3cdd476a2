//! The forwarding loop: one front socket for clients and one server-facing socket per client
//! address, each datagram impaired on the way and held copies released when due, counted in
//! [`RelayStats`].
//!
//! A client's server-facing socket is bound on first sight and kept for the relay's life, so
//! the server sees each client at an address of its own; at most [`MAX_CLIENTS`] are mapped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::driver::udp::MAX_UDP_PAYLOAD;
use hrpc_node::driver::{UdpConfig, UdpIo};
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use super::MAX_CLIENTS;
use super::impairment::{Impairment, RelayConfig};

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

/// A loopback socket with batched receive (`recvmmsg`, GRO) and segmented send (GSO): the
/// socket type hrpc's own driver uses, so the relay keeps up with what it forwards.
pub(super) fn bind_loopback() -> io::Result<UdpIo> {
    // Large buffers so the relay itself drops as little as possible.
    let cfg = UdpConfig {
        mtu: MAX_UDP_PAYLOAD,
        recv_buffer: 8 << 20,
        send_buffer: 4 << 20,
        gso: true,
        gro: true,
    };
    UdpIo::bind(crate::procs::LOOPBACK, &cfg)
}

/// Datagrams for one direction, gathered into one segmented send: every one `seg` bytes
/// long except possibly the last (what GSO and `UdpIo::send` take).
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    seg: usize,
    count: usize,
    /// A shorter datagram ended it: the next one starts a new batch.
    closed: bool,
}

impl Batch {
    /// Whether `len` bytes can join without breaking the segment rule or the size caps.
    fn takes(&self, len: usize) -> bool {
        self.count == 0
            || (!self.closed
                && len <= self.seg
                && self.count < MAX_SEGMENTS
                && self.buf.len() + len <= MAX_UDP_PAYLOAD)
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.count == 0 {
            self.seg = bytes.len().max(1);
        }
        self.buf.extend_from_slice(bytes);
        self.count += 1;
        self.closed = bytes.len() < self.seg;
    }
}

/// Datagrams per segmented send at most (the kernel's GSO limit).
const MAX_SEGMENTS: usize = 64;

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
    front: UdpIo,
    server: SocketAddr,
    clients: Vec<(SocketAddr, UdpIo)>,
    by_addr: HashMap<SocketAddr, usize>,
    held: BinaryHeap<Reverse<Held>>,
    order: u64,
    imp: Impairment,
    stats: RelayStats,
    /// Per client: what goes to the server from it, and what goes back to it.
    to_server: Vec<Batch>,
    to_client: Vec<Batch>,
    /// Directions with a batch waiting, in the order they were first written.
    pending: Vec<Dir>,
}

impl State {
    /// Queues a copy for `dir`; [`State::flush`] sends what was queued.
    fn send(&mut self, dir: Dir, bytes: &[u8]) {
        if !self.batch(dir).is_some_and(|b| b.takes(bytes.len())) {
            self.flush_one(dir);
        }
        let Some(b) = self.batch(dir) else {
            self.stats.send_failed += 1;
            return;
        };
        let first = b.count == 0;
        b.push(bytes);
        if first {
            self.pending.push(dir);
        }
    }

    fn batch(&mut self, dir: Dir) -> Option<&mut Batch> {
        match dir {
            Dir::ToServer(i) => self.to_server.get_mut(i),
            Dir::ToClient(i) => self.to_client.get_mut(i),
        }
    }

    /// Sends every queued batch.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for &dir in &pending {
            self.flush_one(dir);
        }
        pending.clear();
        self.pending = pending;
    }

    fn flush_one(&mut self, dir: Dir) {
        let (batch, io, dst) = match dir {
            Dir::ToServer(i) => match (self.to_server.get_mut(i), self.clients.get_mut(i)) {
                (Some(b), Some((_, io))) => (b, io, self.server),
                _ => return,
            },
            Dir::ToClient(i) => match (self.to_client.get_mut(i), self.clients.get(i)) {
                (Some(b), Some((a, _))) => (b, &mut self.front, *a),
                _ => return,
            },
        };
        if batch.count == 0 {
            return;
        }
        let mut done = 0;
        while done < batch.buf.len() {
            match io.send(dst, &batch.buf[done..], Some(batch.seg)) {
                Ok(n) if n > 0 => done += n,
                // A full socket buffer or an error: the rest is lost, as on a real path.
                _ => break,
            }
        }
        let sent = if done == batch.buf.len() {
            batch.count
        } else {
            done / batch.seg
        };
        self.stats.forwarded += sent as u64;
        self.stats.send_failed += (batch.count - sent) as u64;
        batch.buf.clear();
        batch.count = 0;
        batch.closed = false;
        // `dir` may stay in `pending`: flushing an empty batch does nothing.
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
        self.to_server.push(Batch::default());
        self.to_client.push(Batch::default());
        let i = self.clients.len() - 1;
        self.by_addr.insert(addr, i);
        Some(i)
    }
}

pub(super) fn run(
    front: UdpIo,
    server: SocketAddr,
    clients: Vec<(SocketAddr, UdpIo)>,
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
    let n = clients.len();
    let mut st = State {
        front,
        server,
        clients,
        by_addr,
        held: BinaryHeap::new(),
        order: 0,
        imp: Impairment::new(&cfg, start),
        stats: RelayStats::default(),
        to_server: (0..n).map(|_| Batch::default()).collect(),
        to_client: (0..n).map(|_| Batch::default()).collect(),
        pending: Vec::new(),
    };
    // One receive batch, copied out of the socket's ring: (source, range in `rx`).
    let mut rx: Vec<u8> = Vec::new();
    let mut got: Vec<(SocketAddr, usize, usize)> = Vec::new();
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
            fds.push(PollFd::new(st.front.fd(), PollFlags::POLLIN));
            for (_, s) in &st.clients {
                fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            }
            // To the microsecond (`ppoll`): with `poll`'s milliseconds a datagram held for
            // 300 µs went out up to a millisecond late, so holds ran past `reorder_by`.
            let timeout = TimeSpec::from_duration(wait);
            if ppoll(&mut fds, Some(timeout), None).is_ok() {
                for (i, fd) in fds.iter().enumerate() {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        ready.push(i);
                    }
                }
            }
        }
        for &i in &ready {
            // Bounded drain per socket so one busy direction cannot starve the other.
            for _ in 0..8 {
                rx.clear();
                got.clear();
                let io = if i == 0 {
                    &mut st.front
                } else {
                    match st.clients.get_mut(i - 1) {
                        Some((_, io)) => io,
                        None => break,
                    }
                };
                let received = io.recv_batch(|from, d| {
                    let at = rx.len();
                    rx.extend_from_slice(d);
                    got.push((from, at, rx.len()));
                });
                if !matches!(received, Ok(n) if n > 0) {
                    break;
                }
                let now = Instant::now();
                for &(from, a, b) in &got {
                    let bytes = &mut rx[a..b];
                    if i == 0 {
                        if let Some(c) = st.client_index(from) {
                            st.impair(now, Dir::ToServer(c), bytes);
                        }
                    } else if from == st.server {
                        st.impair(now, Dir::ToClient(i - 1), bytes);
                    }
                }
                st.release_due(now);
                st.flush();
            }
        }
        st.release_due(Instant::now());
        st.flush();
    }
    st.stats
}
