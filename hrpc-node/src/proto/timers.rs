//! Timers: retransmission, heartbeats, liveness, window probes.

use std::time::Instant;

use super::send::TimeoutAction;
use super::{Core, Event, PeerState, later, queue_event};

impl Core {
    /// When [`Core::handle_timeout`] should next be called (or
    /// [`Core::poll_transmit`], if something is ready to go now).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.replies.is_empty() {
            at(self.start);
        }
        for p in self.peers.values() {
            if p.addr.is_none()
                && let Some(t) = p.resolve_at
            {
                // Nothing can go out before the resolver knows it: wake up
                // for the next attempt, and not before.
                at(t);
                continue;
            }
            if let Some(t) = p.send.rto_at {
                at(t);
            }
            if let Some(t) = p.send.loss_at {
                at(t);
            }
            if let Some(t) = p.probe_at {
                at(t);
            }
            if p.recv.ack_pending || p.hb_pending || p.send.retransmit_ready() {
                at(self.start);
            }
            let committed = self.committed_next(p.id);
            if p.touched || p.send.base < committed || p.last_heard.is_some() {
                at(p.hb_at);
            }
        }
        next
    }

    /// Runs the timers that are due at `now`: retransmission timeouts,
    /// heartbeats and liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        let since_start = now.saturating_duration_since(self.start);
        for i in 0..self.order.len() {
            let peer = self.order[i];
            let committed = self.committed_next(peer);
            let send_limit = self.send_limit(peer);
            let cfg = &self.cfg;
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.send.loss_at.is_some_and(|t| t <= now)
                && let Some((first, bytes)) = p.send.detect_losses(now)
            {
                let next = p.send.next_new();
                p.send.cc.on_loss(first, bytes, next);
            }
            if p.send.rto_at.is_some_and(|t| t <= now) {
                let action = p.send.on_timeout(now);
                if action == TimeoutAction::AskPeer {
                    p.hb_pending = true;
                    p.hb_reply_requested = true;
                }
                self.stats.timeouts += 1;
                tracing::debug!(peer, backoff = p.send.backoff, ?action, "probe timeout");
            }
            // Flow window closed with nothing in flight: the ack that would
            // reopen it may be lost, so ask for one at the RTO.
            let blocked = p.epoch != 0
                && p.send.in_flight == 0
                && p.send.retransmit.is_empty()
                && p.send.next_new() < send_limit
                && p.send.next_new() > p.send.peer_limit;
            match (blocked, p.probe_at) {
                (false, _) => p.probe_at = None,
                (true, None) => p.probe_at = Some(later(now, p.send.rtt.rto())),
                (true, Some(t)) if t <= now => {
                    p.hb_pending = true;
                    p.hb_reply_requested = true;
                    p.probe_at = Some(later(now, p.send.rtt.rto_backoff(p.send.backoff)));
                }
                (true, Some(_)) => {}
            }
            if p.hb_at <= now {
                if p.engaged(now, cfg, committed) {
                    p.hb_pending = true;
                    if p.epoch == 0 || p.touched {
                        p.hb_reply_requested = true;
                    }
                }
                // An unreachable peer is probed ever more slowly (up to 8x).
                if p.state == PeerState::Unreachable {
                    p.hb_interval = p.hb_interval.saturating_mul(2);
                    p.hb_interval = p.hb_interval.min(cfg.heartbeat_interval.saturating_mul(8));
                }
                // Until the peer's epoch is known, probe at the RTO rather than the heartbeat pace.
                let interval = if p.epoch == 0 {
                    p.hb_interval.min(p.send.rtt.rto())
                } else {
                    p.hb_interval
                };
                p.hb_at = later(now, interval);
            }
            let silent = p
                .last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= cfg.unreachable_after);
            let waiting = p.touched || p.send.base < committed;
            let grace_over = p.last_heard.is_some() || since_start >= cfg.unreachable_after;
            let addressed = p.state != PeerState::Unresolved;
            if silent && waiting && grace_over && addressed && p.state != PeerState::Unreachable {
                p.state = PeerState::Unreachable;
                // It may have moved: ask the resolver again.
                p.addr = None;
                let e = Event::PeerState {
                    peer,
                    state: PeerState::Unreachable,
                };
                queue_event(&mut self.events, &mut self.stats, e);
            }
        }
    }
}
