//! Tunables of the protocol core, their bounds, and [`ConfigError`].

use std::time::Duration;

/// Longest duration any setting may have (1 hour): every timer the core arms is at most a
/// small multiple of one setting, so deadlines stay far from `Instant`'s limits.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(3600);
/// Shortest `min_rto` and `heartbeat_interval` (1 ms): below it a node would retransmit or
/// heartbeat in a busy loop.
pub const MIN_TIMER: Duration = Duration::from_millis(1);
/// Largest `max_cwnd` (1 GiB).
pub const MAX_CWND: usize = 1 << 30;

/// Why a configuration was refused: which setting, its value and the range it must be in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration outside the range it must be in.
    #[error("{field} = {value:?} is outside {min:?}..={max:?}")]
    Duration {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// Smallest allowed value.
        min: Duration,
        /// Largest allowed value.
        max: Duration,
    },
    /// A number (size, count) outside the range it must be in.
    #[error("{field} = {value} is outside {min}..={max}")]
    Number {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Any other inconsistency (what is wrong is in the message).
    #[error("{0}")]
    Other(String),
}

/// `Err(ConfigError::Duration)` unless `min <= value <= max`.
fn duration_in(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Duration {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// `Err(ConfigError::Number)` unless `min <= value <= max`.
pub(crate) fn number_in(
    field: &'static str,
    value: impl TryInto<u64>,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    let value = value.try_into().unwrap_or(u64::MAX);
    if value < min || value > max {
        return Err(ConfigError::Number {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Configuration of a [`Core`](super::Core). `Default` suits a LAN or loopback.
///
/// [`CoreConfig::validate`] (called by `Core::new` and `NodeConfig::open`) enforces the bounds
/// given on each field; every duration is at most [`MAX_CONFIG_DURATION`] (1 hour).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Largest datagram this node sends (UDP payload bytes): 1472 for a
    /// 1500-byte Ethernet path; loopback can take up to 65 507. Bounds: 176..=65 507.
    pub mtu: usize,
    /// How many equal-size datagrams one [`Transmit`](super::Transmit) may
    /// carry (for UDP GSO); 1 without GSO. Bounds: 1..=64.
    pub max_segments: usize,
    /// Most peers this node keeps state for. At least 1.
    pub max_peers: usize,
    /// Messages per peer this node accepts beyond the last one the
    /// application consumed (persisted but undelivered, or out of order). At least 1.
    pub recv_window_msgs: u32,
    /// Messages the sender keeps in flight before the peer's first ack tells
    /// it the peer's real window. At least 1.
    pub initial_window_msgs: u32,
    /// Most bytes of half-assembled fragmented messages, over all peers. A message longer
    /// than this that needs fragments is never received: keep it at least the longest
    /// message peers send (default 64 MiB). One peer may hold at most half of it, or one
    /// largest message (16 MiB) if that is more, so a budget of at least 32 MiB always
    /// leaves room for other peers.
    pub max_reassembly_bytes: usize,
    /// Most half-assembled messages per peer (default 256). At least 1. On a lossy path
    /// most long messages wait for a resent fragment while newer ones arrive: a small cap
    /// makes the receiver refuse the newer ones' fragments, all of which go again.
    pub max_reassemblies_per_peer: usize,
    /// RTT assumed before the first measurement. Bounds: 0..=1 h.
    pub initial_rtt: Duration,
    /// Lower bound of the probe (retransmission) timeout. A timeout that fires early costs
    /// one datagram sent again, not the congestion window. Bounds: 1 ms..=`max_rto`.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout, after backoff. Bounds: `min_rto`..=1 h.
    pub max_rto: Duration,
    /// Heartbeat period for peers with something pending or recently heard (an unreachable
    /// peer is probed up to 8× slower). Bounds: 1 ms..=1 h.
    pub heartbeat_interval: Duration,
    /// Silence after which an engaged peer is reported unreachable (a peer heard within 3×
    /// this keeps getting heartbeats). Bounds: `heartbeat_interval`..=1 h.
    pub unreachable_after: Duration,
    /// Congestion window at start, in bytes. Bounds: 1..=`max_cwnd` (raised to two datagrams
    /// if smaller).
    pub initial_cwnd: usize,
    /// Largest congestion window, in bytes. Bounds: 2·`mtu` (the window persistent congestion
    /// collapses to)..=1 GiB.
    pub max_cwnd: usize,
    /// Share of a round trip's bytes (per mille) that may be lost before the congestion
    /// window shrinks, as a smoothed rate over round trips. 0 makes every loss episode halve
    /// the window (NewReno). The default, 100 (10%), lets random loss on a path that is not
    /// full cost retransmissions but not throughput; a queue that overflows still cuts the
    /// window at once. Bounds: 0..=1000.
    pub loss_tolerance_per_mille: u32,
    /// Most unsolicited answers (to datagrams from senders that do not know
    /// this node's epoch) per second, over all sources, for challenges and for responses
    /// each. At least 1: a node that never answers can never be reached by a peer that
    /// does not know it yet.
    pub max_unsolicited_per_sec: u32,
    /// The cluster key, if any: every datagram this node sends carries a tag made with it,
    /// and every datagram without a valid tag is dropped before any state is touched
    /// ([`DropReason::Unauthenticated`](super::DropReason::Unauthenticated),
    /// [`DropReason::BadTag`](super::DropReason::BadTag)). Nodes with and without a key, or
    /// with different keys, cannot talk. Default: none.
    pub cluster_key: Option<super::ClusterKey>,
    /// With a `cluster_key`: also encipher every datagram's frames (XChaCha20-Poly1305 under
    /// a key derived from the cluster key), so payloads, seqs and acknowledgements are not
    /// readable on the path. Costs 24 bytes per datagram and a pass of the cipher. A node
    /// with the key accepts enciphered and authenticated-only datagrams alike, so a cluster
    /// can switch one node at a time. Default: off.
    pub encrypt: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            mtu: hrpc_wire::DEFAULT_MTU,
            max_segments: 1,
            max_peers: 1024,
            recv_window_msgs: 1 << 16,
            initial_window_msgs: 1024,
            max_reassembly_bytes: 64 << 20,
            max_reassemblies_per_peer: 256,
            initial_rtt: Duration::from_millis(50),
            min_rto: Duration::from_millis(2),
            max_rto: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            unreachable_after: Duration::from_secs(5),
            initial_cwnd: 256 << 10,
            max_cwnd: 64 << 20,
            loss_tolerance_per_mille: 100,
            max_unsolicited_per_sec: 1000,
            cluster_key: None,
            encrypt: false,
        }
    }
}

impl CoreConfig {
    /// Checks every setting against the bounds documented on its field, and the settings
    /// against each other. A configuration that passes cannot make the core panic (no timer
    /// arithmetic overflows) and can exchange messages.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.encrypt && self.cluster_key.is_none() {
            return Err(ConfigError::Other(
                "encrypt needs a cluster_key to derive its key from".into(),
            ));
        }
        let min_mtu = hrpc_wire::HEADER_LEN + hrpc_wire::AUTH_TAG_LEN + 128;
        number_in(
            "mtu",
            self.mtu,
            min_mtu as u64,
            hrpc_wire::MAX_DATAGRAM_LEN as u64,
        )?;
        number_in("max_segments", self.max_segments, 1, 64)?;
        number_in("max_peers", self.max_peers, 1, u64::MAX)?;
        number_in("recv_window_msgs", self.recv_window_msgs, 1, u64::MAX)?;
        number_in("initial_window_msgs", self.initial_window_msgs, 1, u64::MAX)?;
        number_in(
            "max_reassemblies_per_peer",
            self.max_reassemblies_per_peer,
            1,
            u64::MAX,
        )?;
        let hour = MAX_CONFIG_DURATION;
        duration_in("initial_rtt", self.initial_rtt, Duration::ZERO, hour)?;
        duration_in("max_rto", self.max_rto, MIN_TIMER, hour)?;
        duration_in("min_rto", self.min_rto, MIN_TIMER, self.max_rto)?;
        duration_in(
            "heartbeat_interval",
            self.heartbeat_interval,
            MIN_TIMER,
            hour,
        )?;
        duration_in(
            "unreachable_after",
            self.unreachable_after,
            self.heartbeat_interval,
            hour,
        )?;
        number_in(
            "max_cwnd",
            self.max_cwnd,
            2 * self.mtu as u64,
            MAX_CWND as u64,
        )?;
        number_in("initial_cwnd", self.initial_cwnd, 1, self.max_cwnd as u64)?;
        number_in(
            "loss_tolerance_per_mille",
            self.loss_tolerance_per_mille,
            0,
            1000,
        )?;
        number_in(
            "max_unsolicited_per_sec",
            self.max_unsolicited_per_sec,
            1,
            u64::MAX,
        )?;
        Ok(())
    }
}
