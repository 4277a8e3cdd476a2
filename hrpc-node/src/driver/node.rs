//! [`Node`]: the poll loop around the protocol core, and [`Sender`], the thread-safe send
//! handle.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_store::{Store, StoreConfig, StoreError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::config::{NodeConfig, NodeError, SendError};
use super::udp::{UdpCaps, UdpIo, UdpStats};
use super::wait::wait_fds;
use super::waker::Waker;
use crate::proto::{ConfigError, Core, CoreError, Delivery, Event, PeerInfo, PeerState, Stats};

#[derive(Debug)]
struct Shared {
    producer: hrpc_store::OutboundProducer,
    waker: Waker,
    closed: AtomicBool,
    node_id: u32,
    max_unacked: hrpc_store::SendWindow,
}

/// A cloneable, `Send + Sync` handle that commits messages to the node's store from any
/// thread and wakes the poll loop. Also what a [`Node::poll`] handler sends replies with.
///
/// A send returns once the message is committed to the store (it survives this process being
/// killed from then on; in [`Durability::Sync`](hrpc_store::Durability::Sync) mode, an OS
/// crash after the node's next poll). It never waits for the network.
#[derive(Debug, Clone)]
pub struct Sender {
    shared: Arc<Shared>,
    /// Whether sends must wake the poll thread (false for the handle the poll thread itself
    /// hands to handlers: it transmits right after delivering).
    wake: bool,
}

impl Sender {
    /// Commits a copy of `payload` for `peer`; returns its sequence number.
    pub fn send(&self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        self.send_with(peer, payload.len(), |buf| buf.copy_from_slice(payload))
    }

