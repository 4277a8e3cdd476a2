//! Request/response: the call envelope, what a delivery is, and handing out responses and
//! timeouts.
//!
//! A request and a response are ordinary messages of the per-peer stream, flagged as calls
//! ([`hrpc_wire::DATA_FLAG_CALL`] on the wire, [`hrpc_store::FLAG_CALL`] in the store), whose
//! payload starts with a 9-byte envelope: the kind (1 request, 2 response) and the call id
//! (u64, little-endian). The caller's store holds each outstanding call
//! ([`hrpc_store::PendingCall`]) until the application has taken its response or its timeout;
//! a response that finds no outstanding call from that peer (a repeat after a crash, or one
//! that came after the timeout) is consumed without being handed out. The callee's reply is
//! committed with [`OutboundReservation::commit_reply`](hrpc_store::OutboundReservation::commit_reply),
//! which makes it the commit point of the request's consumption.

use std::fmt;

use super::{Core, CoreError, Delivery};

/// Bytes of the envelope in front of a call message's payload.
pub const CALL_ENVELOPE_LEN: usize = 9;
const ENVELOPE_REQUEST: u8 = 1;
const ENVELOPE_RESPONSE: u8 = 2;

/// Identifies one call of the calling node: unique in its store, kept across restarts.
///
/// Its outcome names it: here two calls to a peer that never answers time out.
///
/// ```
/// use std::time::{Duration, Instant};
/// use hrpc_node::{MessageKind, NodeConfig};
///
/// let dir = tempfile::tempdir()?;
/// let mut node = NodeConfig::new(dir.path().join("client"), 2).open()?;
/// let first = node.call(1, b"status?", Duration::from_millis(20))?;
/// let second = node.call(1, b"status?", Duration::from_millis(20))?;
/// assert_ne!(first, second);
///
/// let mut timed_out = Vec::new();
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while timed_out.len() < 2 && Instant::now() < deadline {
///     node.poll(&mut |_, d| {
///         if let MessageKind::CallTimedOut { call } = d.kind {
///             assert_eq!((d.seq, d.payload), (0, &b""[..]));
///             timed_out.push(call);
///         }
///     })?;
///     node.wait(Some(Duration::from_millis(5)))?;
/// }
/// timed_out.sort();
/// assert_eq!(timed_out, [first.min(second), first.max(second)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {:#x}", self.0)
    }
}

/// What a [`Delivery`] is.
///
/// A handler tells plain messages from requests, and a caller its responses from its timeouts:
///
/// ```
/// use std::time::{Duration, Instant};
/// use hrpc_node::{MessageKind, NodeConfig};
///
/// let dir = tempfile::tempdir()?;
/// let mut server = NodeConfig::new(dir.path().join("server"), 1).open()?;
/// let mut client = NodeConfig::new(dir.path().join("client"), 2)
///     .peer(1, server.local_addr())
///     .open()?;
/// client.send(1, b"hello")?;
/// let call = client.call(1, b"2+2", Duration::from_secs(5))?;
///
/// let mut seen = Vec::new();
/// let mut answer = None;
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while answer.is_none() && Instant::now() < deadline {
///     server.poll(&mut |s, d| {
///         seen.push(d.kind);
///         if let MessageKind::Request { .. } = d.kind {
///             // Committing the reply also consumes the request.
///             s.reply(&d, b"4").expect("reply committed");
///         }
///     })?;
///     client.poll(&mut |_, d| match d.kind {
///         MessageKind::Response { call: c } if c == call => answer = Some(d.payload.to_vec()),
///         MessageKind::CallTimedOut { .. } => panic!("no answer in time"),
///         _ => {}
///     })?;
///     client.wait(Some(Duration::from_millis(1)))?;
/// }
/// assert_eq!(seen, [MessageKind::Message, MessageKind::Request { call }]);
/// assert_eq!(answer.as_deref(), Some(&b"4"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A message sent with `send`.
    #[default]
    Message,
    /// A request made with `call`: answer it with `reply` (which consumes it in the same
    /// store operation), or let the handler return to consume it unanswered.
    Request {
        /// The caller's call id, to be echoed by the reply.
        call: CallId,
    },
    /// The response to a call this node made, once per call.
    Response {
        /// The call it answers.
        call: CallId,
    },
    /// A call this node made got no response before its deadline: its response, if one
    /// comes later, is dropped. Such a delivery has `seq` 0 and an empty payload.
    CallTimedOut {
        /// The call that timed out.
        call: CallId,
    },
}

/// Writes a call message into `buf` (`CALL_ENVELOPE_LEN + payload.len()` bytes): the
/// envelope (a request's or a response's, naming `call`), then `payload`.
pub(crate) fn write_call(buf: &mut [u8], response: bool, call: CallId, payload: &[u8]) {
    let (head, body) = buf.split_at_mut(CALL_ENVELOPE_LEN);
    head[0] = if response {
        ENVELOPE_RESPONSE
    } else {
        ENVELOPE_REQUEST
    };
    head[1..].copy_from_slice(&call.0.to_le_bytes());
    body.copy_from_slice(payload);
}

/// Reads a call message's envelope: its kind and the payload after it. `None` for a payload
/// too short or of an unknown kind (handed out as a plain message, whole).
pub(crate) fn open_envelope(payload: &[u8]) -> Option<(MessageKind, &[u8])> {
    let (head, rest) = payload.split_at_checked(CALL_ENVELOPE_LEN)?;
    let id: [u8; 8] = head.get(1..)?.try_into().ok()?;
    let call = CallId(u64::from_le_bytes(id));
    match *head.first()? {
        ENVELOPE_REQUEST => Some((MessageKind::Request { call }, rest)),
        ENVELOPE_RESPONSE => Some((MessageKind::Response { call }, rest)),
        _ => None,
    }
}

