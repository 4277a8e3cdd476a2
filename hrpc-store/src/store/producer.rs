//! The any-thread send path: [`OutboundProducer`] reserves a slot (counted against the
//! peer's [`SendWindow`] under the mutex), the caller fills it in place with no lock held,
//! and [`OutboundReservation::commit`] assigns the next seq and publishes under the mutex,
//! so publish order equals seq order (I2). A dropped reservation returns its slot.

#[cfg(doc)]
use super::Store;
use super::{Inner, OutEntry, Result, Shared, SlotId};
use crate::error::StoreError;
use crate::failpoint;
use crate::layout::{FLAG_CALL, KIND_OUT, SLOT_HDR, SlotHeader, class_for};
use crate::sync::{Arc, MutexGuard, lock};
use std::borrow::Cow;

/// A per-peer limit on what is committed and not yet acknowledged, for
/// [`OutboundProducer::reserve_within`]. A plain `u64` converts to a limit on messages only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// Most messages (reservations in progress included).
    pub msgs: u64,
    /// Most payload bytes (reservations in progress included); one message is always allowed
    /// when none is pending, whatever its size.
    pub bytes: u64,
}

impl SendWindow {
    /// Whether one more message of `len` bytes fits, with `unacked` messages of
    /// `unacked_bytes` already counted (one message always fits when none is).
    fn admits(&self, unacked: u64, unacked_bytes: u64, len: usize) -> bool {
        unacked < self.msgs
            && (unacked == 0 || unacked_bytes.saturating_add(len as u64) <= self.bytes)
    }
}

impl From<u64> for SendWindow {
    fn from(msgs: u64) -> Self {
        SendWindow {
            msgs,
            bytes: u64::MAX,
        }
    }
}

impl OutboundProducer {
    /// The checks every reservation starts with — the length can ever fit, the store is not
    /// stopped or closed — and the store lock, with the size class of a `len`-byte message.
    fn lock_open(&self, len: usize) -> Result<(usize, MutexGuard<'_, Inner>)> {
        let sh = &*self.shared;
        sh.check_len(len)?;
        sh.check_stopped()?;
        let inner = lock(&sh.inner);
        if inner.closed {
            return Err(StoreError::Closed);
        }
        Ok((class_for(len + SLOT_HDR), inner))
    }
}

/// The store lock for a commit, refused with [`StoreError::Closed`] if the store was closed,
/// then with [`StoreError::Stopped`] if it stopped, since the slots were claimed. On error the
/// lock is already released, so the caller's `Drop` can take it to give the slots back.
#[inline]
fn lock_live(sh: &Shared) -> Result<MutexGuard<'_, Inner>> {
    let inner = lock(&sh.inner);
    if inner.closed {
        drop(inner);
        return Err(StoreError::Closed);
    }
    if let Err(e) = sh.check_stopped() {
        drop(inner);
        return Err(e);
    }
    Ok(inner)
}

impl Inner {
    /// Gives back reserved slots that were not committed: `slots` of size class `class`,
    /// each reserved for a `len`-byte message to the peer at `pidx`. The last reservation
    /// given back after a close releases the store's files if the [`Store`] is gone, and wakes
    /// whoever waits for the reservations to end.
    fn unreserve(&mut self, sh: &Shared, class: usize, pidx: usize, slots: &[SlotId], len: u32) {
        let n = slots.len() as u64;
        for &slot in slots {
            self.unclaim(class, slot);
        }
        self.states[pidx].reserved -= n;
        self.states[pidx].reserved_bytes -= n * u64::from(len);
        self.reservations -= n;
        if self.closed && self.reservations == 0 {
            if self.store_gone {
                self.release(sh);
            }
            sh.released.notify_all();
        }
    }

    /// Publishes the filled outbound slot `slot` of the peer at `pidx` under the next seq,
    /// with `hdr` (its seq set here), and adds it to the peer's pending messages. Returns the
    /// seq. Inlined, like [`Inner::publish`], so the header stays in registers.
    #[inline(always)]
    fn publish_next_out(
        &mut self,
        sh: &Shared,
        pidx: usize,
        slot: SlotId,
        mut hdr: SlotHeader,
    ) -> u64 {
        let st = &mut self.states[pidx];
        let seq = st.next_out;
        st.next_out += 1;
        hdr.seq = seq;
        self.publish(sh, slot, hdr);
        let st = &mut self.states[pidx];
        st.out.push_back(OutEntry {
            seq,
            last: seq,
            lost: false,
            slot,
            len: hdr.len,
            crc: hdr.crc,
            flags: hdr.flags,
        });
        st.out_bytes += u64::from(hdr.len);
        seq
    }

