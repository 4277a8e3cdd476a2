//! The handle to a running relay: starting it (in front of a server, or as a link between
//! two fixed endpoints), the addresses it listens on, and stopping it.
//!
//! The relay runs on a thread of its own; stopping or dropping the handle joins it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::forward::{RelayStats, bind_loopback, run};
use super::impairment::RelayConfig;

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
        let front = front_sock.local_addr();
        let mut clients = Vec::new();
        let mut link = None;
        if let Some(b) = peer {
            let sock = bind_loopback()?;
            link = Some(sock.local_addr());
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