/// What a stored message is, and its payload for the application.
pub(super) fn classify(flags: u8, payload: &[u8]) -> (MessageKind, &[u8]) {
    if flags & hrpc_store::FLAG_CALL != 0
        && let Some(k) = open_envelope(payload)
    {
        return k;
    }
    (MessageKind::Message, payload)
}

/// Milliseconds since the Unix epoch, the clock call deadlines are kept in (they outlive the
/// process, so they cannot be `Instant`s).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Core {
    /// Whether `call` is an outstanding call of this node to `peer` (a response from any other
    /// peer does not answer it).
    /// A call whose timeout or response was handed out (and not given back) awaits nothing:
    /// its outcome is the one handed.
    pub(super) fn call_awaits(&self, peer: u32, call: CallId) -> bool {
        !self.timeouts_handed.contains(&call.0)
            && !self.responses_handed.contains_key(&call.0)
            && self.store.call(call.0).is_some_and(|c| c.peer == peer)
    }

    /// Hands up to `max` calls whose deadline passed by `now_ms` (ms since the Unix epoch) to
    /// `f` as [`MessageKind::CallTimedOut`]. With `finish_now` each call is ended in the store
    /// after `f` returns (a crash inside `f` hands it again after the restart); without, it
    /// is not handed again until [`Core::finish_call`] ends it or [`Core::rehand_call`] asks
    /// for it again (a restart hands it again too). Returns how many were handed.
    pub fn deliver_timeouts(
        &mut self,
        now_ms: u64,
        max: usize,
        finish_now: bool,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        self.take_fatal()?;
        if finish_now {
            // As for messages, a plain poll hands again what deferred delivery handed.
            self.timeouts_handed.clear();
        }
        if max == 0 || self.next_call_deadline().is_none_or(|d| d > now_ms) {
            return Ok(0);
        }
        let want = max
            .saturating_add(self.timeouts_handed.len())
            .saturating_add(self.responses_handed.len());
        let mut handed = 0;
        for c in self.store.expired_calls(now_ms, want) {
            if handed >= max {
                break;
            }
            // Handed already: its timeout, or its response (which is its outcome).
            if self.timeouts_handed.contains(&c.id) || self.responses_handed.contains_key(&c.id) {
                continue;
            }
            tracing::debug!(peer = c.peer, call = c.id, "call timed out");
            f(Delivery {
                peer: c.peer,
                seq: 0,
                payload: &[],
                kind: MessageKind::CallTimedOut { call: CallId(c.id) },
            });
            handed += 1;
            self.stats.calls_timed_out += 1;
            if finish_now {
                self.store.finish_call(c.id)?;
            } else {
                self.timeouts_handed.insert(c.id);
            }
        }
        Ok(handed)
    }

    /// Ends `call` (its timeout, handed by deferred delivery, was dealt with): it is never
    /// handed again. Returns whether it was outstanding.
    pub fn finish_call(&mut self, call: CallId) -> Result<bool, CoreError> {
        self.take_fatal()?;
        self.timeouts_handed.remove(&call.0);
        Ok(self.store.finish_call(call.0)?)
    }

    /// Hands the timeout of `call` again (its handler gave up on it).
    pub fn rehand_call(&mut self, call: CallId) {
        self.timeouts_handed.remove(&call.0);
    }

    /// Deferred delivery handed the response to `call` from `peer`: until it is consumed (or
    /// handed again), the call's deadline no longer counts.
    pub(super) fn response_handed(&mut self, peer: u32, call: CallId) {
        self.responses_handed.insert(call.0, peer);
    }

    /// The responses from `peer` handed and not consumed are handed again: their calls wait
    /// again.
    pub(super) fn responses_rehanded(&mut self, peer: u32) {
        if !self.responses_handed.is_empty() {
            self.responses_handed.retain(|_, p| *p != peer);
        }
    }

    /// The earliest deadline of an outstanding call whose outcome is not handed out yet, in
    /// ms since the Unix epoch (one handed out — a timeout not yet ended, a response not yet
    /// consumed — is no reason to wake).
    pub fn next_call_deadline(&self) -> Option<u64> {
        if self.timeouts_handed.is_empty() && self.responses_handed.is_empty() {
            return self.store.next_call_deadline();
        }
        self.store.next_call_deadline_where(|id| {
            !self.timeouts_handed.contains(&id) && !self.responses_handed.contains_key(&id)
        })
    }

    /// Ends the call a consumed response answers, before the response itself is consumed: a
    /// crash in between leaves a response that finds no call, which is dropped on redelivery,
    /// never a call whose handled response comes back as a timeout.
    pub(super) fn finish_answered(&mut self, peer: u32, seq: u64) -> Result<(), CoreError> {
        if self.responses_handed.is_empty() {
            return Ok(());
        }
        let Some(m) = self.store.inbound_message(peer, seq) else {
            return Ok(());
        };
        if let (MessageKind::Response { call }, _) = classify(m.flags(), m.payload())
            && self.responses_handed.remove(&call.0).is_some()
        {
            self.store.finish_call(call.0)?;
        }
        Ok(())
    }
}
