//! Request/response on the send side: [`Sender::call`] commits a request with its outstanding
//! call, [`Sender::reply`] commits a response that consumes its request in the same store
//! operation. Responses and timeouts reach the caller through the poll handler
//! ([`MessageKind::Response`], [`MessageKind::CallTimedOut`]).

use std::time::Duration;

use super::sender::Sender;
use super::{Node, core_error};
use crate::driver::config::{NodeError, SendError};
use crate::proto::write_call;
use crate::proto::{CALL_ENVELOPE_LEN, CallId, Delivery, MessageKind, unix_ms_now};

/// Why a call returned no response ([`Node::call_and_wait`], and `AsyncSender::call` with the
/// `tokio` feature).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be committed (nothing was sent).
    #[error("the request was refused")]
    Send(#[from] SendError),
    /// No response came before the deadline; one that comes later is dropped. The call is
    /// over.
    #[error("{0} timed out")]
    TimedOut(CallId),
    /// The node closed, failed, or its driver stopped while the call was outstanding: the
    /// call stays in the store, and its outcome is handed out (naming the call) once the
    /// store is reopened.
    #[error("{0} is still outstanding: the node closed")]
    Closed(CallId),
}

impl Sender {
    /// Calls `peer`: commits a request carrying `payload` and, in the same store operation,
    /// the outstanding call, which survives restarts of this process. Returns the call's id.
    ///
    /// The call ends exactly once, through the poll handler: a delivery of kind
    /// [`MessageKind::Response`] with the callee's reply, or, if none came within `timeout`
    /// (counted on the wall clock, so across restarts too), one of kind
    /// [`MessageKind::CallTimedOut`]; a response arriving after that is dropped. Either is
    /// handed again after a crash until the handler has returned from it. The request itself
    /// is delivered to the callee once, as [`MessageKind::Request`].
    ///
    /// Errors as [`Sender::send`]; the request's length counts its 9-byte envelope.
    pub fn call(&self, peer: u32, payload: &[u8], timeout: Duration) -> Result<CallId, SendError> {
        let id = self.new_call_id();
        self.call_as(id, peer, payload, timeout)?;
        Ok(id)
    }

    /// A fresh call id of this node's store, for [`Sender::call_as`].
    pub(crate) fn new_call_id(&self) -> CallId {
        CallId(self.shared.producer.new_call_id())
    }

    /// [`Sender::call`] under an id taken beforehand (so that whoever waits for the outcome
    /// can be registered before the request can leave).
    pub(crate) fn call_as(
        &self,
        id: CallId,
        peer: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), SendError> {
        let len = CALL_ENVELOPE_LEN + payload.len();
        let sh = self.check_send(peer, len)?;
        let mut r = sh.producer.reserve_within(peer, len, sh.max_unacked)?;
        write_call(r.payload_mut(), false, id, payload);
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        r.commit_request(id.0, unix_ms_now().saturating_add(ms))?;
        self.wake_poll();
        Ok(())
    }

    /// Answers the request `request` (a delivery of kind [`MessageKind::Request`]) with
    /// `payload`. Committing the reply consumes the request in the same store operation:
    /// once this returns, a crash never hands the request again and the reply is sent,
    /// whatever happens to the process. Returns the reply's seq.
    ///
    /// Replies go in the order the requests from that peer were delivered (the usual case
    /// in a [`Node::poll`] handler); a reply to a later request while an earlier message from
    /// the same peer is still unconsumed (with [`Node::poll_deferred`]) is sent, but consumes
    /// its request atomically only once the earlier ones are consumed.
    ///
    /// [`SendError::NotARequest`] for any other delivery; otherwise errors as
    /// [`Sender::send`].
    pub fn reply(&self, request: &Delivery<'_>, payload: &[u8]) -> Result<u64, SendError> {
        let MessageKind::Request { call } = request.kind else {
            return Err(SendError::NotARequest {
                peer: request.peer,
                seq: request.seq,
            });
        };
        self.reply_to(request.peer, request.seq, call, payload)
    }

    /// [`Sender::reply`] for a request known by its parts (kept from a delivery for a later
    /// answer): `peer` made call `call`, delivered here as inbound message `request_seq`.
    pub fn reply_to(
        &self,
        peer: u32,
        request_seq: u64,
        call: CallId,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        if request_seq == 0 {
            return Err(SendError::NotARequest {
                peer,
                seq: request_seq,
            });
        }
        let len = CALL_ENVELOPE_LEN + payload.len();
        let sh = self.check_send(peer, len)?;
        // Replies are not held back by the send window: the request already took its place
        // in the peer's flow, and a callee that cannot answer would stall its caller.
        let mut r = sh.producer.reserve(peer, len)?;
        write_call(r.payload_mut(), true, call, payload);
        let seq = r.commit_reply(request_seq)?;
        self.wake_poll();
        Ok(seq)
    }
}

