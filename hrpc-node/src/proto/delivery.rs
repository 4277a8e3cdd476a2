//! The group commit and delivery to the application.

use hrpc_store::StoreError;

use super::{Core, CoreError, Delivery, Event, MessageKind, call, queue_event};

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
    ///
    /// Messages handed by [`Core::deliver_deferred`] and not yet consumed are handed again
    /// first.
    pub fn deliver(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        self.deliver_inner(max, true, f)
    }

    /// Hands up to `max` persisted messages to `f`, in order per peer, **without consuming
    /// them**: each stays in the store until [`Core::consume`] covers it, and is not handed
    /// again by this call meanwhile. A restart before `consume` (or [`Core::redeliver`])
    /// hands it again. A gap marker ([`Event::Lost`]) waits until everything handed before
    /// it is consumed. Returns how many were handed.
    pub fn deliver_deferred(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(Delivery<'_>),
    ) -> Result<usize, CoreError> {
        self.deliver_inner(max, false, f)
    }

    /// Consumes the messages from `peer` that were handed by [`Core::deliver_deferred`], in
    /// order, from the first unconsumed one through `through` (at most through the last one
    /// handed). Returns how many were consumed (0 for an unknown peer or nothing to consume).
    pub fn consume(&mut self, peer: u32, through: u64) -> Result<u64, CoreError> {
        self.take_fatal()?;
        let Some(p) = self.peers.get(&peer) else {
            return Ok(0);
        };
        let (first, last) = (p.recv.consumed + 1, through.min(p.recv.handed));
        if last < first {
            return Ok(0);
        }
        // Only whole messages lie between `consumed` and `handed` (a gap marker is handed,
        // and consumed at once, only when nothing before it waits): the calls they answer
        // end first, then one cursor write consumes the run and frees its slots.
        for seq in first..=last {
            self.finish_answered(peer, seq)?;
        }
        self.store.skip_inbound_through(peer, last)?;
        self.set_consumed(peer, last);
        self.apply_reset_if_drained(peer)?;
        Ok(last - first + 1)
    }

    /// Forgets that the unconsumed messages from `peer` were handed: the next delivery hands
    /// them again, from the first unconsumed one.
    pub fn redeliver(&mut self, peer: u32) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.recv.handed = p.recv.consumed;
        }
        self.responses_rehanded(peer);
    }

    /// The last seq from `peer` consumed (0 if none, or the peer is unknown).
    pub fn consumed_through(&self, peer: u32) -> u64 {
        self.peers.get(&peer).map_or(0, |p| p.recv.consumed)
    }

    fn deliver_inner(
        &mut self,
        max: usize,
        consume_now: bool,
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
            if consume_now {
                self.redeliver(peer);
            }
            while let Some(p) = self.peers.get(&peer) {
                if p.recv.handed >= p.recv.cum || delivered >= max {
                    break;
                }
                let waiting = p.recv.handed > p.recv.consumed;
                let seq = p.recv.handed + 1;
                // `cum` only ever covers seqs the store holds, so a missing
                // message is a broken invariant, never something to skip.
                let m = self
                    .store
                    .inbound_message(peer, seq)
                    .ok_or(CoreError::MissingDelivery { peer, seq })?;
                match m.lost_through() {
                    Some(_) if waiting => break,
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
                        self.set_consumed(peer, last);
                    }
                    None => {
                        // Checked once, on receipt, before it was persisted (and at
                        // recovery): no second pass over the payload here.
                        let (kind, payload) = call::classify(m.flags(), m.payload());
                        let answers = match kind {
                            MessageKind::Response { call } => Some(call),
                            _ => None,
                        };
                        if let Some(call) = answers
                            && !self.call_awaits(peer, call)
                        {
                            // A repeat, or too late: consumed unseen, in order.
                            if waiting {
                                break;
                            }
                            self.stats.responses_dropped += 1;
                            tracing::debug!(peer, seq, %call, "response without an outstanding call dropped");
                            self.store.consume_inbound(peer, seq)?;
                            self.set_consumed(peer, seq);
                            continue;
                        }
                        f(Delivery {
                            peer,
                            seq,
                            payload,
                            kind,
                        });
                        delivered += 1;
                        self.stats.messages_delivered += 1;
                        if answers.is_some() {
                            self.stats.responses_delivered += 1;
                        }
                        if consume_now {
                            if let Some(call) = answers {
                                // The call ends first (see `Core::finish_answered`).
                                self.store.finish_call(call.0)?;
                            }
                            self.store.consume_inbound(peer, seq)?;
                            self.set_consumed(peer, seq);
                        } else {
                            if let Some(call) = answers {
                                self.response_handed(peer, call);
                            }
                            if let Some(p) = self.peers.get_mut(&peer) {
                                p.recv.handed = seq;
                            }
                        }
                    }
                }
            }
            self.apply_reset_if_drained(peer)?;
        }
        Ok(delivered)
    }

    /// Records that every seq from `peer` through `through` is consumed (and so handed).
    fn set_consumed(&mut self, peer: u32, through: u64) {
        let window = self.cfg.recv_window_msgs;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.recv.consumed = through;
            p.recv.handed = p.recv.handed.max(through);
            // Window reopened well past what was advertised: tell the sender.
            if p.recv.advertised_window < window / 2 {
                p.recv.ack_pending = true;
            }
        }
    }

    /// A peer's reset waits until every message of its old stream is consumed; applies it
    /// once that is so.
    fn apply_reset_if_drained(&mut self, peer: u32) -> Result<(), CoreError> {
        let pending_reset = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.pending_epoch.is_some() && p.recv.deliverable() == 0);
        if pending_reset {
            self.apply_reset(peer)?;
        }
        Ok(())
    }
}
