//! The handshake: per-peer session tokens, stateless address-validation cookies, and the
//! rules for admitting a peer, moving its address and accepting its restart. See "Session
//! tokens and the handshake" in `docs/design.md`.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hrpc_wire::{Datagram, Frame, HeaderFields};
use siphasher::sip::SipHasher24;

use super::{Core, DropReason, Event, PeerState, Reply, ReplyFrame};

/// How long a cookie stays valid: it is checked against the current and the previous period,
/// so a cookie lives between one and two periods.
const COOKIE_PERIOD: Duration = Duration::from_secs(30);

/// Domain separation for the values derived from the node secret.
const TOKEN_DOMAIN: u8 = 1;
const COOKIE_DOMAIN: u8 = 2;

/// Keys derived from the store's secret epoch, which never leaves the node.
#[derive(Clone, Copy)]
pub(super) struct Secrets {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    pub(super) fn new(epoch: u64, node_id: u32) -> Secrets {
        // The store epoch is 64 random bits; spread them over both SipHash keys.
        let mut h = SipHasher24::new_with_keys(epoch, !epoch);
        h.write_u32(node_id);
        Secrets {
            k0: epoch,
            k1: h.finish(),
        }
    }

    /// This node's session token for `peer`: what it sends as `src_epoch` to that peer and
    /// expects back as `dst_epoch`. Never 0; a different value for every peer, so one peer
    /// cannot use what it learned to speak as another.
    pub(super) fn token(&self, peer: u32) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write_u8(TOKEN_DOMAIN);
        h.write_u32(peer);
        h.finish().max(1)
    }

    /// The cookie for a claimant at `from` that says it is node `src` with session `claimed`,
    /// in cookie period `period`.
    fn cookie(&self, period: u64, from: SocketAddr, src: u32, claimed: u64) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write_u8(COOKIE_DOMAIN);
        h.write_u64(period);
        match from.ip() {
            IpAddr::V4(ip) => h.write(&ip.octets()),
            IpAddr::V6(ip) => h.write(&ip.octets()),
        }
        h.write_u16(from.port());
        h.write_u32(src);
        h.write_u64(claimed);
        h.finish()
    }
}

/// What the handshake decided about a datagram that is not plainly from a known peer's
/// session at its validated address.
enum Claim {
    /// The frames may be processed.
    Process,
    /// Dropped (and counted).
    Drop,
}

impl Core {
    /// This node's session token for `peer`: the value it puts in `src_epoch` of every
    /// datagram to `peer`, and that `peer` must put in `dst_epoch` to be heard. Derived from
    /// the store's secret epoch, so it survives a restart on the same store, and differs for
    /// every peer.
    pub fn session_token(&self, peer: u32) -> u64 {
        self.peers
            .get(&peer)
            .map_or_else(|| self.secrets.token(peer), |p| p.token)
    }

    fn cookie_period(&self, now: Instant) -> u64 {
        let age = now.saturating_duration_since(self.start);
        (age.as_secs() / COOKIE_PERIOD.as_secs()).saturating_add(1)
    }

    fn cookie_valid(&self, now: Instant, from: SocketAddr, h: &HeaderFields, cookie: u64) -> bool {
        let period = self.cookie_period(now);
        [period, period - 1]
            .iter()
            .any(|&p| self.secrets.cookie(p, from, h.src, h.src_epoch) == cookie)
    }