    /// Zero-copy send: reserves `len` bytes in the store, lets `fill` write the message in
    /// place, then commits it. If `fill` panics nothing is committed (the slot is released).
    ///
    /// A send racing [`Node::close`] (or the node's drop) either committed before the close
    /// (its message is in the store) or returns [`SendError::Closed`] with nothing committed,
    /// even if `fill` was already running: the store refuses the commit. While such a `fill`
    /// runs, the closed node's store stays locked (a new open of the directory gets
    /// [`NodeError::StoreLocked`]), because the slot being filled is in its files.
    /// [`NodeConfig::max_unacked_per_peer`](super::NodeConfig::max_unacked_per_peer) is
    /// checked and counted with the reservation, under the store lock, so concurrent senders
    /// never exceed it.
    pub fn send_with(
        &self,
        peer: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, SendError> {
        let sh = self.check_send(peer, len)?;
        let mut r = sh.producer.reserve_within(peer, len, sh.max_unacked)?;
        fill(r.payload_mut());
        let seq = r.commit()?;
        if self.wake
            && let Err(e) = sh.waker.wake()
        {
            // The message is committed; the poll loop will still find it on its next timeout.
            tracing::debug!(error = %e, "wake-up write failed");
        }
        Ok(seq)
    }

    /// Owned zero-copy send: reserves `len` bytes in the store for `peer` and returns them as
    /// a [`SendReservation`] that borrows nothing, so the caller can keep it (in a struct,
    /// across calls, on another thread) while it fills the payload, then
    /// [`commit`](SendReservation::commit) it or drop it to give the slot back. The same
    /// checks as [`Sender::send_with`]; the reservation counts toward
    /// [`NodeConfig::max_unacked_per_peer`](super::NodeConfig::max_unacked_per_peer) from
    /// now on. Committing through a handle from [`Node::sender`] wakes the poll loop, as a
    /// send would.
    pub fn reserve(&self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        let sh = self.check_send(peer, len)?;
        let slot = sh
            .producer
            .reserve_owned_within(peer, len, sh.max_unacked)?;
        Ok(SendReservation {
            slot,
            sender: self.clone(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.shared.node_id
    }

    /// What every send checks before it reserves: the node is open, the peer is another
    /// node, the message is not over the wire's limit.
    fn check_send(&self, peer: u32, len: usize) -> Result<&Shared, SendError> {
        let sh = &*self.shared;
        if sh.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if peer == 0 || peer == sh.node_id {
            return Err(SendError::InvalidPeer(peer));
        }
        if len > hrpc_wire::MAX_MESSAGE_LEN {
            return Err(SendError::TooLarge {
                len,
                max: hrpc_wire::MAX_MESSAGE_LEN,
            });
        }
        Ok(sh)
    }
}

/// A message slot reserved in the store and being filled in place: the owned form of
/// [`Sender::send_with`], from [`Sender::reserve`] or [`Node::reserve`].
///
/// Nothing is in the store's sequence until [`SendReservation::commit`] (or
/// [`Node::commit`]) returns `Ok(seq)`: the message gets its seq then, and from then on it is
/// as safe as any sent message. Dropping the reservation, or the process dying while it is
/// held, gives the slot back and sends nothing. A close of the node refuses the commit
/// ([`SendError::Closed`]), and while a reservation is held after a close the store stays
/// locked (see [`Node::close`]).
#[derive(Debug)]
pub struct SendReservation {
    slot: hrpc_store::OutboundReservation<'static>,
    sender: Sender,
}

impl SendReservation {
    /// The payload area, exactly the reserved length, inside the store's mapped file.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.slot.payload_mut()
    }

    /// The peer the message goes to.
    pub fn peer(&self) -> u32 {
        self.slot.peer()
    }

    /// The reserved length in bytes.
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.slot.is_empty()
    }

    /// Commits the message; returns its seq. Wakes the poll loop if the reservation came from
    /// a [`Node::sender`] handle. From the poll thread outside a handler, prefer
    /// [`Node::commit`], which also tells the node it has work (so [`Node::wait`] does not
    /// sleep on it); inside a [`Node::poll`] handler this is enough, as for a handler's sends.
    pub fn commit(self) -> Result<u64, SendError> {
        let seq = self.slot.commit()?;
        if self.sender.wake
            && let Err(e) = self.sender.shared.waker.wake()
        {
            tracing::debug!(error = %e, "wake-up write failed");
        }
        Ok(seq)
    }
}

/// A transmit the socket refused (buffer full); its bytes stay in the node's transmit buffer.
#[derive(Debug, Clone, Copy)]
struct PendingTx {
    dst: SocketAddr,
    start: usize,
    end: usize,
    segment_size: Option<usize>,
}

/// Driver-level counters, with the core's and the socket's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The protocol core's counters (messages, retransmissions, drops by reason).
    pub core: Stats,
    /// The socket's counters (syscalls, datagrams, bytes, send errors).
    pub udp: UdpStats,
    /// Calls to [`Node::poll`].
    pub polls: u64,
    /// Messages delivered to handlers (the core's `messages_delivered`).
    pub delivered: u64,
    /// Wake-ups from other threads' sends that the poll loop took.
    pub wakeups: u64,
    /// Events dropped because nobody called [`Node::next_event`] (the core's
    /// `events_dropped`).
    pub events_dropped: u64,
    /// Bytes of half-assembled inbound messages held now (bounded by
    /// [`CoreConfig::max_reassembly_bytes`](crate::proto::CoreConfig::max_reassembly_bytes)).
    pub reassembly_bytes: usize,
}

/// What one [`Node::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Datagrams received.
    pub received: usize,
    /// Messages delivered to the handler.
    pub delivered: usize,
    /// Transmits handed to the socket.
    pub transmits: usize,
    /// Work is left (a budget ran out or the socket is full): poll again without waiting.
    pub more: bool,
}

/// A node: the store, the socket and the protocol core, driven by one thread.
///
/// See the [module docs](super) for the loop and the delivery contract.
#[derive(Debug)]
pub struct Node {
    core: Core,
    io: UdpIo,
    waker: Waker,
    epoll: Epoll,
    shared: Arc<Shared>,
    local_sender: Sender,
    tx_buf: Vec<u8>,
    pending_tx: Option<PendingTx>,
    epoll_wants_write: bool,
    /// Sends from the poll thread (or leftover budgets) since the last poll: do not block.
    dirty: bool,
    fd_drained: bool,
    deliveries_per_poll: usize,
    recv_batches_per_poll: usize,
    transmits_per_poll: usize,
    polls: u64,
    wakeups: u64,
    closed: bool,
}

impl Node {
    /// Opens the store (creating or recovering it), binds the socket, detects GSO/GRO and
    /// prepares the loop. Typed errors: [`NodeError::Config`], [`NodeError::StoreLocked`],
    /// [`NodeError::AddrInUse`], [`NodeError::Bind`], [`NodeError::Store`], [`NodeError::Io`].
    pub fn open(mut cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate()?;
        let now = Instant::now();
        let bind = cfg.bind.unwrap_or(super::config::DEFAULT_BIND);
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
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.shared.node_id
    }

