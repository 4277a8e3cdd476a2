//! Counters: what the node sent, received, delivered and dropped, and why.

/// Why an incoming datagram (or one frame of it) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// It did not decode (`hrpc_wire::WireError` other than a checksum failure).
    Malformed,
    /// Its checksum did not match (corrupted in flight).
    BadChecksum,
    /// It carries an authentication tag and this node has no key, or it carries none and
    /// this node has one.
    Unauthenticated,
    /// It was addressed to another node id, or claims to come from this one.
    WrongDestination,
    /// It named a session token of this node other than the one for its sender (answered
    /// with a challenge, not processed).
    WrongEpoch,
    /// The sender did not yet know this node's session token (answered with a challenge,
    /// not processed).
    UnknownEpoch,
    /// The peer table is full, or, for a node the resolver does not know, the share of it
    /// strangers may take.
    TooManyPeers,
    /// Data for a message already persisted (a retransmission or duplicate).
    Duplicate,
    /// Data beyond the receive window this node advertised.
    BeyondWindow,
    /// A message whose payload did not match its checksum once assembled, or
    /// fragments that disagree about their message.
    CorruptMessage,
    /// No store space, or too many half-assembled messages: the sender will retry.
    NoSpace,
    /// An acknowledgement of seqs this node never sent.
    BogusAck,
    /// Datagrams from a new session of the peer while the old one's messages
    /// are still being delivered (the sender retries).
    ResetPending,
    /// The peer's session, but from an address not yet validated: answered with a
    /// challenge, acted on only once the claimant echoes it from there.
    UnvalidatedAddress,
    /// A new session claimed for a known peer: challenged, or refused after the challenge
    /// because it comes from another address while the peer's current session still answers.
    UnvalidatedRestart,
    /// A response whose cookie this node did not issue to that address and claim (forged,
    /// or expired): challenged again.
    BadCookie,
    /// A challenge from an address this node does not send to for that peer: not answered.
    UnsolicitedChallenge,
    /// A new node id proved an address that already speaks for another live peer (one
    /// socket, one node id): refused.
    AddressInUse,
    /// Its authentication tag is not the cluster key's tag of its bytes (forged, altered, or
    /// another cluster's).
    BadTag,
}

/// Counters, all monotonic since the core was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed out by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Bytes in those datagrams.
    pub bytes_sent: u64,
    /// Datagrams given to `handle_datagram`.
    pub datagrams_received: u64,
    /// Bytes in those datagrams.
    pub bytes_received: u64,
    /// Messages sent for the first time.
    pub messages_sent: u64,
    /// Messages sent again (loss or timeout).
    pub messages_retransmitted: u64,
    /// Outbound messages the peer acknowledged (cumulatively or selectively).
    pub messages_acked: u64,
    /// Inbound messages persisted.
    pub messages_received: u64,
    /// Inbound messages handed to the application.
    pub messages_delivered: u64,
    /// Inbound seqs reported lost ([`Event::Lost`](super::Event::Lost)).
    pub messages_lost: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Responses handed to the application (one per call at most).
    pub responses_delivered: u64,
    /// Responses that found no outstanding call from their peer (a repeat after a crash, or
    /// one that came after the call's timeout): consumed without being handed out.
    pub responses_dropped: u64,
    /// Timeouts handed out: calls whose deadline passed without a response (a timeout handed
    /// again, after a handler gave up on it, counts again).
    pub calls_timed_out: u64,
    /// Peer resets (a peer came back with a new epoch).
    pub peer_resets: u64,
    /// Handshakes completed: a peer's session learned after a validation round trip.
    pub peers_validated: u64,
    /// Validated address changes of known peers.
    pub address_changes: u64,
    /// Times the resolver had no address for a peer that had something to
    /// send (see [`PeerState::Unresolved`](super::PeerState::Unresolved)).
    pub resolve_failures: u64,
    /// Events dropped, oldest first, because nobody took them with `poll_event`.
    pub events_dropped: u64,
    /// Dropped input, by reason (indexed by [`DropReason`] via [`Stats::dropped`]).
    pub dropped_by_reason: [u64; DROP_REASONS],
}

/// Number of [`DropReason`] variants.
pub const DROP_REASONS: usize = 19;

impl DropReason {
    /// Every reason, in the order of [`Stats::dropped_by_reason`].
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::Unauthenticated,
        DropReason::WrongDestination,
        DropReason::WrongEpoch,
        DropReason::UnknownEpoch,
        DropReason::TooManyPeers,
        DropReason::Duplicate,
        DropReason::BeyondWindow,
        DropReason::CorruptMessage,
        DropReason::NoSpace,
        DropReason::BogusAck,
        DropReason::ResetPending,
        DropReason::UnvalidatedAddress,
        DropReason::UnvalidatedRestart,
        DropReason::BadCookie,
        DropReason::UnsolicitedChallenge,
        DropReason::AddressInUse,
        DropReason::BadTag,
    ];

    /// The reason's name in snake case (`"malformed"`, `"bad_checksum"`, ...): the `reason`
    /// label of the `hrpc_dropped_total` metric.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::WrongEpoch => "wrong_epoch",
            DropReason::UnknownEpoch => "unknown_epoch",
            DropReason::TooManyPeers => "too_many_peers",
            DropReason::Duplicate => "duplicate",
            DropReason::BeyondWindow => "beyond_window",
            DropReason::CorruptMessage => "corrupt_message",
            DropReason::NoSpace => "no_space",
            DropReason::BogusAck => "bogus_ack",
            DropReason::ResetPending => "reset_pending",
            DropReason::UnvalidatedAddress => "unvalidated_address",
            DropReason::UnvalidatedRestart => "unvalidated_restart",
            DropReason::BadCookie => "bad_cookie",
            DropReason::UnsolicitedChallenge => "unsolicited_challenge",
            DropReason::AddressInUse => "address_in_use",
            DropReason::BadTag => "bad_tag",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Stats {
    /// How many inputs were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped_by_reason[reason.index()]
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_by_reason.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.dropped_by_reason[reason.index()] += 1;
    }
}

/// Per-peer figures, from [`Core::peer_info`](crate::proto::Core::peer_info).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Peer node id.
    pub peer: u32,
    /// Liveness state.
    pub state: super::PeerState,
    /// Where datagrams for the peer go, if known.
    pub addr: Option<std::net::SocketAddr>,
    /// The peer's session token for this node (what identifies its current session), if a
    /// handshake established it.
    pub epoch: Option<u64>,
    /// Smoothed round-trip time, if measured.
    pub srtt: Option<std::time::Duration>,
    /// Congestion window in bytes.
    pub cwnd: usize,
    /// Smoothed share of the bytes sent per round trip that were declared lost, per mille.
    pub loss_per_mille: u64,
    /// Messages committed and not yet acknowledged by the peer.
    pub unacked_messages: u64,
    /// Of those, messages sent and awaiting acknowledgement.
    pub in_flight_messages: u64,
    /// Bytes sent and awaiting acknowledgement.
    pub in_flight_bytes: usize,
    /// Inbound messages persisted and not yet delivered.
    pub undelivered_messages: u64,
}