    /// Lists the peer at `pidx` (once) among those committed to since the last
    /// [`Inner::record_floors`].
    fn list_committed(&mut self, pidx: usize) {
        let st = &mut self.states[pidx];
        if !st.listed {
            st.listed = true;
            self.committed.push(pidx as u32);
        }
    }

    /// Messages and payload bytes committed to `peer` and not acknowledged, reservations in
    /// progress included: what a [`SendWindow`] limits.
    fn unacked(&self, peer: u32) -> (u64, u64) {
        self.peers.get(&peer).map_or((0, 0), |&i| {
            let st = &self.states[i as usize];
            (
                (st.next_out - st.low()).saturating_add(st.reserved),
                st.out_bytes.saturating_add(st.reserved_bytes),
            )
        })
    }
}

/// What a commit publishes besides the message.
#[derive(Debug, Clone, Copy)]
enum Commit {
    Message,
    Request { id: u64, deadline_ms: u64 },
    Reply { consumes: u64 },
}

/// Clone + Send + Sync handle for committing outbound messages from any thread.
///
/// Seqs are assigned per peer at commit, in commit order, whichever thread commits:
///
/// ```
/// use hrpc_store::{Store, StoreConfig};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), &StoreConfig::new(1))?;
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let producer = store.producer();
///         std::thread::spawn(move || producer.send(2, format!("from worker {i}").as_bytes()))
///     })
///     .collect();
/// for w in workers {
///     w.join().expect("worker panicked")?;
/// }
/// assert_eq!(store.outbound_seqs(2), vec![1, 2, 3, 4]);
///
/// // Zero-copy: fill the slot in place; dropping a reservation sends nothing.
/// let producer = store.producer();
/// let mut r = producer.reserve(2, 5)?;
/// r.payload_mut().copy_from_slice(b"hello");
/// assert_eq!(r.commit()?, 5);
/// drop(producer.reserve(2, 100)?);
/// assert_eq!(producer.outbound_pending(2), Some((1, 6)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct OutboundProducer {
    pub(super) shared: Arc<Shared>,
}

/// A reserved outbound slot being filled in place. Dropping it releases the slot.
///
/// [`OutboundProducer::reserve`] lends it the producer (`'a`);
/// [`OutboundProducer::reserve_owned_within`] gives it a producer handle of its own
/// (`OutboundReservation<'static>`), so it can be kept in a struct between calls.
#[derive(Debug)]
pub struct OutboundReservation<'a> {
    producer: Cow<'a, OutboundProducer>,
    slot: SlotId,
    class: usize,
    pidx: usize,
    peer: u32,
    len: u32,
    /// Published: dropping it then gives back only the producer handle, not the slot.
    committed: bool,
}

impl OutboundProducer {
    /// Like [`Store::outbound_pending`], from any thread: `(lowest pending
    /// seq, next seq to assign)` for `peer`, so `next - lowest` messages are
    /// committed and not yet acknowledged.
    pub fn outbound_pending(&self, peer: u32) -> Option<(u64, u64)> {
        self.shared.outbound_pending(peer)
    }

