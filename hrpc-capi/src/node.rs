//! [`HrpcNode`]: what an `hrpc_node*` points to. A [`Node`] plus the one send buffer the C
//! caller may hold, with the rules for when that buffer is committed.
//!
//! Every method takes `&self`: a message callback may call back into the same node (to send),
//! so the parts it may touch are in separate cells. The node itself is borrowed mutably only
//! by the operation that drives it; a nested call that needs it gets [`CapiError::Busy`].

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hrpc_node::{Delivery, Node, NodeConfig, PeerState, SendError, SendReservation, Sender};

use crate::config::hrpc_stats;
use crate::error::CapiError;

/// The longest wait a timeout hint reports, in milliseconds.
pub(crate) const MAX_TIMEOUT_MS: i32 = 1000;

/// A node as C sees it.
#[derive(Debug)]
pub struct HrpcNode {
    node: RefCell<Node>,
    /// The send buffer handed out and not yet committed.
    pending: RefCell<Option<SendReservation>>,
    /// The node's reply handle while a poll is delivering (the node itself is borrowed).
    in_poll: RefCell<Option<Sender>>,
    /// How long a send keeps driving the node on backpressure.
    send_block: Duration,
    /// The fd, fixed for the node's life.
    fd: i32,
    /// The UDP socket's fd.
    socket_fd: i32,
}

impl HrpcNode {
    /// Opens the node.
    pub(crate) fn open(cfg: NodeConfig, send_block: Duration) -> Result<HrpcNode, CapiError> {
        let node = cfg.open()?;
        let fd = node.as_raw_fd();
        let socket_fd = node.socket_fd();
        Ok(HrpcNode {
            node: RefCell::new(node),
            pending: RefCell::new(None),
            in_poll: RefCell::new(None),
            send_block,
            fd,
            socket_fd,
        })
    }

    /// Commits the buffer the caller holds, if any: the start of every call on this node (the
    /// documented commit point), and the end of a message callback.
    pub(crate) fn commit_pending(&self) -> Result<(), CapiError> {
        let Some(r) = self
            .pending
            .try_borrow_mut()
            .ok()
            .and_then(|mut p| p.take())
        else {
            return Ok(());
        };
        let result = match self.node.try_borrow_mut() {
            Ok(mut node) => node.commit(r),
            // Inside a callback: the poll that is running transmits it.
            Err(_) => r.commit(),
        };
        result.map(drop).map_err(CapiError::Send)
    }

    /// Reserves `len` bytes for `peer` and returns a pointer to them, held until the next
    /// commit point. On backpressure outside a callback, drives the node (receiving
    /// acknowledgements, delivering nothing) for up to `send_block`.
    pub(crate) fn reserve(&self, peer: u32, len: usize) -> Result<*mut u8, CapiError> {
        self.commit_pending()?;
        let mut r = self.reserve_waiting(peer, len)?;
        let ptr = r.payload_mut().as_mut_ptr();
        let mut pending = self.pending.try_borrow_mut().map_err(|_| CapiError::Busy)?;
        *pending = Some(r);
        Ok(ptr)
    }

