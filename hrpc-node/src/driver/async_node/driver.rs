//! The driver task: owns the [`Node`], polls it, hands deliveries and events to the
//! [`AsyncNode`](super::AsyncNode), applies commits and releases, and sleeps on the node's fd,
//! its next timer, a commit or room in the delivery queue — never busy-polling.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, oneshot};

use super::AsyncSender;
use super::delivery::{AsyncDelivery, Generations};
use crate::driver::config::{NodeError, SendError};
use crate::driver::node::Node;
use crate::proto::{CallId, Event};

/// A read of the node run by the driver task ([`AsyncNode::inspect`]); it sends its own answer.
pub(super) type Inspection = Box<dyn FnOnce(&Node) + Send>;

/// What deliveries and the [`AsyncNode`] tell the driver task.
pub(super) enum Control {
    /// The application is done with `seq` from `peer`, handed in `generation`.
    Commit {
        peer: u32,
        seq: u64,
        generation: u64,
    },
    /// A delivery from `peer` was dropped without commit: hand the peer's unconsumed messages
    /// again, as `generation`.
    Release { peer: u32, generation: u64 },
    /// Run a read of the node and answer it ([`AsyncNode::inspect`]).
    Inspect(Inspection),
    /// Answer request `seq` from `peer` (handed in `generation`, call `call`) with
    /// `payload`, once every earlier message from the peer is consumed; say how it went.
    Reply {
        peer: u32,
        seq: u64,
        generation: u64,
        call: CallId,
        payload: Vec<u8>,
        answer: oneshot::Sender<Result<u64, SendError>>,
    },
    /// A call's timeout was taken: end the call.
    FinishCall(CallId),
    /// A call's timeout was dropped untaken: hand it again.
    RehandCall(CallId),
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Commit {
                peer,
                seq,
                generation,
            } => f
                .debug_struct("Commit")
                .field("peer", peer)
                .field("seq", seq)
                .field("generation", generation)
                .finish(),
            Control::Release { peer, generation } => f
                .debug_struct("Release")
                .field("peer", peer)
                .field("generation", generation)
                .finish(),
            Control::Inspect(_) => f.write_str("Inspect"),
            Control::Reply {
                peer, seq, call, ..
            } => f
                .debug_struct("Reply")
                .field("peer", peer)
                .field("seq", seq)
                .field("call", call)
                .finish_non_exhaustive(),
            Control::FinishCall(c) => f.debug_tuple("FinishCall").field(c).finish(),
            Control::RehandCall(c) => f.debug_tuple("RehandCall").field(c).finish(),
        }
    }
}