    /// Reserves a slot for an outbound message of `len` bytes to `peer`. Fill it with
    /// [`OutboundReservation::payload_mut`], then [`OutboundReservation::commit`].
    ///
    /// Errors: [`StoreError::TooLarge`], [`StoreError::Full`], [`StoreError::NoSpace`],
    /// [`StoreError::TooManyPeers`], [`StoreError::Stopped`], [`StoreError::Closed`]. On error
    /// nothing changed.
    pub fn reserve(&self, peer: u32, len: usize) -> Result<OutboundReservation<'_>> {
        self.reserve_within(peer, len, u64::MAX)
    }

    /// [`OutboundProducer::reserve`], refused with [`StoreError::WindowFull`] when `peer`
    /// already has `limit.msgs` messages committed and not acknowledged, or when this message
    /// would take its unacknowledged payload bytes past `limit.bytes` (one message is always
    /// allowed when none is pending), counting reservations for it in progress (not yet
    /// committed or dropped). A plain `u64` limits messages only. The check and the count are
    /// made under the store lock together with the claim, so any number of threads reserving
    /// at once never exceed the limit.
    pub fn reserve_within(
        &self,
        peer: u32,
        len: usize,
        limit: impl Into<SendWindow>,
    ) -> Result<OutboundReservation<'_>> {
        let limit = limit.into();
        let (slot, class, pidx) = self.claim_within(peer, len, limit)?;
        Ok(OutboundReservation {
            producer: Cow::Borrowed(self),
            slot,
            class,
            pidx,
            peer,
            len: len as u32,
            committed: false,
        })
    }

    /// [`OutboundProducer::reserve_within`], returning a reservation that holds its own
    /// producer handle (one reference-count increment) instead of borrowing this one: it can
    /// be stored and committed or dropped later, from any thread. Same errors, same limit.
    pub fn reserve_owned_within(
        &self,
        peer: u32,
        len: usize,
        limit: impl Into<SendWindow>,
    ) -> Result<OutboundReservation<'static>> {
        let limit = limit.into();
        let (slot, class, pidx) = self.claim_within(peer, len, limit)?;
        Ok(OutboundReservation {
            producer: Cow::Owned(self.clone()),
            slot,
            class,
            pidx,
            peer,
            len: len as u32,
            committed: false,
        })
    }

    /// Checks and claims a slot for [`OutboundProducer::reserve_within`] and its owned form:
    /// `(slot, size class, peer index)`, counted as a reservation in progress.
    fn claim_within(
        &self,
        peer: u32,
        len: usize,
        limit: SendWindow,
    ) -> Result<(SlotId, usize, usize)> {
        let sh = &*self.shared;
        let (class, mut inner) = self.lock_open(len)?;
        let (unacked, unacked_bytes) = inner.unacked(peer);
        if !limit.admits(unacked, unacked_bytes, len) {
            return Err(StoreError::WindowFull {
                peer,
                unacked,
                unacked_bytes,
            });
        }
        let slot = inner.claim(sh, class)?;
        let pidx = match inner.peer_idx(sh, peer) {
            Ok(i) => i,
            Err(e) => {
                inner.unclaim(class, slot);
                return Err(e);
            }
        };
        inner.states[pidx].reserved += 1;
        inner.states[pidx].reserved_bytes += len as u64;
        inner.reservations += 1;
        drop(inner);
        failpoint::hit("reserve.after_claim");
        Ok((slot, class, pidx))
    }

    /// Convenience: reserve, copy `payload`, commit. Returns the assigned seq.
    pub fn send(&self, peer: u32, payload: &[u8]) -> Result<u64> {
        let mut r = self.reserve(peer, payload.len())?;
        r.payload_mut().copy_from_slice(payload);
        r.commit()
    }

    /// Commits up to `count` messages of `len` bytes each to `peer`, filling message `i`
    /// (`0..count`) in place with `fill(i, payload)`: the batch form of reserve + fill +
    /// commit. Slots are claimed under one lock acquisition, filled and checksummed with no lock
    /// held, then published in seq order under a second one, [`MAX_BATCH`] messages at a
    /// time. Each message is published exactly as [`OutboundReservation::commit`] publishes it,
    /// so a crash leaves a prefix of the batch committed (I2), never a hole.
    ///
    /// `limit` is checked as by [`OutboundProducer::reserve_within`]: the batch stops short
    /// where the window would be exceeded, and where the store is out of space. Returns the
    /// seqs committed (`first..first + n`, `n >= 1` when `count >= 1`; empty for `count = 0`).
    /// An error is returned only if nothing could be committed (the errors of
    /// [`OutboundProducer::reserve_within`] and [`OutboundReservation::commit`]); a later one
    /// ends the batch early and the next call reports it. If `fill` panics, the messages of
    /// the chunk being filled are not committed and their slots are released.
    pub fn send_batch_within(
        &self,
        peer: u32,
        len: usize,
        count: usize,
        limit: impl Into<SendWindow>,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<std::ops::Range<u64>> {
        let limit = limit.into();
        let mut first = None;
        let mut done = 0usize;
        while done < count {
            let want = (count - done).min(MAX_BATCH);
            let mut batch = match self.claim_batch(peer, len, want, limit) {
                Ok(b) => b,
                Err(e) if first.is_none() => return Err(e),
                Err(_) => break,
            };
            let n = batch.n;
            for i in 0..n {
                let buf = batch.payload_mut(i);
                fill(done + i, buf);
                // Checksummed at once, while the payload is still in the cache.
                batch.crcs[i] = crc32c::crc32c(buf);
            }
            match batch.commit() {
                Ok(s) => {
                    first.get_or_insert(s);
                }
                Err(e) if first.is_none() => return Err(e),
                Err(_) => break,
            }
            done += n;
            if n < want {
                break; // The window or the store stopped this chunk short.
            }
        }
        let first = first.unwrap_or(0);
        Ok(first..first + done as u64)
    }

    /// Claims up to `want` (at most [`MAX_BATCH`], at least 1) slots for `len`-byte messages
    /// to `peer` under one lock, as many as `limit` and the store allow (at least one, or an
    /// error), counted as reservations in progress.
    fn claim_batch(
        &self,
        peer: u32,
        len: usize,
        want: usize,
        limit: SendWindow,
    ) -> Result<Batch<'_>> {
        let sh = &*self.shared;
        let (class, mut inner) = self.lock_open(len)?;
        let (unacked, unacked_bytes) = inner.unacked(peer);
        // The same test as `claim_within`, for each further message of the batch.
        let mut room = 0usize;
        while room < want
            && limit.admits(
                unacked.saturating_add(room as u64),
                unacked_bytes.saturating_add((room as u64).saturating_mul(len as u64)),
                len,
            )
        {
            room += 1;
        }
        if room == 0 {
            return Err(StoreError::WindowFull {
                peer,
                unacked,
                unacked_bytes,
            });
        }
        let mut slots = [SlotId { seg: 0, idx: 0 }; MAX_BATCH];
        let mut n = 0;
        while n < room {
            match inner.claim(sh, class) {
                Ok(slot) => {
                    slots[n] = slot;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        let pidx = match inner.peer_idx(sh, peer) {
            Ok(i) => i,
            Err(e) => {
                for &slot in &slots[..n] {
                    inner.unclaim(class, slot);
                }
                return Err(e);
            }
        };
        let batch = Batch {
            producer: self,
            slots,
            crcs: [0; MAX_BATCH],
            n,
            class,
            pidx,
            peer,
            len: len as u32,
            committed: false,
        };
        let n = n as u64;
        inner.states[pidx].reserved += n;
        inner.states[pidx].reserved_bytes += n * len as u64;
        inner.reservations += n;
        drop(inner);
        failpoint::hit("reserve.after_claim");
        Ok(batch)
    }

    /// Whether the store was closed ([`Store::close_producers`], or the [`Store`] dropped):
    /// every reserve and commit through any producer now fails with [`StoreError::Closed`].
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.inner).closed
    }
}

