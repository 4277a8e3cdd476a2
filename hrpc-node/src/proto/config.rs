//! Tunables of the protocol core.

use std::time::Duration;

/// Configuration of a [`Core`](super::Core). `Default` suits a LAN or loopback.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Largest datagram this node sends (UDP payload bytes): 1472 for a
    /// 1500-byte Ethernet path; loopback can take up to 65 507.
    pub mtu: usize,
    /// How many equal-size datagrams one [`Transmit`](super::Transmit) may
    /// carry (for UDP GSO); 1 without GSO.
    pub max_segments: usize,
    /// Most peers this node keeps state for.
    pub max_peers: usize,
    /// Messages per peer this node accepts beyond the last one the
    /// application consumed (persisted but undelivered, or out of order).
    pub recv_window_msgs: u32,
    /// Messages the sender keeps in flight before the peer's first ack tells
    /// it the peer's real window.
    pub initial_window_msgs: u32,
    /// Most bytes of half-assembled fragmented messages, over all peers.
    pub max_reassembly_bytes: usize,
    /// Most half-assembled messages per peer.
    pub max_reassemblies_per_peer: usize,
    /// RTT assumed before the first measurement.
    pub initial_rtt: Duration,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout, after backoff.
    pub max_rto: Duration,
    /// Heartbeat period for peers with something pending or recently heard.
    pub heartbeat_interval: Duration,
    /// Silence after which an engaged peer is reported unreachable.
    pub unreachable_after: Duration,
    /// Congestion window at start, in bytes.
    pub initial_cwnd: usize,
    /// Largest congestion window, in bytes.
    pub max_cwnd: usize,
    /// Most unsolicited answers (to datagrams from senders that do not know
    /// this node's epoch) per second, over all sources.
    pub max_unsolicited_per_sec: u32,
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
            max_reassemblies_per_peer: 8,
            initial_rtt: Duration::from_millis(50),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            unreachable_after: Duration::from_secs(5),
            initial_cwnd: 256 << 10,
            max_cwnd: 64 << 20,
            max_unsolicited_per_sec: 1000,
        }
    }
}

impl CoreConfig {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), &'static str> {
        let min_mtu = hrpc_wire::HEADER_LEN + hrpc_wire::AUTH_TAG_LEN + 128;
        if self.mtu < min_mtu || self.mtu > hrpc_wire::MAX_DATAGRAM_LEN {
            return Err("mtu must be between 176 and 65507 bytes");
        }
        if self.max_segments == 0 || self.max_segments > 64 {
            return Err("max_segments must be 1..=64");
        }
        if self.max_peers == 0 {
            return Err("max_peers must be at least 1");
        }
        if self.recv_window_msgs == 0 || self.initial_window_msgs == 0 {
            return Err("windows must be at least one message");
        }
        if self.max_reassemblies_per_peer == 0 {
            return Err("max_reassemblies_per_peer must be at least 1");
        }
        if self.min_rto.is_zero() || self.min_rto > self.max_rto {
            return Err("need 0 < min_rto <= max_rto");
        }
        if self.heartbeat_interval.is_zero() || self.unreachable_after < self.heartbeat_interval {
            return Err("need 0 < heartbeat_interval <= unreachable_after");
        }
        if self.initial_cwnd == 0 || self.max_cwnd < self.initial_cwnd {
            return Err("need 0 < initial_cwnd <= max_cwnd");
        }
        Ok(())
    }
}