/// The node's epoll fd, as registered with tokio (the [`Node`] itself is not `Sync`, so the
/// driver cannot hold a borrow of it across an await).
#[derive(Debug)]
pub(super) struct EpollFd(pub(super) RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The driver task's state.
pub(super) struct Driver {
    /// Declared before `node`: deregistered before the node closes its fd.
    pub(super) fd: AsyncFd<EpollFd>,
    pub(super) node: Node,
    pub(super) tx: mpsc::Sender<AsyncDelivery>,
    /// The node's events, for [`AsyncNode::next_event`].
    pub(super) events: mpsc::Sender<Event>,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    /// Cloned into each delivery (and keeps `control` open).
    pub(super) control_tx: mpsc::UnboundedSender<Control>,
    pub(super) gens: Generations,
    /// Per peer, the generation the driver hands out now (it follows `gens` in the order of
    /// the releases it processes).
    pub(super) own_gens: FxHashMap<u32, u64>,
    /// Per peer, committed seqs past the first unconsumed one.
    pub(super) commits: FxHashMap<u32, BTreeSet<u64>>,
    /// Per peer, replies waiting for every earlier message from the peer to be consumed.
    pub(super) replies: FxHashMap<u32, BTreeMap<u64, PendingReply>>,
    pub(super) room: Arc<Notify>,
    /// Holds the calls awaited.
    pub(super) sender: AsyncSender,
    /// Last: dropped after the node, so the senders it wakes see the node closed.
    pub(super) _wake: WakeOnExit,
}

/// Wakes the senders waiting for room when the driver task ends, however it ends (they then
/// see the node closed).
pub(super) struct WakeOnExit(pub(super) Arc<Notify>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut close: oneshot::Receiver<Duration>,
    ) -> Result<(), NodeError> {
        let linger = match self.drive(&mut close).await {
            Ok(linger) => linger,
            Err(e) => {
                tracing::debug!(error = %e, "async node driver failed");
                return Err(e);
            }
        };
        // Every commit that was accepted is consumed before the node closes; later ones are
        // refused (`NodeError::Closed`).
        self.control.close();
        self.apply_control()?;
        let Driver { fd, node, .. } = self;
        drop(fd);
        tokio::task::spawn_blocking(move || node.close(linger))
            .await
            .map_err(|e| NodeError::Io(io::Error::other(e)))?
    }

    /// Polls until a close is asked for (returns its linger) or the node fails.
    async fn drive(
        &mut self,
        close: &mut oneshot::Receiver<Duration>,
    ) -> Result<Duration, NodeError> {
        // A commit applied while waiting consumed messages: tell the senders after the poll.
        let mut freed = false;
        loop {
            let consumed =
                self.apply_control()? | self.retry_replies()? | std::mem::take(&mut freed);
            let room = self.tx.capacity();
            let gens = &self.own_gens;
            let tx = &self.tx;
            let control = &self.control_tx;
            let shared_gens = &self.gens;
            let sender = &self.sender;
            let report = self.node.poll_deferred(room, &mut |_, d| {
                let delivery = AsyncDelivery {
                    peer: d.peer,
                    seq: d.seq,
                    payload: d.payload.to_vec(),
                    kind: d.kind,
                    generation: gens.get(&d.peer).copied().unwrap_or(0),
                    done: false,
                    control: control.clone(),
                    gens: shared_gens.clone(),
                };
                // The outcome of a call someone awaits goes to them, unless they stopped
                // waiting.
                let delivery = match sender.waiter(d.kind) {
                    Some(w) => match w.send(delivery) {
                        Ok(()) => return,
                        Err(back) => back,
                    },
                    None => delivery,
                };
                // Room was checked, and only this task sends. If the receiver is gone the
                // delivery is void and the message stays unconsumed in the store.
                if let Err(e) = tx.try_send(delivery) {
                    let mut d = e.into_inner();
                    d.done = true;
                }
            })?;
            if report.received > 0 || consumed {
                self.room.notify_waiters();
            }
            self.forward_events();
            if report.more {
                tokio::task::yield_now().await;
                continue;
            }
            // The queue was full, or filled up: more may be waiting in the store.
            let queue_full = report.delivered >= room;
            let deadline = self.node.poll_timeout();
            let woke = tokio::select! {
                biased;
                linger = &mut *close => {
                    // Dropped without close: no linger.
                    return Ok(linger.unwrap_or(Duration::ZERO));
                }
                // Never `None`: this task holds a sender.
                c = self.control.recv() => c,
                ready = self.fd.readable() => {
                    ready?.clear_ready();
                    None
                }
                () = sleep_until(deadline), if deadline.is_some() => None,
                permit = self.tx.reserve(), if queue_full => {
                    if permit.is_err() {
                        // `AsyncNode` dropped: its close signal is dropped too.
                        return Ok(Duration::ZERO);
                    }
                    None
                }
            };
            if let Some(c) = woke {
                freed = self.apply(c)?;
            }
        }
    }

    /// Moves the node's events to the event queue, as many as it has room for.
    fn forward_events(&mut self) {
        // Only as many as the queue takes: the rest wait in the node, whose own bounded
        // queue drops (and counts, `NodeStats::events_dropped`) what overflows it.
        while self.events.capacity() > 0
            && let Some(e) = self.node.next_event()
        {
            if self.events.try_send(e).is_err() {
                break;
            }
        }
    }

    /// Applies the commits and releases queued so far; returns whether anything was
    /// consumed.
    fn apply_control(&mut self) -> Result<bool, NodeError> {
        let mut consumed = false;
        while let Ok(c) = self.control.try_recv() {
            consumed |= self.apply(c)?;
        }
        Ok(consumed)
    }

    fn apply(&mut self, c: Control) -> Result<bool, NodeError> {
        match c {
            Control::Commit {
                peer,
                seq,
                generation,
            } => {
                if self.own_gens.get(&peer).copied().unwrap_or(0) != generation {
                    // Handed before a release: void, it comes again.
                    return Ok(false);
                }
                // In order with nothing waiting (the usual case): what `advance` would do.
                if seq == self.node.consumed_through(peer) + 1
                    && !self.commits.contains_key(&peer)
                    && !self.replies.contains_key(&peer)
                {
                    self.node.consume(peer, seq)?;
                    return Ok(true);
                }
                self.commits.entry(peer).or_default().insert(seq);
                self.advance(peer)
            }
            Control::Reply {
                peer,
                seq,
                generation,
                call,
                payload,
                answer,
            } => {
                if self.own_gens.get(&peer).copied().unwrap_or(0) != generation {
                    // Void: the request comes again, to be answered then.
                    let _ = answer.send(Err(SendError::NotARequest { peer, seq }));
                    return Ok(false);
                }
                let r = PendingReply {
                    call,
                    payload,
                    answer,
                };
                self.replies.entry(peer).or_default().insert(seq, r);
                self.advance(peer)
            }
            Control::Release { peer, generation } => {
                self.own_gens.insert(peer, generation);
                self.commits.remove(&peer);
                // Their requests come again, to be answered then.
                for (seq, r) in self.replies.remove(&peer).unwrap_or_default() {
                    let _ = r.answer.send(Err(SendError::NotARequest { peer, seq }));
                }
                self.node.redeliver(peer);
                Ok(false)
            }
            Control::Inspect(run) => {
                run(&self.node);
                Ok(false)
            }
            Control::FinishCall(call) => {
                self.node.finish_call(call)?;
                Ok(false)
            }
            Control::RehandCall(call) => {
                self.node.rehand_call(call);
                Ok(false)
            }
        }
    }
}