impl OutboundReservation<'_> {
    /// The payload area (exactly the reserved length), in the mapped file.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let sh = &*self.producer.shared;
        match sh.seg(self.slot.seg) {
            Some(seg) => seg
                .map
                .bytes_mut(seg.off(self.slot.idx) + SLOT_HDR, self.len as usize),
            None => &mut [],
        }
    }

    /// Peer this message goes to.
    pub fn peer(&self) -> u32 {
        self.peer
    }

    /// Length of the payload area in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Commits: checksums the payload, then (under the store lock, so publish order == seq
    /// order) assigns the next seq for the peer, writes the header and publishes. Returns seq.
    ///
    /// [`StoreError::Closed`] if the store was closed since the reserve: nothing is published
    /// and the slot is released (the store's files are released with the last such
    /// reservation, if the [`Store`] is already gone).
    pub fn commit(self) -> Result<u64> {
        self.commit_as(Commit::Message)
    }

    /// Commits a request: publishes the call slot for call `id` (from
    /// [`OutboundProducer::new_call_id`]) with `deadline_ms` (milliseconds since the Unix
    /// epoch), then the message, flagged [`FLAG_CALL`](crate::FLAG_CALL), under one lock. The
    /// call stays outstanding (across restarts) until [`Store::finish_call`]. Errors as
    /// [`OutboundReservation::commit`], plus [`StoreError::Full`] / [`StoreError::NoSpace`]
    /// for the call slot and [`StoreError::BadSeq`] for an id of 0 or of an outstanding call;
    /// on error nothing was published.
    pub fn commit_request(self, id: u64, deadline_ms: u64) -> Result<u64> {
        self.commit_as(Commit::Request { id, deadline_ms })
    }

    /// Commits a reply that consumes inbound message `consumes` from the same peer: the
    /// message, flagged [`FLAG_CALL`](crate::FLAG_CALL), records the request's seq, so that
    /// publishing it is what consumes the request. If the process dies before the request's
    /// consumption is recorded the usual way ([`Store::consume_inbound`]), recovery consumes
    /// it from the reply (when every earlier message from the peer was consumed or is itself
    /// answered by a reply the store holds). Errors as [`OutboundReservation::commit`].
    pub fn commit_reply(self, consumes: u64) -> Result<u64> {
        self.commit_as(Commit::Reply { consumes })
    }

    fn commit_as(mut self, how: Commit) -> Result<u64> {
        let sh = &*self.producer.shared;
        let crc = crc32c::crc32c(self.payload_ref());
        failpoint::hit("commit.before_lock");
        let mut inner = lock_live(sh)?; // On error, Drop releases the slot.
        let (flags, link) = match how {
            Commit::Message => (0, 0),
            Commit::Request { id, deadline_ms } => {
                // A call slot's seq is its id: 0 is not a seq, and one id is one call.
                if id == 0 || inner.calls.contains(id) {
                    drop(inner);
                    return Err(StoreError::BadSeq {
                        peer: self.peer,
                        seq: id,
                        reason: "call id 0 or already outstanding",
                    });
                }
                // The call first: a request is never without its call.
                if let Err(e) = inner.publish_call(sh, id, self.peer, deadline_ms) {
                    drop(inner);
                    return Err(e); // Drop releases the message slot.
                }
                (FLAG_CALL, 0)
            }
            Commit::Reply { consumes } => (FLAG_CALL, consumes),
        };
        inner.reservations -= 1;
        let st = &mut inner.states[self.pidx];
        st.reserved -= 1;
        st.reserved_bytes -= u64::from(self.len);
        let hdr = SlotHeader {
            peer: self.peer,
            len: self.len,
            crc,
            inc: st.rec.out_inc,
            kind: KIND_OUT,
            flags,
            link_inc: if link == 0 { 0 } else { st.rec.in_inc },
            link,
            ..SlotHeader::default()
        };
        let seq = inner.publish_next_out(sh, self.pidx, self.slot, hdr);
        inner.list_committed(self.pidx);
        drop(inner);
        self.committed = true;
        failpoint::hit("commit.after_publish");
        Ok(seq)
    }

    fn payload_ref(&self) -> &[u8] {
        match self.producer.shared.seg(self.slot.seg) {
            Some(seg) => seg
                .map
                .bytes(seg.off(self.slot.idx) + SLOT_HDR, self.len as usize),
            None => &[],
        }
    }
}

