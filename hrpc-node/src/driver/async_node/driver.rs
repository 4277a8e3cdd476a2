//! The driver task: owns the [`Node`], polls it, hands deliveries and events to the
//! [`AsyncNode`](super::AsyncNode), applies commits and releases, and sleeps on the node's fd,
//! its next timer, a commit or room in the delivery queue — never busy-polling.

use std::collections::BTreeSet;
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
use crate::driver::config::NodeError;
use crate::driver::node::Node;
use crate::proto::{CallId, Event, MessageKind};

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
    pub(super) room: Arc<Notify>,
    /// Given to requests (to reply with) and holding the calls awaited.
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
            let consumed = self.apply_control()? || std::mem::take(&mut freed);
            let room = self.tx.capacity();
            let gens = &self.own_gens;
            let tx = &self.tx;
            let control = &self.control_tx;
            let shared_gens = &self.gens;
            let sender = &self.sender;
            let report = self.node.poll_deferred(room, &mut |_, d| {
                let is_request = matches!(d.kind, MessageKind::Request { .. });
                let delivery = AsyncDelivery {
                    peer: d.peer,
                    seq: d.seq,
                    payload: d.payload.to_vec(),
                    kind: d.kind,
                    generation: gens.get(&d.peer).copied().unwrap_or(0),
                    done: false,
                    control: control.clone(),
                    gens: shared_gens.clone(),
                    sender: is_request.then(|| sender.clone()),
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
                let node = &mut self.node;
                let set = self.commits.entry(peer).or_default();
                set.insert(seq);
                let mut through = node.consumed_through(peer);
                while set.remove(&(through + 1)) {
                    through += 1;
                }
                // Seqs at or below the cursor (consumed another way) are done with.
                *set = set.split_off(&(through + 1));
                Ok(node.consume(peer, through)? > 0)
            }
            Control::Release { peer, generation } => {
                self.own_gens.insert(peer, generation);
                self.commits.remove(&peer);
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

/// Sleeps until `deadline` (`None`: for ever; only polled when `Some`).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
