//! Closing: the fence between the store and its producers. [`Store::close_producers`] (and
//! dropping the [`Store`]) refuses every later reserve and commit under the store mutex, and
//! the files (mappings and the `LOCK`) are released only once no reservation is outstanding
//! ([`Inner::release`], which upholds M6/I8: nothing references a segment when it goes).

use super::config::Durability;
use super::producer::OutboundProducer;
use super::{Inner, Shared, Store};
#[cfg(doc)]
use crate::StoreError;
use crate::sync::{lock, wait_timeout};
use std::time::{Duration, Instant};

impl Inner {
    /// Lets go of the store's files once the [`Store`] is gone and no reservation is
    /// outstanding (the caller checks both, under the mutex): unmaps every segment and drops
    /// the lock, so another open may take the directory. Producers still holding the shared
    /// state get [`StoreError::Closed`] without touching any mapping. M6: nothing references
    /// a segment now — `&Store` borrowers are gone with the store, producers dereference only
    /// segments of slots they reserved and none is reserved, and `closed` (set under this
    /// mutex) refuses every new claim.
    pub(super) fn release(&mut self, sh: &Shared) {
        debug_assert!(self.closed && self.store_gone && self.reservations == 0);
        for cell in sh.segments.iter() {
            drop(cell.take());
        }
        self.classes.iter_mut().for_each(|c| c.free.clear());
        if self.lock_file.take().is_some() {
            tracing::debug!(dir = %sh.dir.display(), "store released");
        }
    }
}

impl Drop for Store {
    /// Closes the store ([`Store::close_producers`]: no producer reserves or commits from now
    /// on) and records the next-seq floors (memory writes to the mapping, no syscall), so a
    /// store closed without a final [`Store::sync`] still knows how far each stream went if a
    /// segment is lost later. Then releases the files (segment mappings and the lock) — at once
    /// if no reservation is outstanding, otherwise when the last one is committed (it fails
    /// with [`StoreError::Closed`]) or dropped. Otherwise dropping is the same as the process
    /// dying.
    fn drop(&mut self) {
        let sh = &*self.shared;
        let mut inner = lock(&sh.inner);
        inner.closed = true;
        inner.store_gone = true;
        let mut scratch = Vec::new();
        // Sync mode: a floor is only written after its messages are flushed (by `sync`).
        let write = sh.durability == Durability::Process;
        inner.record_floors(sh, &mut scratch, write);
        if inner.reservations == 0 {
            inner.release(sh);
        }
    }
}

impl Store {
    /// A handle for committing outbound messages from any thread.
    pub fn producer(&self) -> OutboundProducer {
        self.producer.clone()
    }

    /// Closes the store to producers: from now on every reserve and commit, through any
    /// [`OutboundProducer`] clone, fails with [`StoreError::Closed`] (checked under the store
    /// lock, so no commit can follow this call). Reservations already made can still be
    /// filled, but not committed. The store itself keeps working for the poll thread (sync,
    /// acknowledgements, reads). Dropping the store does this too. Cannot be undone.
    pub fn close_producers(&mut self) {
        lock(&self.shared.inner).closed = true;
    }

    /// Waits, at most `timeout`, until no outbound reservation is outstanding; returns whether
    /// none is. Meant after [`Store::close_producers`], when no new one can start: then, if it
    /// returns `true`, dropping the store releases the directory at once. A reservation is
    /// outstanding from the reserve until its commit returns or it is dropped, which for a
    /// producer filling a message in place takes as long as the filling does.
    pub fn wait_producers(&mut self, timeout: Duration) -> bool {
        let sh = &*self.shared;
        let deadline = Instant::now().checked_add(timeout);
        let mut inner = lock(&sh.inner);
        // Bounded: each round waits until the deadline, or until notified.
        while inner.reservations > 0 {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            inner = wait_timeout(&sh.released, inner, left.min(Duration::from_secs(3600)));
        }
        true
    }

    /// Closes the store: [`Store::close_producers`], then [`Store::wait_producers`] for at
    /// most `wait`, then drop (which records the floors and releases the files). Returns
    /// whether the files were released when it returned; if not, they are released when the
    /// last outstanding reservation ends (and until then a new open of the directory gets
    /// [`StoreError::Locked`]).
    pub fn close(mut self, wait: Duration) -> bool {
        self.close_producers();
        let released = self.wait_producers(wait);
        drop(self);
        released
    }
}