    /// The UDP socket's own fd, for programs that wait on the socket directly (the original C
    /// API's `hrpc_init` returned it). Readable when datagrams arrive; a program that waits on
    /// it alone must also honour [`Node::poll_timeout`] and wakes only for socket input, not for
    /// sends from other threads (use the [`AsRawFd`] epoll fd for those).
    pub fn socket_fd(&self) -> RawFd {
        self.io.as_fd().as_raw_fd()
    }

    /// The socket's bound address (the ephemeral port filled in).
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// What the socket supports (GSO/GRO segments, buffer sizes).
    pub fn udp_caps(&self) -> UdpCaps {
        self.io.caps()
    }

    /// A thread-safe send handle; sends through it wake this node's poll loop.
    pub fn sender(&self) -> Sender {
        Sender {
            shared: self.shared.clone(),
            wake: true,
        }
    }

    /// Commits a copy of `payload` for `peer` (see [`Sender::send`]). It is transmitted by the
    /// next [`Node::poll`].
    pub fn send(&mut self, peer: u32, payload: &[u8]) -> Result<u64, SendError> {
        let seq = self.local_sender.send(peer, payload)?;
        self.dirty = true;
        Ok(seq)
    }

    /// Zero-copy send from the poll thread (see [`Sender::send_with`]).
    pub fn send_with(
        &mut self,
        peer: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, SendError> {
        // Only a committed message is work for the next poll: a refused send
        // (backpressure) must not make `wait` return at once.
        let seq = self.local_sender.send_with(peer, len, fill)?;
        self.dirty = true;
        Ok(seq)
    }

    /// Owned zero-copy send from the poll thread (see [`Sender::reserve`]): the reservation
    /// can be kept across calls, even across [`Node::poll`]. Commit it with [`Node::commit`]
    /// (or, inside a poll handler, [`SendReservation::commit`]).
    pub fn reserve(&mut self, peer: u32, len: usize) -> Result<SendReservation, SendError> {
        self.local_sender.reserve(peer, len)
    }

    /// Commits a reservation (from this node or any of its senders) and marks the node as
    /// having work, so the next [`Node::wait`] returns at once and [`Node::poll`] transmits
    /// the message. Returns its seq.
    pub fn commit(&mut self, reservation: SendReservation) -> Result<u64, SendError> {
        let seq = reservation.commit()?;
        self.dirty = true;
        Ok(seq)
    }

    /// Does all ready work without blocking: receives what the socket holds, persists it
    /// (one group commit), calls `handler` for each ready message in order per peer, runs due
    /// timers and transmits. `handler` gets a [`Sender`] it may reply with.
    ///
    /// Errors are fatal store or socket failures; the node should then be closed.
    pub fn poll<H>(&mut self, handler: &mut H) -> Result<PollReport, NodeError>
    where
        H: FnMut(&Sender, Delivery<'_>),
    {
        if self.closed {
            return Err(NodeError::Closed);
        }
        self.polls += 1;
        let mut report = PollReport::default();
        let woken = self.waker.take();
        if woken {
            self.wakeups += 1;
            if !self.fd_drained {
                self.waker.drain()?;
            }
        }
        self.fd_drained = false;
        self.dirty = false;
        let mut now = Instant::now();

        // 1. Receive.
        (report.received, report.more) = self.receive(now);
        if report.received > 0 {
            now = Instant::now();
        }

        // 2. Group commit before anything is acknowledged or transmitted.
        self.core.sync().map_err(core_error)?;

        // 3. Deliver.
        let sender = &self.local_sender;
        let delivered = self
            .core
            .deliver(self.deliveries_per_poll, &mut |d| handler(sender, d))
            .map_err(core_error)?;
        report.delivered = delivered;
        if delivered >= self.deliveries_per_poll {
            report.more = true;
        }

        // 4. Timers.
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }

        // 5. Transmit.
        let (sent, more_tx) = self.transmit(now)?;
        report.transmits = sent;
        report.more |= more_tx;

        if !woken && report == PollReport::default() && !self.fd_drained {
            // A spurious readiness (a wake whose flag was taken before its write landed):
            // clear the fd so external epoll loops do not spin.
            self.waker.drain()?;
        }
        self.dirty |= report.more;
        Ok(report)
    }

    fn io_budget_exhausted(&self, received: usize) -> bool {
        // Bound one poll's receive work so delivery and transmission keep pace.
        received >= self.recv_batches_per_poll * super::udp::RECV_BATCH * 8
    }

    /// Flushes a refused transmit, then drains the core's transmits into the socket.
    /// Returns (transmits sent, whether work is left).
    fn transmit(&mut self, now: Instant) -> Result<(usize, bool), NodeError> {
        let mut sent = 0;
        if let Some(p) = self.pending_tx.take() {
            if !self.flush_pending(p) {
                return Ok((0, false));
            }
            sent += 1;
        }
        for _ in 0..self.transmits_per_poll {
            let Some(t) = self.core.poll_transmit(now, &mut self.tx_buf) else {
                self.set_want_write(false)?;
                return Ok((sent, false));
            };
            let p = PendingTx {
                dst: t.dst,
                start: 0,
                end: t.len.min(self.tx_buf.len()),
                segment_size: t.segment_size,
            };
            if !self.flush_pending(p) {
                self.set_want_write(true)?;
                return Ok((sent, false));
            }
            sent += 1;
        }
        Ok((sent, true))
    }

    /// Sends what is left of `p`; keeps it pending and returns false when the socket is full.
    fn flush_pending(&mut self, mut p: PendingTx) -> bool {
        while p.start < p.end {
            let bytes = self.tx_buf.get(p.start..p.end).unwrap_or_default();
            match self.io.send(p.dst, bytes, p.segment_size) {
                Ok(n) if n > 0 => p.start += n,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending_tx = Some(p);
                    return false;
                }
                Err(e) => {
                    // Dropped like a lost datagram; the protocol retransmits.
                    tracing::debug!(dst = %p.dst, error = %e, "transmit dropped");
                    break;
                }
            }
        }
        true
    }

