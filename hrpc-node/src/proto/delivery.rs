//! The group commit and delivery to the application.

use super::*;

impl Core {
    /// Group commit: in [`Durability::Sync`] mode makes everything persisted
    /// so far durable (one sync for the whole batch). Call once per loop
    /// iteration after handling received datagrams; until it succeeds, the
    /// core acknowledges, sends and delivers nothing new. No-op in
    /// [`Durability::Process`] mode.
    pub fn sync(&mut self) -> Result<(), CoreError> {
        self.store.maintain(); // both modes: deletes long-empty store segments (cheap if none)
        if !self.durable {
            return Ok(());
        }
        self.store.sync()?;
        self.unsynced = false;
        self.note_synced();
        Ok(())
    }

    pub(super) fn note_synced(&mut self) {
        if !self.durable {
            return;
        }
        // Known peers only (no allocation per sync): a peer first sent to
        // since is added by `poll_transmit` and covered by the next sync.
        for &peer in &self.order {
            if let Some((_, next)) = self.store.outbound_pending(peer) {
                self.synced_next.insert(peer, next);
            }
        }
    }

    /// Hands up to `max` persisted messages to `f`, in order per peer, and
    /// consumes each after `f` returns (so a crash inside `f` redelivers that
    /// one message on restart). Returns how many were delivered.
    pub fn deliver(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        if self.unsynced {
            return Ok(0);
        }
        let mut delivered = 0;
        let n = self.order.len();
        // Start one peer further each call, so a small `max` serves every
        // peer in turn rather than the first ones only.
        self.deliver_rr = if n == 0 { 0 } else { (self.deliver_rr + 1) % n };
        for i in 0..n {
            let peer = self.order[(self.deliver_rr + i) % n];
            while let Some(p) = self.peers.get(&peer) {
                if p.recv.consumed >= p.recv.cum || delivered >= max {
                    break;
                }
                let seq = p.recv.consumed + 1;
                // `cum` only ever covers seqs the store holds, so a missing
                // message is a broken invariant, never something to skip.
                let m = self
                    .store
                    .inbound_message(peer, seq)
                    .ok_or(CoreError::MissingDelivery { peer, seq })?;
                if crc32c::crc32c(m.payload()) != m.crc() {
                    return Err(CoreError::CorruptDelivery { peer, seq });
                }
                f(Delivery {
                    peer,
                    seq,
                    payload: m.payload(),
                });
                self.store.consume_inbound(peer, seq)?;
                let window = self.cfg.recv_window_msgs;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.recv.consumed = seq;
                    // Window reopened well past what was advertised: tell the sender.
                    if p.recv.advertised_window < window / 2 {
                        p.recv.ack_pending = true;
                    }
                }
                delivered += 1;
                self.stats.messages_delivered += 1;
            }
            let pending_reset = self
                .peers
                .get(&peer)
                .is_some_and(|p| p.pending_epoch.is_some() && p.recv.deliverable() == 0);
            if pending_reset {
                self.apply_reset(peer)?;
            }
        }
        Ok(delivered)
    }
}