impl Node {
    /// Ends `call`, whose timeout ([`MessageKind::CallTimedOut`]) [`Node::poll_deferred`]
    /// handed out: it is not handed again, even after a restart. ([`Node::poll`] ends a
    /// timeout itself once its handler returns, as it consumes messages.) Returns whether the
    /// call was outstanding.
    pub fn finish_call(&mut self, call: CallId) -> Result<bool, NodeError> {
        if self.closed {
            return Err(NodeError::Closed);
        }
        self.core.finish_call(call).map_err(core_error)
    }

    /// Hands the timeout of `call` again on a later [`Node::poll_deferred`] (its handler gave
    /// up on it), as [`Node::redeliver`] does for messages.
    pub fn rehand_call(&mut self, call: CallId) {
        self.core.rehand_call(call);
        self.dirty = true;
    }

    /// Calls `peer` and drives the node until the outcome: returns the response's payload,
    /// or [`CallError::TimedOut`] once `timeout` passed without one. Meanwhile every other
    /// delivery goes to `handler`, as in [`Node::poll`] (which this calls, waiting between
    /// polls; the call's deadline bounds the wait). The response is consumed, and the call
    /// ended, as this returns: from then on neither is handed again, even after a crash.
    ///
    /// A fatal node error is returned as [`CallError::Closed`] (the call stays outstanding in
    /// the store; after a reopen its outcome is handed to [`Node::poll`]'s handler).
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use hrpc_node::{MessageKind, NodeConfig};
    /// # let dir = tempfile::tempdir()?;
    /// let mut server = NodeConfig::new(dir.path().join("server"), 1)
    ///     .bind("127.0.0.1:0".parse()?)
    ///     .open()?;
    /// let mut client = NodeConfig::new(dir.path().join("client"), 2)
    ///     .peer(1, server.local_addr())
    ///     .open()?;
    /// // The server answers on its own thread.
    /// let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    /// let halt = stop.clone();
    /// let t = std::thread::spawn(move || {
    ///     while !halt.load(std::sync::atomic::Ordering::Relaxed) {
    ///         server
    ///             .poll(&mut |s, d| {
    ///                 if let MessageKind::Request { .. } = d.kind {
    ///                     let _ = s.reply(&d, b"pong");
    ///                 }
    ///             })
    ///             .expect("poll");
    ///         server.wait(Some(Duration::from_millis(5))).expect("wait");
    ///     }
    /// });
    /// let answer = client.call_and_wait(1, b"ping", Duration::from_secs(10), &mut |_, _| {})?;
    /// assert_eq!(answer, b"pong");
    /// stop.store(true, std::sync::atomic::Ordering::Relaxed);
    /// t.join().expect("server thread");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_and_wait<H>(
        &mut self,
        peer: u32,
        payload: &[u8],
        timeout: Duration,
        handler: &mut H,
    ) -> Result<Vec<u8>, CallError>
    where
        H: FnMut(&Sender, Delivery<'_>),
    {
        let id = self.call(peer, payload, timeout)?;
        let mut outcome: Option<Result<Vec<u8>, CallError>> = None;
        while outcome.is_none() {
            let r = self.poll(&mut |s: &Sender, d: Delivery<'_>| match d.kind {
                MessageKind::Response { call } if call == id => {
                    outcome = Some(Ok(d.payload.to_vec()));
                }
                MessageKind::CallTimedOut { call } if call == id => {
                    outcome = Some(Err(CallError::TimedOut(id)));
                }
                _ => handler(s, d),
            });
            let more = match r {
                Ok(r) => r.more,
                Err(e) => {
                    tracing::warn!(error = %e, %id, "node failed while waiting for a call");
                    return Err(CallError::Closed(id));
                }
            };
            if outcome.is_none()
                && !more
                && let Err(e) = self.wait(None)
            {
                tracing::warn!(error = %e, %id, "node failed while waiting for a call");
                return Err(CallError::Closed(id));
            }
        }
        outcome.unwrap_or(Err(CallError::Closed(id)))
    }

    /// [`Sender::call`] from the poll thread; the request is transmitted by the next
    /// [`Node::poll`].
    pub fn call(
        &mut self,
        peer: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<CallId, SendError> {
        let id = self.local_sender.call(peer, payload, timeout)?;
        self.dirty = true;
        Ok(id)
    }

    /// [`Sender::reply_to`] from the poll thread, for a request handed by
    /// [`Node::poll_deferred`] and answered later. Consumes the request (and, as
    /// [`Node::consume`], every earlier one from the peer) once the reply is committed.
    pub fn reply_to(
        &mut self,
        peer: u32,
        request_seq: u64,
        call: CallId,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        let seq = self
            .local_sender
            .reply_to(peer, request_seq, call, payload)?;
        self.dirty = true;
        if let Err(e) = self.consume(peer, request_seq) {
            // The reply is committed and consumes the request at the next open; nothing to
            // undo. The poll loop reports a store failure itself.
            tracing::warn!(peer, seq = request_seq, error = %e, "consuming an answered request failed");
        }
        Ok(seq)
    }
}
