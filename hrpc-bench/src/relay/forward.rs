//! The forwarding loop: one front socket for clients and one server-facing socket per client
//! address, each datagram impaired on the way and held copies released when due, counted in
//! [`RelayStats`].
//!
//! A client's server-facing socket is bound on first sight and kept for the relay's life, so
//! the server sees each client at an address of its own; at most [`MAX_CLIENTS`] are mapped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::MAX_CLIENTS;
use super::impairment::{Impairment, RelayConfig};

/// Largest datagram the relay forwards.
const MAX_DATAGRAM: usize = 65_535;

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

pub(super) fn bind_loopback() -> io::Result<UdpSocket> {
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

pub(super) fn run(
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
