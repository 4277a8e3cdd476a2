//! A node's life: opening it (validating the config, binding the socket, opening the store,
//! setting up epoll), flushing until every message is acknowledged, and closing it.
//!
//! From the start of a close (or a drop) every send that has not committed returns
//! [`SendError::Closed`](crate::driver::SendError::Closed); nothing is written into the store
//! after its lock is released.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_store::{Store, StoreConfig, StoreError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::sender::{Sender, Shared};
use super::{Node, core_error};
use crate::driver::config::{DEFAULT_BIND, NodeConfig, NodeError};
use crate::driver::udp::UdpIo;
use crate::driver::wait::wait_fds;
use crate::driver::waker::Waker;
use crate::proto::{ConfigError, Core};

impl Node {
    /// Opens the store (creating or recovering it), binds the socket, detects GSO/GRO and
    /// prepares the loop. Typed errors: [`NodeError::Config`], [`NodeError::StoreLocked`],
    /// [`NodeError::AddrInUse`], [`NodeError::Bind`], [`NodeError::Store`], [`NodeError::Io`].
    pub fn open(mut cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate()?;
        let now = Instant::now();
        let bind = cfg.bind.unwrap_or(DEFAULT_BIND);
        let io = UdpIo::bind(bind, &cfg.udp).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => NodeError::AddrInUse { addr: bind },
            io::ErrorKind::InvalidInput => NodeError::Config(ConfigError::Other(e.to_string())),
            _ => NodeError::Bind {
                addr: bind,
                source: e,
            },
        })?;
        let caps = io.caps();
        // Several datagrams per transmit: one GSO send, or one sendmmsg(2)
        // batch without GSO. Either way the syscall is per batch.
        cfg.core.max_segments = cfg.core.max_segments.max(1).min(caps.max_transmit_segments);
        if cfg.core.max_segments == 1 {
            cfg.core.max_segments = caps.max_transmit_segments;
        }
        cfg.core.mtu = cfg.udp.mtu;

        if let Err(source) = std::fs::create_dir_all(&cfg.store_dir) {
            return Err(NodeError::Store(StoreError::Io {
                op: "create store directory",
                path: cfg.store_dir.clone(),
                source,
            }));
        }
        let mut store_cfg = StoreConfig::new(cfg.node_id);
        store_cfg.durability = cfg.durability;
        store_cfg.capacity_bytes = cfg.store_capacity;
        store_cfg.max_peers = cfg.store_max_peers;
        store_cfg.recover_damaged = cfg.recover_damaged;
        let store = Store::open(&cfg.store_dir, &store_cfg).map_err(|e| match e {
            StoreError::Locked { path } => NodeError::StoreLocked { path },
            e => NodeError::Store(e),
        })?;

        let waker = Waker::new()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        epoll
            .add(io.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(io::Error::from)?;
        epoll
            .add(waker.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
            .map_err(io::Error::from)?;

        let shared = Arc::new(Shared {
            producer: store.producer(),
            waker: waker.clone(),
            closed: AtomicBool::new(false),
            node_id: cfg.node_id,
            max_unacked: hrpc_store::SendWindow {
                msgs: cfg.max_unacked_per_peer,
                bytes: cfg.max_unacked_bytes_per_peer,
            },
        });
        let tx_len = cfg.core.mtu * cfg.core.max_segments;
        let resolver = Box::new(cfg.peers);
        let core = Core::new(store, cfg.core, resolver, now).map_err(core_error)?;
        tracing::debug!(
            node = cfg.node_id,
            local = %io.local_addr(),
            ?caps,
            "node open"
        );
        Ok(Node {
            core,
            io,
            waker,
            epoll,
            local_sender: Sender {
                shared: shared.clone(),
                wake: false,
            },
            shared,
            tx_buf: vec![0; tx_len],
            pending_tx: None,
            epoll_wants_write: false,
            dirty: true,
            fd_drained: false,
            deliveries_per_poll: cfg.deliveries_per_poll,
            recv_batches_per_poll: cfg.recv_batches_per_poll,
            transmits_per_poll: cfg.transmits_per_poll,
            polls: 0,
            wakeups: 0,
            closed: false,
            #[cfg(feature = "metrics")]
            metrics: crate::driver::metrics::Metrics::new(cfg.node_id, cfg.metrics_interval, now),
        })
    }

    /// Drives the node (receiving, acknowledging, retransmitting — but delivering nothing, so
    /// nothing is consumed) until every message committed so far to any peer is acknowledged,
    /// or `timeout` passes. For a program that wants to exit only once its messages are safe
    /// at their peers. Returns [`NodeError::FlushTimeout`] with what is still pending.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), NodeError> {
        if self.closed {
            return Err(NodeError::Closed);
        }
        let deadline = deadline_after(timeout);
        loop {
            let pending = self.unacked();
            if pending == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NodeError::FlushTimeout { pending });
            }
            self.step_without_delivery(now)?;
            let limit = deadline.saturating_duration_since(Instant::now());
            let limit = match self.core.poll_timeout() {
                Some(t) => t.saturating_duration_since(Instant::now()).min(limit),
                None => limit,
            };
            wait_fds(
                self.io.fd(),
                self.pending_tx.is_some(),
                Some(self.waker.fd()),
                Some(limit.min(Duration::from_millis(50))),
            )?;
            if self.waker.take() {
                self.waker.drain()?;
            }
        }
    }

    /// Graceful close: refuses further sends, transmits what the socket takes within `linger`
    /// (acknowledgements owed to peers, queued messages), makes the store durable and releases
    /// it. Unacknowledged messages stay in the store for the next open.
    ///
    /// Sends on other threads see the close at once: from the start of `close`, a send that
    /// has not committed — even one whose fill callback is running — returns
    /// [`SendError::Closed`](crate::driver::SendError::Closed). `close` then waits, up to the
    /// end of `linger`, for such sends to finish, so that when it returns the directory can be
    /// opened again. A send still filling after that keeps the store locked
    /// ([`NodeError::StoreLocked`] for a new open) until its fill returns; nothing is ever
    /// written into the store after the lock is released.
    pub fn close(mut self, linger: Duration) -> Result<(), NodeError> {
        self.shared.closed.store(true, Ordering::Release);
        self.core.close_producers();
        let deadline = deadline_after(linger);
        // Finish transmitting without delivering anything new (so nothing is consumed).
        while Instant::now() < deadline {
            self.core.sync().map_err(core_error)?;
            let (_, more) = self.transmit(Instant::now())?;
            if !more && self.pending_tx.is_none() {
                break;
            }
            let _ = wait_fds(
                self.io.fd(),
                true,
                None,
                Some(deadline.saturating_duration_since(Instant::now())),
            )?;
        }
        self.core.sync().map_err(core_error)?;
        if !self
            .core
            .wait_producers(deadline.saturating_duration_since(Instant::now()))
        {
            tracing::debug!(
                node = self.shared.node_id,
                "sends still filling at close: the store stays locked until they end"
            );
        }
        self.closed = true;
        #[cfg(feature = "metrics")]
        self.metrics.publish(Instant::now(), &self.core);
        tracing::debug!(node = self.shared.node_id, "node closed");
        Ok(())
    }
}

impl Drop for Node {
    /// Sends on other threads see the drop as a close: those that had not committed return
    /// [`SendError::Closed`](crate::driver::SendError::Closed). The store (and its lock) is
    /// released when the last send that was filling a message ends; the drop does not wait for
    /// it.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.core.close_producers();
    }
}

/// `now + d`, or a day from now if that cannot be represented (a caller's `Duration::MAX`).
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}