    fn set_want_write(&mut self, want: bool) -> Result<(), NodeError> {
        if want != self.epoll_wants_write {
            let flags = if want {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut ev = EpollEvent::new(flags, 0);
            self.epoll
                .modify(self.io.fd(), &mut ev)
                .map_err(io::Error::from)?;
            self.epoll_wants_write = want;
        }
        Ok(())
    }

    /// When the node next needs [`Node::poll`] even if nothing arrives: `Some(now)` if work is
    /// left, the core's next timer otherwise (`None` = only on socket or wake-up activity).
    /// Like the seed's `hrpc_once_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.dirty {
            return Some(Instant::now());
        }
        self.core.poll_timeout()
    }

    /// Blocks until a datagram arrives, another thread's [`Sender`] wakes the node, the socket
    /// can take a refused transmit, the next timer is due, or `timeout` passes (`None` = no
    /// limit but the node's own timers). Returns at once when work is left. Does not spin.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<(), NodeError> {
        if self.closed {
            return Err(NodeError::Closed);
        }
        let now = Instant::now();
        let limit = match (self.poll_timeout(), timeout) {
            (Some(d), Some(t)) => Some(d.saturating_duration_since(now).min(t)),
            (Some(d), None) => Some(d.saturating_duration_since(now)),
            (None, t) => t,
        };
        if limit.is_some_and(|l| l.is_zero()) {
            return Ok(());
        }
        let r = wait_fds(
            self.io.fd(),
            self.pending_tx.is_some(),
            Some(self.waker.fd()),
            limit,
        )?;
        if r.woken {
            self.waker.drain()?;
            self.fd_drained = true;
        }
        Ok(())
    }

    /// Marks `peer` as one to contact: resolves its address and starts heartbeats (the seed's
    /// `hrpc_touch_connect`).
    pub fn touch(&mut self, peer: u32) {
        self.dirty = true;
        self.core.touch(peer, Instant::now());
    }

    /// Liveness of `peer` (the seed's `hrpc_is_connected` is `== PeerState::Active`).
    pub fn peer_state(&self, peer: u32) -> PeerState {
        self.core.peer_state(peer)
    }

    /// Per-peer figures (address, epoch, RTT, window, queued messages), if the peer is known.
    pub fn peer_info(&self, peer: u32) -> Option<PeerInfo> {
        self.core.peer_info(peer)
    }

    /// The next peer event (state changes, resets), oldest first.
    pub fn next_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            core: self.core.stats().clone(),
            udp: self.io.stats(),
            polls: self.polls,
            delivered: self.core.stats().messages_delivered,
            wakeups: self.wakeups,
            events_dropped: self.core.stats().events_dropped,
            reassembly_bytes: self.core.reassembly_bytes(),
        }
    }

    /// The seq the next message to `peer` will get (1 for a peer never sent to): every seq
    /// below it was handed out by a send that returned `Ok`. It never goes back, across
    /// restarts too (a store damaged while stopped is refused, or, with
    /// [`NodeConfig::recover_damaged`], keeps its numbering and reports the loss). It says
    /// nothing about delivery: see [`Node::is_acked`] and [`Node::flush`].
    pub fn next_outbound_seq(&self, peer: u32) -> u64 {
        self.core
            .store()
            .outbound_pending(peer)
            .map_or(1, |(_, next)| next)
    }

    /// Every message to `peer` with a seq at or below the returned one was persisted by the
    /// peer (it acknowledged it, or it was discarded and the peer told); they are gone from
    /// this node's store. 0 if none.
    pub fn acked_through(&self, peer: u32) -> u64 {
        match self.core.store().outbound_pending(peer) {
            Some((lowest, _)) => lowest - 1,
            None => 0,
        }
    }

    /// Whether message `seq` to `peer` (a seq a send returned) was persisted by the peer.
    pub fn is_acked(&self, peer: u32, seq: u64) -> bool {
        seq != 0 && seq <= self.acked_through(peer)
    }

    /// Messages committed to any peer and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let store = self.core.store();
        store
            .peers()
            .into_iter()
            .filter_map(|p| store.outbound_pending(p))
            .map(|(lowest, next)| next - lowest)
            .sum()
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

    /// Hands what the socket holds to the core, within the per-poll budget.
    /// Returns the datagrams received and whether the budget ran out.
    fn receive(&mut self, now: Instant) -> (usize, bool) {
        let mut received = 0;
        for _ in 0..self.recv_batches_per_poll {
            let core = &mut self.core;
            match self
                .io
                .recv_batch(|from, d| core.handle_datagram(now, from, d))
            {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    break;
                }
            }
            if self.io_budget_exhausted(received) {
                return (received, true);
            }
        }
        (received, false)
    }

    /// One round of receive, group commit, timers and transmit, with no delivery.
    fn step_without_delivery(&mut self, now: Instant) -> Result<(), NodeError> {
        self.receive(now);
        self.core.sync().map_err(core_error)?;
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.transmit(now)?;
        Ok(())
    }

    /// Gives up on the messages to `peer` that are not yet acknowledged, up to seq `through`:
    /// they are freed from the store, and the peer is told they will never come (it reports
    /// [`Event::Lost`](crate::Event::Lost) for those it had not received, then goes on with
    /// the later ones). Returns the range given up, `None` if nothing was pending at or below
    /// `through`. For a peer that is gone for good, or messages that lost their meaning.
    pub fn discard(
        &mut self,
        peer: u32,
        through: u64,
    ) -> Result<Option<std::ops::RangeInclusive<u64>>, NodeError> {
        self.dirty = true;
        self.core
            .discard(peer, through, Instant::now())
            .map_err(core_error)
    }

    /// What opening the store found: damage (with [`NodeConfig::recover_damaged`]), the
    /// outbound ranges lost with it, and the slots recovery freed.
    pub fn open_report(&self) -> &hrpc_store::OpenReport {
        self.core.store().open_report()
    }

    /// The store (inspection: usage, per-peer report).
    pub fn store(&self) -> &Store {
        self.core.store()
    }

    /// Graceful close: refuses further sends, transmits what the socket takes within `linger`
    /// (acknowledgements owed to peers, queued messages), makes the store durable and releases
    /// it. Unacknowledged messages stay in the store for the next open.
    ///
    /// Sends on other threads see the close at once: from the start of `close`, a send that
    /// has not committed — even one whose fill callback is running — returns
    /// [`SendError::Closed`]. `close` then waits, up to the end of `linger`, for such sends to
    /// finish, so that when it returns the directory can be opened again. A send still filling
    /// after that keeps the store locked ([`NodeError::StoreLocked`] for a new open) until its
    /// fill returns; nothing is ever written into the store after the lock is released.
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
        tracing::debug!(node = self.shared.node_id, "node closed");
        Ok(())
    }
}

impl Drop for Node {
    /// Sends on other threads see the drop as a close: those that had not committed return
    /// [`SendError::Closed`]. The store (and its lock) is released when the last send that
    /// was filling a message ends; the drop does not wait for it.
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

impl AsRawFd for Node {
    /// An epoll fd that is readable when the node has socket input or a wake-up (and, while a
    /// transmit waits for buffer space, when the socket is writable). For users who run their
    /// own epoll/mio loop: call [`Node::poll`] when it is readable or [`Node::poll_timeout`]
    /// has passed.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

fn core_error(e: CoreError) -> NodeError {
    match e {
        CoreError::Store(StoreError::Locked { path }) => NodeError::StoreLocked { path },
        CoreError::Store(s) => NodeError::Store(s),
        CoreError::Config(e) => NodeError::Config(e),
        e => NodeError::Core(e),
    }
}