/// A reply waiting for its turn ([`Control::Reply`]).
pub(super) struct PendingReply {
    call: CallId,
    payload: Vec<u8>,
    answer: oneshot::Sender<Result<u64, SendError>>,
}

impl Driver {
    /// Consumes `peer`'s messages through the last one committed without a gap, committing
    /// each waiting reply when its request is next (so that the reply's commit is the
    /// request's consumption, which recovery can only replay in order). A reply refused as
    /// backpressure waits for the next call. Returns whether anything was consumed.
    pub(super) fn advance(&mut self, peer: u32) -> Result<bool, NodeError> {
        let node = &mut self.node;
        let start = node.consumed_through(peer);
        let mut through = start;
        let commits = self.commits.entry(peer).or_default();
        let replies = self.replies.entry(peer).or_default();
        loop {
            let next = through + 1;
            if commits.remove(&next) {
                through = next;
                continue;
            }
            let Some(r) = replies.remove(&next) else {
                break;
            };
            // Everything before the request first: its reply then consumes it in order.
            node.consume(peer, through)?;
            match node.reply_to(peer, next, r.call, &r.payload) {
                Ok(reply_seq) => {
                    let _ = r.answer.send(Ok(reply_seq));
                    through = next;
                }
                Err(e) if e.is_backpressure() => {
                    replies.insert(next, r);
                    break;
                }
                Err(e) => {
                    // Answered with the error; the request stays unconsumed and is handed
                    // again after a restart.
                    let _ = r.answer.send(Err(e));
                    break;
                }
            }
        }
        // Seqs at or below the cursor (consumed another way) are done with.
        while commits.first().is_some_and(|&s| s <= through) {
            commits.pop_first();
        }
        // No entry is kept for a peer with nothing waiting: `retry_replies` walks them.
        if commits.is_empty() {
            self.commits.remove(&peer);
        }
        if replies.is_empty() {
            self.replies.remove(&peer);
        }
        Ok(node.consume(peer, through)? > 0 || through > start)
    }

    /// Retries the replies refused as backpressure (after a poll that may have freed room).
    pub(super) fn retry_replies(&mut self) -> Result<bool, NodeError> {
        if self.replies.is_empty() {
            return Ok(false);
        }
        let waiting: Vec<u32> = self.replies.keys().copied().collect();
        let mut consumed = false;
        for peer in waiting {
            consumed |= self.advance(peer)?;
        }
        Ok(consumed)
    }
}

/// Sleeps until `deadline` (`None`: for ever; only polled when `Some`).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