    /// A reservation, after driving the node for up to `send_block` on backpressure (outside
    /// a callback).
    fn reserve_waiting(&self, peer: u32, len: usize) -> Result<SendReservation, CapiError> {
        let deadline = Instant::now() + self.send_block;
        loop {
            match self.try_reserve(peer, len) {
                Ok(r) => return Ok(r),
                Err(CapiError::Send(e)) if e.is_backpressure() && Instant::now() < deadline => {
                    // Not inside a callback (the node would be borrowed): make progress.
                    let Ok(mut node) = self.node.try_borrow_mut() else {
                        return Err(CapiError::Send(e));
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    match node.flush(left.min(Duration::from_millis(2))) {
                        Ok(()) => std::thread::sleep(Duration::from_micros(200)),
                        Err(hrpc_node::NodeError::FlushTimeout { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_reserve(&self, peer: u32, len: usize) -> Result<SendReservation, CapiError> {
        if let Ok(sender) = self.in_poll.try_borrow()
            && let Some(sender) = sender.as_ref()
        {
            return Ok(sender.reserve(peer, len)?);
        }
        let mut node = self.node.try_borrow_mut().map_err(|_| CapiError::Busy)?;
        Ok(node.reserve(peer, len)?)
    }

    /// Commits a copy of `data` for `peer` (waiting as [`HrpcNode::reserve`] does); returns
    /// its seq.
    pub(crate) fn send_copy(&self, peer: u32, data: &[u8]) -> Result<u64, CapiError> {
        self.commit_pending()?;
        let mut r = self.reserve_waiting(peer, data.len())?;
        r.payload_mut().copy_from_slice(data);
        match self.node.try_borrow_mut() {
            Ok(mut node) => Ok(node.commit(r)?),
            Err(_) => Ok(r.commit()?),
        }
    }

    /// One poll: delivers every ready message to `deliver`, committing a buffer the callback
    /// took when it returns. Returns (delivered, whether work is left).
    pub(crate) fn poll(
        &self,
        deliver: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<(usize, bool), CapiError> {
        self.commit_pending()?;
        let mut node = self.node.try_borrow_mut().map_err(|_| CapiError::Busy)?;
        let mut commit_error = None;
        let report = node.poll(&mut |sender, d| {
            if let Ok(mut slot) = self.in_poll.try_borrow_mut()
                && slot.is_none()
            {
                *slot = Some(sender.clone());
            }
            deliver(d);
            if let Err(e) = self.commit_pending() {
                commit_error.get_or_insert(e);
            }
        });
        if let Ok(mut slot) = self.in_poll.try_borrow_mut() {
            *slot = None;
        }
        let report = report?;
        if let Some(e) = commit_error {
            return Err(e);
        }
        Ok((report.delivered, report.more))
    }

    /// Blocks until the node has work or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<(), CapiError> {
        self.commit_pending()?;
        let mut node = self.node.try_borrow_mut().map_err(|_| CapiError::Busy)?;
        Ok(node.wait(timeout)?)
    }

    /// Milliseconds until the node next needs a poll, capped at [`MAX_TIMEOUT_MS`].
    pub(crate) fn timeout_ms(&self) -> Result<i32, CapiError> {
        self.commit_pending()?;
        let node = self.node.try_borrow().map_err(|_| CapiError::Busy)?;
        Ok(match node.poll_timeout() {
            None => MAX_TIMEOUT_MS,
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                // Round up, so a caller sleeping this long finds the timer due.
                let ms = d.as_micros().div_ceil(1000);
                ms.min(MAX_TIMEOUT_MS as u128) as i32
            }
        })
    }

    /// The fd to wait on.
    pub(crate) fn fd(&self) -> i32 {
        self.fd
    }

    /// The UDP socket's fd (what the original `hrpc_init` returned).
    pub(crate) fn socket_fd(&self) -> i32 {
        self.socket_fd
    }

    /// Starts talking to `peer`.
    pub(crate) fn touch(&self, peer: u32) -> Result<(), CapiError> {
        self.commit_pending()?;
        let mut node = self.node.try_borrow_mut().map_err(|_| CapiError::Busy)?;
        if peer == 0 || peer == node.node_id() {
            return Err(SendError::InvalidPeer(peer).into());
        }
        node.touch(peer);
        Ok(())
    }

    /// Whether `peer` was heard from recently.
    pub(crate) fn is_connected(&self, peer: u32) -> Result<bool, CapiError> {
        self.commit_pending()?;
        let node = self.node.try_borrow().map_err(|_| CapiError::Busy)?;
        Ok(node.peer_state(peer) == PeerState::Active)
    }

    /// The seq the next message to `peer` gets.
    pub(crate) fn next_seq(&self, peer: u32) -> Result<u64, CapiError> {
        self.commit_pending()?;
        let node = self.node.try_borrow().map_err(|_| CapiError::Busy)?;
        Ok(node.next_outbound_seq(peer))
    }

    /// Counters.
    pub(crate) fn stats(&self) -> Result<hrpc_stats, CapiError> {
        self.commit_pending()?;
        let node = self.node.try_borrow().map_err(|_| CapiError::Busy)?;
        Ok(hrpc_stats::from_node(&node.stats(), node.unacked()))
    }

    /// Whether a callback of this node is running (closing now would free it under itself).
    pub(crate) fn busy(&self) -> bool {
        self.node.try_borrow_mut().is_err()
    }

    /// Commits the held buffer and closes the node.
    pub(crate) fn close(self, linger: Duration) -> Result<(), CapiError> {
        let committed = self.commit_pending();
        let node = self.node.into_inner();
        node.close(linger)?;
        committed
    }
}
