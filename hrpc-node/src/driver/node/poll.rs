//! The poll loop: receive, group commit, acknowledge, deliver, timers and transmit within
//! per-poll budgets ([`Node::poll`]), and waiting for the next reason to poll ([`Node::wait`]).
//!
//! Nothing is acknowledged or transmitted before the group commit of what was received; what
//! was received is acknowledged before the handler runs (an ack means persisted, not handled). A
//! transmit the socket refuses stays pending in the node's transmit buffer and is sent first
//! on the next poll, with the epoll fd watching for writability meanwhile.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::sender::Sender;
use super::{Node, core_error};
use crate::driver::config::NodeError;
use crate::driver::udp::RECV_BATCH;
use crate::driver::wait::wait_fds;
use crate::proto::{Delivery, unix_ms_now};

/// A transmit the socket refused (buffer full); its bytes stay in the node's transmit buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingTx {
    dst: SocketAddr,
    start: usize,
    end: usize,
    segment_size: Option<usize>,
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

impl Node {
    /// Does all ready work without blocking: receives what the socket holds, persists it
    /// (one group commit), calls `handler` for each ready message in order per peer, runs due
    /// timers and transmits. `handler` gets a [`Sender`] it may reply with.
    ///
    /// Errors are fatal store or socket failures; the node should then be closed.
    ///
    /// Runs in a debug-level `tracing` span `poll` (field `node`). With the `metrics` feature,
    /// publishes the node's metrics when `NodeConfig::metrics_interval` has passed since the
    /// last publication.
    pub fn poll<H>(&mut self, handler: &mut H) -> Result<PollReport, NodeError>
    where
        H: FnMut(&Sender, Delivery<'_>),
    {
        self.poll_inner(self.deliveries_per_poll, true, handler)
    }

    /// [`Node::poll`] for handlers that finish with a message later: each message is handed
    /// to `handler` (at most `max` this call, within the per-poll budget) **without being
    /// consumed**. It is not handed again (unless [`Node::redeliver`]) and stays in the store
    /// until [`Node::consume`] covers it; a crash or a close before that delivers it again
    /// after the restart. A gap marker ([`Event::Lost`](crate::Event::Lost)) from a peer waits
    /// until everything handed before it is consumed. A later [`Node::poll`] hands the
    /// unconsumed messages again first (and consumes them).
    pub fn poll_deferred<H>(&mut self, max: usize, handler: &mut H) -> Result<PollReport, NodeError>
    where
        H: FnMut(&Sender, Delivery<'_>),
    {
        self.poll_inner(max, false, handler)
    }

    /// Consumes the messages from `peer` handed by [`Node::poll_deferred`], in order, from the
    /// first unconsumed one through `through` (at most through the last one handed). Returns
    /// how many were consumed. Once consumed a message is never delivered again.
    pub fn consume(&mut self, peer: u32, through: u64) -> Result<u64, NodeError> {
        if self.closed {
            return Err(NodeError::Closed);
        }
        let n = self.core.consume(peer, through).map_err(core_error)?;
        if n > 0 {
            // The receive window reopened: the next poll may owe the peer an ack.
            self.dirty = true;
        }
        Ok(n)
    }

    /// Hands the unconsumed messages from `peer` again, from the first unconsumed one, on the
    /// next [`Node::poll_deferred`] (for a handler that gave up on what it was handed).
    pub fn redeliver(&mut self, peer: u32) {
        self.core.redeliver(peer);
        self.dirty = true;
    }

    /// The last seq from `peer` consumed (0 if none, or the peer is unknown).
    pub fn consumed_through(&self, peer: u32) -> u64 {
        self.core.consumed_through(peer)
    }

    fn poll_inner<H>(
        &mut self,
        max: usize,
        consume_now: bool,
        handler: &mut H,
    ) -> Result<PollReport, NodeError>
    where
        H: FnMut(&Sender, Delivery<'_>),
    {
        if self.closed {
            return Err(NodeError::Closed);
        }
        let _span = tracing::debug_span!("poll", node = self.shared.node_id).entered();
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

        // 3. What arrived is persisted: acknowledge it before the handler runs, so the
        // sender's round trip does not include the application's time.
        let sent_early = if report.received > 0 {
            self.transmit(now)?.0
        } else {
            0
        };

        // 4. Deliver.
        let sender = &self.local_sender;
        let max = max.min(self.deliveries_per_poll);
        let f = &mut |d: Delivery<'_>| handler(sender, d);
        let mut delivered = if consume_now {
            self.core.deliver(max, f)
        } else {
            self.core.deliver_deferred(max, f)
        }
        .map_err(core_error)?;
        // Calls past their deadline, after the responses that beat it.
        if delivered < max {
            delivered += self
                .core
                .deliver_timeouts(unix_ms_now(), max - delivered, consume_now, f)
                .map_err(core_error)?;
        }
        report.delivered = delivered;
        if delivered >= self.deliveries_per_poll {
            report.more = true;
        }

        // 5. Timers.
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }

        // 6. Transmit.
        let (sent, more_tx) = self.transmit(now)?;
        report.transmits = sent_early + sent;
        report.more |= more_tx;

        if !woken && report == PollReport::default() && !self.fd_drained {
            // A spurious readiness (a wake whose flag was taken before its write landed):
            // clear the fd so external epoll loops do not spin.
            self.waker.drain()?;
        }
        self.dirty |= report.more;
        #[cfg(feature = "metrics")]
        self.metrics.maybe_publish(now, &self.core);
        Ok(report)
    }

    fn io_budget_exhausted(&self, received: usize) -> bool {
        // Bound one poll's receive work so delivery and transmission keep pace.
        received >= self.recv_batches_per_poll * RECV_BATCH * 8
    }

    /// Flushes a refused transmit, then drains the core's transmits into the socket.
    /// Returns (transmits sent, whether work is left).
    pub(super) fn transmit(&mut self, now: Instant) -> Result<(usize, bool), NodeError> {
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
        let timer = self.core.poll_timeout();
        // A call's deadline is kept on the wall clock; a far one that no `Instant` can hold
        // is no reason to wake.
        let call = self.core.next_call_deadline().and_then(|d| {
            Instant::now().checked_add(Duration::from_millis(d.saturating_sub(unix_ms_now())))
        });
        match (timer, call) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        }
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

    /// Hands what the socket holds to the core, within the per-poll budget.
    /// Returns the datagrams received and whether the budget ran out.
    pub(super) fn receive(&mut self, now: Instant) -> (usize, bool) {
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
    pub(super) fn step_without_delivery(&mut self, now: Instant) -> Result<(), NodeError> {
        self.receive(now);
        self.core.sync().map_err(core_error)?;
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.transmit(now)?;
        Ok(())
    }
}
