//! The group commit and delivery to the application.

use hrpc_store::StoreError;

use super::{Core, CoreError, Delivery, Event, queue_event};

impl Core {
    /// Group commit ([`Store::sync`](hrpc_store::Store::sync)): in [`Durability::Sync`](hrpc_store::Durability::Sync) mode makes
    /// everything persisted so far durable (one sync for the whole batch), and
    /// in both modes records the next-seq floors and the watermark below which
    /// outbound messages may be transmitted; and gives disk space back
    /// ([`Store::maintain`](hrpc_store::Store::maintain)). Call once per loop iteration after handling
    /// received datagrams; until it succeeds, the core acknowledges, sends and
    /// delivers nothing new. Runs in a debug-level `tracing` span `group_commit` (fields
    /// `node`, `durable`).
    pub fn sync(&mut self) -> Result<(), CoreError> {
        let _span =
            tracing::debug_span!("group_commit", node = self.id, durable = self.durable).entered();
        self.take_fatal()?;
        // Both modes: deletes long-empty store segments (cheap when there are none).
        self.store.maintain();
        self.store.sync()?;
        self.unsynced = false;
        Ok(())
    }

    /// Returns (once) a store failure recorded where it could not be
    /// returned.
    pub(super) fn take_fatal(&mut self) -> Result<(), CoreError> {
        match self.fatal.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Records a store failure to return from the next call that can.
    pub(super) fn record_fatal(&mut self, e: StoreError) {
        tracing::error!(error = %e, "store failure");
        self.fatal.get_or_insert(e);
    }

    /// Hands up to `max` persisted messages to `f`, in order per peer, and
    /// consumes each after `f` returns (so a crash inside `f` redelivers that
    /// one message on restart). Returns how many were delivered.
    pub fn deliver(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        self.take_fatal()?;
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
                let through = match m.lost_through() {
                    Some(last) => {
                        // A gap marker: the range will never arrive; say so, in order.
                        self.store.consume_inbound(peer, seq)?;
                        self.stats.messages_lost =
                            self.stats.messages_lost.saturating_add(last - seq + 1);
                        tracing::warn!(peer, first = seq, last, "messages lost");
                        queue_event(
                            &mut self.events,
                            &mut self.stats,
                            Event::Lost {
                                peer,
                                range: seq..=last,
                            },
                        );
                        last
                    }
                    None => {
                        // Checked once, on receipt, before it was persisted (and at
                        // recovery): no second pass over the payload here.
                        f(Delivery {
                            peer,
                            seq,
                            payload: m.payload(),
                        });
                        self.store.consume_inbound(peer, seq)?;
                        delivered += 1;
                        self.stats.messages_delivered += 1;
                        seq
                    }
                };
                let window = self.cfg.recv_window_msgs;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.recv.consumed = through;
                    // Window reopened well past what was advertised: tell the sender.
                    if p.recv.advertised_window < window / 2 {
                        p.recv.ack_pending = true;
                    }
                }
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