    /// The slow path of [`Core::handle_datagram`]: anything but a datagram of a known
    /// peer's session, with this node's token, from the peer's validated address. Returns
    /// whether the datagram's frames may be processed.
    pub(super) fn handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        h: &HeaderFields,
        d: &Datagram<'_>,
    ) -> bool {
        matches!(self.classify(now, from, h, d), Claim::Process)
    }

    fn classify(
        &mut self,
        now: Instant,
        from: SocketAddr,
        h: &HeaderFields,
        d: &Datagram<'_>,
    ) -> Claim {
        let mut challenge = None;
        let mut response = None;
        for f in d.frames() {
            match f {
                Frame::Challenge(c) => challenge = Some(c.cookie),
                Frame::Response(c) => response = Some(c.cookie),
                _ => {}
            }
        }
        if let Some(cookie) = challenge {
            // A datagram with a challenge is never answered with one: no ping-pong.
            self.answer_challenge(now, from, h, cookie);
            return Claim::Drop;
        }
        if h.src_epoch == 0 {
            // No session to claim: nothing to validate.
            self.stats.drop(DropReason::Malformed);
            return Claim::Drop;
        }
        let token = self.session_token(h.src);
        let knows_us = h.dst_epoch == token;
        let (epoch, addr) = self
            .peers
            .get(&h.src)
            .map_or((0, None), |p| (p.epoch, p.addr));
        // Our side of a handshake we started: this node showed its token only to `addr`, in
        // a response to that address's challenge, so a datagram from there that carries it
        // is the peer's answer.
        if knows_us && epoch == 0 && addr == Some(from) {
            return self.learn_epoch(h.src, h.src_epoch);
        }
        let proven = response.is_some_and(|c| self.cookie_valid(now, from, h, c));
        if !proven {
            let reason = if response.is_some() {
                DropReason::BadCookie
            } else if h.dst_epoch == 0 {
                DropReason::UnknownEpoch
            } else if !knows_us {
                DropReason::WrongEpoch
            } else if epoch == h.src_epoch {
                DropReason::UnvalidatedAddress
            } else {
                DropReason::UnvalidatedRestart
            };
            self.stats.drop(reason);
            self.queue_challenge(now, from, h);
            return Claim::Drop;
        }
        // The claimant receives at `from` and claims session `h.src_epoch` of node `h.src`.
        if epoch == 0 {
            self.admit(now, from, h)
        } else if epoch == h.src_epoch {
            // Only the peer (and this node) knows its session token for this node.
            self.move_address(h.src, from);
            Claim::Drop
        } else {
            self.restart_claim(now, from, h)
        }
    }

    /// Records the epoch of a peer met for the first time (persisted before anything else).
    fn learn_epoch(&mut self, peer: u32, epoch: u64) -> Claim {
        if let Err(e) = self.store.set_peer_epoch(peer, epoch) {
            tracing::warn!(peer, error = %e, "cannot record peer epoch");
            self.stats.drop(DropReason::NoSpace);
            return Claim::Drop;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.epoch = epoch;
            p.hb_pending = true;
        }
        self.stats.peers_validated += 1;
        tracing::debug!(peer, "peer session learned");
        Claim::Process
    }

    /// A node with no recorded session proved its address: admit it, unless its address
    /// already speaks for another live node (one socket, one node id) or there is no room
    /// (for a stranger, no room outside the reserved quarter of the table).
    fn admit(&mut self, now: Instant, from: SocketAddr, h: &HeaderFields) -> Claim {
        let taken = self.peers.values().any(|p| {
            p.id != h.src
                && p.addr == Some(from)
                && p.epoch != 0
                && p.state != PeerState::Unreachable
        });
        if taken {
            self.stats.drop(DropReason::AddressInUse);
            return Claim::Drop;
        }
        // A stranger (an id the resolver does not know and this node has no state for) never
        // takes the last quarter of the peer table: it stays for the peers the application
        // configures or sends to.
        let stranger = !self.peers.contains_key(&h.src) && self.resolver.resolve(h.src).is_none();
        if stranger {
            let table = (self.store.max_peers() as usize).min(self.cfg.max_peers);
            let limit = table - (table / 4).max(1);
            if self.store.peer_count().max(self.peers.len()) >= limit {
                self.stats.drop(DropReason::TooManyPeers);
                return Claim::Drop;
            }
        }
        let Some(p) = self.peer_entry(h.src, now) else {
            self.stats.drop(DropReason::TooManyPeers);
            return Claim::Drop;
        };
        let old = p.addr.replace(from);
        if self.learn_epoch(h.src, h.src_epoch).is_drop() {
            if let Some(p) = self.peers.get_mut(&h.src) {
                p.addr = old;
            }
            return Claim::Drop;
        }
        tracing::info!(peer = h.src, %from, "peer validated");
        Claim::Drop
    }

    /// The peer's current session proved it receives at `from`.
    fn move_address(&mut self, peer: u32, from: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.hb_pending = true;
        if p.addr == Some(from) {
            return;
        }
        let old = p.addr.replace(from);
        self.stats.address_changes += 1;
        tracing::info!(peer, ?old, %from, "peer address changed");
        self.push_event(Event::PeerAddress { peer, addr: from });
    }

    /// A proven address claims a new session for a known peer. Accepted only from where the
    /// peer's current session is (it restarted in place), or from the address the resolver
    /// gives, or once the current session has stopped answering: nothing was heard from it
    /// for `unreachable_after` since the first such claim, while it was being asked at its
    /// address (or after it went unreachable there; never when this node never had one).
    fn restart_claim(&mut self, now: Instant, from: SocketAddr, h: &HeaderFields) -> Claim {
        let resolved = self.resolver.resolve(h.src);
        let quiet_for = self.cfg.unreachable_after;
        let Some(p) = self.peers.get_mut(&h.src) else {
            return Claim::Drop;
        };
        // Elsewhere, the claim waits until the current session has been asked (heartbeats
        // with a reply requested, to its address) for `unreachable_after` without a word.
        // Silence proves something only if the session was asked: at its address, or it was
        // heard in this process and went unreachable there (which drops the address). With
        // neither (this node restarted and the resolver does not know the peer), only the
        // resolver's address is trusted.
        let probing_since = *p.restart_probe.get_or_insert(now);
        let asked = p.addr.is_some()
            || p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) >= quiet_for);
        let gone = asked && now.saturating_duration_since(probing_since) >= quiet_for;
        let trusted = p.addr == Some(from) || resolved == Some(from) || gone;
        if !trusted {
            p.hb_pending = true;
            p.hb_reply_requested = true;
            self.stats.drop(DropReason::UnvalidatedRestart);
            return Claim::Drop;
        }
        if p.pending_epoch == Some(h.src_epoch) {
            self.stats.drop(DropReason::ResetPending);
            return Claim::Drop;
        }
        tracing::info!(peer = h.src, %from, "peer restart validated");
        p.restart_probe = None;
        p.pending_epoch = Some(h.src_epoch);
        if p.addr != Some(from) {
            p.addr = Some(from);
            self.stats.address_changes += 1;
            self.push_event(Event::PeerAddress {
                peer: h.src,
                addr: from,
            });
        }
        let ready = self
            .peers
            .get(&h.src)
            .is_some_and(|p| p.recv.deliverable() == 0);
        if ready {
            if let Err(e) = self.apply_reset(h.src) {
                tracing::warn!(peer = h.src, error = %e, "peer reset failed");
            }
        } else {
            // The old session's messages are delivered first.
            self.stats.drop(DropReason::ResetPending);
        }
        Claim::Drop
    }

    /// Answers a challenge, only from where this node sends to that peer: the answer shows
    /// this node's token for the peer.
    fn answer_challenge(&mut self, now: Instant, from: SocketAddr, h: &HeaderFields, cookie: u64) {
        let Some(p) = self.peers.get(&h.src) else {
            return self.stats.drop(DropReason::UnsolicitedChallenge);
        };
        if p.addr != Some(from) {
            return self.stats.drop(DropReason::UnsolicitedChallenge);
        }
        let reply = Reply {
            to: from,
            header: HeaderFields {
                src: self.id,
                dst: h.src,
                src_epoch: p.token,
                dst_epoch: p.epoch,
                auth: self.cfg.cluster_key.is_some(),
            },
            frame: ReplyFrame::Response(cookie),
        };
        self.queue_reply(now, reply);
    }

    /// Challenges a claimant at `from`. The challenge carries nothing but the cookie: no
    /// session value, no stream position.
    fn queue_challenge(&mut self, now: Instant, from: SocketAddr, h: &HeaderFields) {
        let cookie = self
            .secrets
            .cookie(self.cookie_period(now), from, h.src, h.src_epoch);
        let reply = Reply {
            to: from,
            header: HeaderFields {
                src: self.id,
                dst: h.src,
                src_epoch: 0,
                dst_epoch: 0,
                auth: self.cfg.cluster_key.is_some(),
            },
            frame: ReplyFrame::Challenge(cookie),
        };
        self.queue_reply(now, reply);
    }
}

impl Claim {
    fn is_drop(&self) -> bool {
        matches!(self, Claim::Drop)
    }
}