/// Most messages [`OutboundProducer::send_batch_within`] claims and publishes under one lock.
pub const MAX_BATCH: usize = 256;

/// Slots claimed by [`OutboundProducer::claim_batch`], filled in place, then published by
/// [`Batch::commit`]. Dropped uncommitted (a `fill` panicked, or the commit was refused), it
/// releases its slots as a dropped [`OutboundReservation`] does.
struct Batch<'a> {
    producer: &'a OutboundProducer,
    slots: [SlotId; MAX_BATCH],
    crcs: [u32; MAX_BATCH],
    n: usize,
    class: usize,
    pidx: usize,
    peer: u32,
    len: u32,
    committed: bool,
}

impl Batch<'_> {
    /// The payload area of slot `i` (`i < n`).
    fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        let slot = self.slots[i];
        match self.producer.shared.seg(slot.seg) {
            Some(seg) => seg
                .map
                .bytes_mut(seg.off(slot.idx) + SLOT_HDR, self.len as usize),
            None => &mut [],
        }
    }

    /// Assigns consecutive seqs and publishes the filled slots (their payload crcs in
    /// `crcs`) in order under one lock, as [`OutboundReservation::commit`] does for one.
    /// Returns the first seq.
    fn commit(mut self) -> Result<u64> {
        let sh = &*self.producer.shared;
        failpoint::hit("commit.before_lock");
        let mut inner = lock_live(sh)?; // On error, Drop releases the slots.
        let n = self.n as u64;
        inner.reservations -= n;
        let st = &mut inner.states[self.pidx];
        st.reserved -= n;
        st.reserved_bytes -= n * u64::from(self.len);
        let first = st.next_out;
        let inc = st.rec.out_inc;
        for i in 0..self.n {
            let hdr = SlotHeader {
                peer: self.peer,
                len: self.len,
                crc: self.crcs[i],
                inc,
                kind: KIND_OUT,
                ..SlotHeader::default()
            };
            inner.publish_next_out(sh, self.pidx, self.slots[i], hdr);
        }
        inner.list_committed(self.pidx);
        drop(inner);
        self.committed = true;
        failpoint::hit("commit.after_publish");
        Ok(first)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.committed || self.n == 0 {
            return;
        }
        let sh = &*self.producer.shared;
        lock(&sh.inner).unreserve(sh, self.class, self.pidx, &self.slots[..self.n], self.len);
    }
}

impl Drop for OutboundReservation<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let sh = &*self.producer.shared;
        lock(&sh.inner).unreserve(sh, self.class, self.pidx, &[self.slot], self.len);
    }
}
