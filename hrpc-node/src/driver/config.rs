//! [`NodeConfig`]: the builder users open a [`Node`](super::Node) with, and [`NodeError`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use hrpc_store::{Durability, StoreError};

use super::udp::UdpConfig;
use crate::proto::{ConfigError, CoreConfig, Resolver};

/// Why [`NodeConfig::open`] or a [`Node`](super::Node) operation failed.
///
/// A store directory belongs to one running node; its bind address too:
///
/// ```
/// use std::time::Duration;
/// use hrpc_node::{NodeConfig, NodeError};
///
/// let dir = tempfile::tempdir()?;
/// let store = dir.path().join("node1");
/// let node = NodeConfig::new(&store, 1).open()?;
/// match NodeConfig::new(&store, 1).open() {
///     Err(NodeError::StoreLocked { path }) => assert_eq!(path, store),
///     other => panic!("expected StoreLocked, got {other:?}"),
/// }
///
/// let taken = node.local_addr();
/// match NodeConfig::new(dir.path().join("node2"), 2).bind(taken).open() {
///     Err(NodeError::AddrInUse { addr }) => assert_eq!(addr, taken),
///     other => panic!("expected AddrInUse, got {other:?}"),
/// }
///
/// // Once the node is closed, its directory opens again.
/// node.close(Duration::from_millis(10))?;
/// let node = NodeConfig::new(&store, 1).open()?;
/// # drop(node);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A setting is out of bounds or the settings are inconsistent: which one, its value and
    /// the allowed range are in the [`ConfigError`].
    #[error("invalid node configuration: {0}")]
    Config(ConfigError),
    /// Another process (or another node in this process) has the store open — or a closed
    /// node of this process still has a send filling its message (the store is released when
    /// that send returns, with [`SendError::Closed`]; see [`Node::close`](super::Node::close)).
    #[error("store {path} is locked by another process or node")]
    StoreLocked {
        /// The store directory.
        path: PathBuf,
    },
    /// The bind address is taken.
    #[error("address {addr} is already in use")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The socket could not be set up.
    #[error("cannot bind UDP socket at {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The store failed (corruption, I/O, a sticky sync failure, ...); what happened is the
    /// [`source`](std::error::Error::source).
    #[error("node store failed")]
    Store(#[from] StoreError),
    /// An I/O error on the socket or the wake-up fd that the node cannot ride out (the OS
    /// error is the source).
    #[error("node I/O error")]
    Io(#[from] io::Error),
    /// The protocol core failed (a message recorded as persisted is missing, or a store failure
    /// met while handling acknowledgements); the
    /// [`CoreError`](crate::proto::CoreError) is the source.
    #[error("protocol core failed")]
    Core(#[source] crate::proto::CoreError),
    /// The node was closed.
    #[error("node is closed")]
    Closed,
    /// [`Node::flush`](super::Node::flush) timed out with messages still unacknowledged.
    #[error("{pending} message(s) still unacknowledged when the flush timed out")]
    FlushTimeout {
        /// Messages committed and not yet acknowledged.
        pending: u64,
    },
}

/// Where a node listens unless [`NodeConfig::bind`] says otherwise: an ephemeral port on
/// loopback (127.0.0.1:0), reachable from this host only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// Smallest socket buffer [`NodeConfig::socket_buffers`] accepts (128 KiB): room for two of
/// the largest datagrams, so none is always dropped.
pub const MIN_SOCKET_BUFFER: usize = 128 << 10;
/// Largest socket buffer [`NodeConfig::socket_buffers`] accepts (1 GiB).
pub const MAX_SOCKET_BUFFER: usize = 1 << 30;

/// Why a send was refused. Nothing was committed when this is returned.
///
/// Backpressure ([`SendError::is_backpressure`]) passes once the node has polled and the peer
/// has acknowledged; the other kinds do not:
///
/// ```
/// use std::time::Duration;
/// use hrpc_node::{NodeConfig, SendError};
///
/// let dir = tempfile::tempdir()?;
/// let node = NodeConfig::new(dir.path().join("node1"), 1)
///     .max_unacked_per_peer(2)
///     .open()?;
/// let sender = node.sender();
///
/// // Node 0 does not exist, and a node does not send to itself.
/// assert!(matches!(sender.send(0, b"x"), Err(SendError::InvalidPeer(0))));
/// assert!(matches!(sender.send(1, b"x"), Err(SendError::InvalidPeer(1))));
///
/// // Peer 2 is not running, so nothing is acknowledged: the third message waits.
/// sender.send(2, b"a")?;
/// sender.send(2, b"b")?;
/// match sender.send(2, b"c") {
///     Err(e) if e.is_backpressure() => {
///         assert!(matches!(e, SendError::WindowFull { peer: 2, unacked: 2, .. }));
///         // A real sender polls the node (or lets its thread do so) and tries again.
///     }
///     other => panic!("expected backpressure, got {other:?}"),
/// }
///
/// // A closed node commits nothing more.
/// node.close(Duration::from_millis(10))?;
/// assert!(matches!(sender.send(2, b"d"), Err(SendError::Closed)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Backpressure: the store is at its capacity or the disk is full. Retry after the node
    /// has polled (acknowledgements free space). Only for a message that fits once
    /// acknowledged messages are freed; one that never could is [`SendError::TooLarge`].
    #[error("store full (backpressure)")]
    StoreFull(#[source] StoreError),
    /// Backpressure: this many messages (or bytes) to the peer are already unacknowledged
    /// ([`NodeConfig::max_unacked_per_peer`], [`NodeConfig::max_unacked_bytes_per_peer`]).
    /// Retry after the node has polled.
    #[error(
        "peer {peer} has {unacked} unacknowledged messages of {unacked_bytes} bytes (limit reached)"
    )]
    WindowFull {
        /// The peer.
        peer: u32,
        /// Messages committed and not yet acknowledged.
        unacked: u64,
        /// Their payload bytes.
        unacked_bytes: u64,
    },
    /// The message can never be sent: it is larger than [`hrpc_wire::MAX_MESSAGE_LEN`], or than
    /// the largest message the store's capacity can ever hold (`max`). Not backpressure.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// The largest message this node can send.
        max: usize,
    },
    /// Node id 0 or this node's own id.
    #[error("invalid destination node id {0}")]
    InvalidPeer(u32),
    /// The node was closed.
    #[error("node is closed")]
    Closed,
    /// A reply was asked for a delivery that is not a request
    /// ([`MessageKind::Request`](crate::MessageKind::Request)).
    #[error("message {seq} from peer {peer} is not a request")]
    NotARequest {
        /// The delivery's sender.
        peer: u32,
        /// Its seq.
        seq: u64,
    },
    /// Any other store failure (a sticky sync failure, too many peers, ...), as the source.
    #[error("store refused the message")]
    Store(#[source] StoreError),
}

impl SendError {
    /// True for the backpressure kinds ([`SendError::StoreFull`], [`SendError::WindowFull`]):
    /// retry after polling.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, SendError::StoreFull(_) | SendError::WindowFull { .. })
    }
}

impl From<StoreError> for SendError {
    /// [`StoreError::WindowFull`] becomes [`SendError::WindowFull`], [`StoreError::Closed`]
    /// [`SendError::Closed`]; other backpressure ([`StoreError::is_backpressure`]: `Full`,
    /// `NoSpace`) becomes [`SendError::StoreFull`]; a message that can never fit becomes
    /// [`SendError::TooLarge`]; everything else [`SendError::Store`].
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WindowFull {
                peer,
                unacked,
                unacked_bytes,
            } => SendError::WindowFull {
                peer,
                unacked,
                unacked_bytes,
            },
            StoreError::Closed => SendError::Closed,
            e if e.is_backpressure() => SendError::StoreFull(e),
            StoreError::TooLarge { len, max } => SendError::TooLarge { len, max },
            e => SendError::Store(e),
        }
    }
}

/// How to find peers: a static table, a callback, or both (table first).
pub(crate) struct PeerTable {
    pub(crate) fixed: HashMap<u32, SocketAddr>,
    pub(crate) callback: Option<Box<dyn Resolver>>,
}

impl Resolver for PeerTable {
    fn resolve(&mut self, peer: u32) -> Option<SocketAddr> {
        match self.fixed.get(&peer) {
            Some(a) => Some(*a),
            None => self.callback.as_mut().and_then(|c| c.resolve(peer)),
        }
    }
}

/// Everything [`Node::open`](super::Node::open) needs. Build with [`NodeConfig::new`] and the
/// chained setters, then call [`NodeConfig::open`].
///
/// ```
/// use hrpc_node::{Durability, NodeConfig, NodeError};
///
/// let dir = tempfile::tempdir()?;
/// let node = NodeConfig::new(dir.path().join("node1"), 1)
///     // A fixed address in production (say 10.0.0.1:5670); here any free loopback port.
///     .bind("127.0.0.1:0".parse()?)
///     .peer(2, "127.0.0.1:5671".parse()?)
///     .durability(Durability::Sync)
///     .store_capacity(64 << 20)
///     .max_unacked_per_peer(1024)
///     .open()?;
/// assert_eq!(node.node_id(), 1);
/// assert!(node.local_addr().ip().is_loopback());
/// assert_ne!(node.local_addr().port(), 0);
///
/// // The settings are checked when the node opens: id 0 is reserved.
/// let e = NodeConfig::new(dir.path().join("node0"), 0).open().unwrap_err();
/// assert!(matches!(e, NodeError::Config(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NodeConfig {
    pub(crate) store_dir: PathBuf,
    pub(crate) node_id: u32,
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) peers: PeerTable,
    pub(crate) durability: Durability,
    pub(crate) store_capacity: u64,
    pub(crate) store_max_peers: u32,
    pub(crate) recover_damaged: bool,
    pub(crate) core: CoreConfig,
    pub(crate) udp: UdpConfig,
    pub(crate) max_unacked_per_peer: u64,
    pub(crate) max_unacked_bytes_per_peer: u64,
    pub(crate) deliveries_per_poll: usize,
    pub(crate) recv_batches_per_poll: usize,
    pub(crate) transmits_per_poll: usize,
    #[cfg(feature = "metrics")]
    pub(crate) metrics_interval: std::time::Duration,
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("store_dir", &self.store_dir)
            .field("node_id", &self.node_id)
            .field("bind", &self.bind)
            .field("peers", &self.peers.fixed)
            .field("resolver_callback", &self.peers.callback.is_some())
            .field("durability", &self.durability)
            .field("store_capacity", &self.store_capacity)
            .field("core", &self.core)
            .field("udp", &self.udp)
            .field("max_unacked_per_peer", &self.max_unacked_per_peer)
            .field(
                "max_unacked_bytes_per_peer",
                &self.max_unacked_bytes_per_peer,
            )
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A node with id `node_id` (nonzero) keeping its store in `store_dir` (created if
    /// missing). Defaults: [`DEFAULT_BIND`] (an ephemeral port on loopback: other hosts cannot
    /// reach the node until [`NodeConfig::bind`] names an address they can reach),
    /// no peers known in advance, MTU 1472, [`Durability::Process`], 1 GiB store, GSO/GRO on.
    pub fn new(store_dir: impl Into<PathBuf>, node_id: u32) -> Self {
        NodeConfig {
            store_dir: store_dir.into(),
            node_id,
            bind: None,
            peers: PeerTable {
                fixed: HashMap::new(),
                callback: None,
            },
            durability: Durability::Process,
            store_capacity: 1 << 30,
            store_max_peers: 1024,
            recover_damaged: false,
            core: CoreConfig::default(),
            udp: UdpConfig::default(),
            max_unacked_per_peer: 1 << 16,
            max_unacked_bytes_per_peer: 32 << 20,
            deliveries_per_poll: 1 << 16,
            recv_batches_per_poll: 64,
            transmits_per_poll: 256,
            #[cfg(feature = "metrics")]
            metrics_interval: super::DEFAULT_METRICS_INTERVAL,
        }
    }

    /// Opens a store whose files were damaged while the node was stopped (cut short,
    /// overwritten, replaced by a stale copy). Default `false`: [`NodeConfig::open`] fails with
    /// [`NodeError::Store`]`(`[`StoreError::Damaged`]`)` naming the file, offset and problem,
    /// and changes nothing. With `true` the node opens anyway; [`Node::open_report`] lists
    /// what was found and which outbound seqs were lost, an
    /// [`Event::OutboundLost`](crate::Event::OutboundLost) is queued for each lost range, and
    /// the peers are told (they report [`Event::Lost`](crate::Event::Lost) for what they did
    /// not receive), so no stream stalls.
    ///
    /// [`Node::open_report`]: super::Node::open_report
    pub fn recover_damaged(mut self, on: bool) -> Self {
        self.recover_damaged = on;
        self
    }

    /// Binds the socket to `addr` (a fixed port peers can resolve). Without it the node uses
    /// [`DEFAULT_BIND`], an ephemeral port on loopback, and peers on this host learn its address
    /// by a handshake (a challenge it answers from there).
    ///
    /// Binding a non-loopback address, or all interfaces (`0.0.0.0:port`, `[::]:port`), is the
    /// way to reach other hosts, and exposes the node to everyone who can send UDP to that
    /// port: without a cluster key any of them can attempt the handshake
    /// and, under an unused node id, become a peer and send it messages (see "Threat model"
    /// in `docs/design.md`). Bind the one address your peers use, and filter the port.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Adds `peer` at `addr` to the static address table.
    pub fn peer(mut self, peer: u32, addr: SocketAddr) -> Self {
        self.peers.fixed.insert(peer, addr);
        self
    }

    /// Adds all of `peers` to the static address table.
    pub fn peers(mut self, peers: impl IntoIterator<Item = (u32, SocketAddr)>) -> Self {
        self.peers.fixed.extend(peers);
        self
    }

    /// A resolver consulted for peers not in the static table (the seed's `get_addr`): any
    /// `FnMut(u32) -> Option<SocketAddr> + Send`, or a [`Resolver`]. Called again when a peer
    /// became unreachable, in case it moved.
    pub fn resolver(mut self, resolver: impl Resolver + 'static) -> Self {
        self.peers.callback = Some(Box::new(resolver));
        self
    }

    /// Authenticates every datagram with a key shared by the cluster: datagrams without its
    /// tag are dropped before any state is touched, so only holders of the key can talk to
    /// this node (see [`CoreConfig::cluster_key`]). Payloads still travel in the clear.
    pub fn cluster_key(mut self, key: crate::ClusterKey) -> Self {
        self.core.cluster_key = Some(key);
        self
    }

    /// With a [`NodeConfig::cluster_key`]: also encipher every datagram's frames, so payloads
    /// are not readable on the path (see [`CoreConfig::encrypt`]). Off by default.
    pub fn encrypt(mut self, on: bool) -> Self {
        self.core.encrypt = on;
        self
    }

    /// Largest datagram to send (UDP payload bytes). 1472 suits Ethernet; loopback-only nodes
    /// may use up to 65 507. Bounds: 176..=65 507.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.core.mtu = mtu;
        self.udp.mtu = mtu;
        self
    }

    /// [`Durability::Sync`] adds power-loss durability with one group commit per poll.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Limit on store bytes in use; sends beyond it get [`SendError::StoreFull`], and a message
    /// whose slot is larger than the whole capacity gets [`SendError::TooLarge`]. At least
    /// [`hrpc_store::MIN_CAPACITY`] (64 KiB), else [`NodeConfig::open`] fails.
    pub fn store_capacity(mut self, bytes: u64) -> Self {
        self.store_capacity = bytes;
        self
    }

    /// Peer table size of the store, fixed when the store is created.
    pub fn store_max_peers(mut self, peers: u32) -> Self {
        self.store_max_peers = peers;
        self
    }

    /// Unacknowledged messages per peer beyond which sends get [`SendError::WindowFull`]
    /// (default 65 536; at least 1). Exact: sends in progress on other threads count too.
    pub fn max_unacked_per_peer(mut self, msgs: u64) -> Self {
        self.max_unacked_per_peer = msgs;
        self
    }

    /// Unacknowledged payload bytes per peer beyond which sends get [`SendError::WindowFull`]
    /// (default 32 MiB: two messages of the largest size; at least 1). A message larger than
    /// this still goes when nothing else to the peer is pending. Bounds the store, and so the
    /// memory, a fast sender of large messages fills ahead of a slower peer.
    pub fn max_unacked_bytes_per_peer(mut self, bytes: u64) -> Self {
        self.max_unacked_bytes_per_peer = bytes;
        self
    }

    /// Messages per peer this node accepts ahead of what the application consumed. At least 1.
    pub fn recv_window(mut self, msgs: u32) -> Self {
        self.core.recv_window_msgs = msgs;
        self
    }

    /// Most deliveries one [`Node::poll`](super::Node::poll) makes (the rest wait for the next).
    /// At least 1.
    pub fn deliveries_per_poll(mut self, n: usize) -> Self {
        self.deliveries_per_poll = n;
        self
    }

    /// Use UDP GSO when the kernel has it (default on). Off forces the `sendmmsg` path.
    pub fn gso(mut self, on: bool) -> Self {
        self.udp.gso = on;
        self
    }

    /// Use UDP GRO when the kernel has it (default on).
    pub fn gro(mut self, on: bool) -> Self {
        self.udp.gro = on;
        self
    }

    /// Requested `SO_RCVBUF` / `SO_SNDBUF` sizes in bytes (default 8 MiB / 4 MiB). Bounds:
    /// [`MIN_SOCKET_BUFFER`] (128 KiB: two of the largest datagrams)..=[`MAX_SOCKET_BUFFER`]
    /// (1 GiB) each.
    pub fn socket_buffers(mut self, recv: usize, send: usize) -> Self {
        self.udp.recv_buffer = recv;
        self.udp.send_buffer = send;
        self
    }

    /// Replaces the protocol tunables (timers, windows, limits; bounds on
    /// [`CoreConfig`]'s fields, checked by [`NodeConfig::open`]). Its `mtu` is overridden by
    /// [`NodeConfig::mtu`] if that is called afterwards, and its `max_segments` is capped by
    /// what the socket supports.
    pub fn core_config(mut self, core: CoreConfig) -> Self {
        self.udp.mtu = core.mtu;
        self.core = core;
        self
    }

    /// How often [`Node::poll`](super::Node::poll) publishes the node's metrics (feature
    /// `metrics`; default [`DEFAULT_METRICS_INTERVAL`](super::DEFAULT_METRICS_INTERVAL), 1 s).
    /// Between publications a poll only compares two instants. Zero publishes on every poll
    /// (for tests). [`Node::close`](super::Node::close) publishes a last time.
    #[cfg(feature = "metrics")]
    pub fn metrics_interval(mut self, every: std::time::Duration) -> Self {
        self.metrics_interval = every;
        self
    }

    /// Opens the store, binds the socket and returns the node. See
    /// [`Node::open`](super::Node::open).
    pub fn open(self) -> Result<super::Node, NodeError> {
        super::Node::open(self)
    }

    /// Checks the node's own settings against the bounds documented on their setters, then
    /// the [`CoreConfig`] ([`CoreConfig::validate`]).
    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: &str| Err(NodeError::Config(ConfigError::Other(m.to_owned())));
        let range = |field, value: usize, min: usize, max: usize| {
            crate::proto::config_number_in(field, value, min as u64, max as u64)
                .map_err(NodeError::Config)
        };
        if self.node_id == 0 {
            return bad("node id must be nonzero");
        }
        if self.store_dir.as_os_str().is_empty() {
            return bad("store directory must be given");
        }
        if self.peers.fixed.contains_key(&self.node_id) {
            // Harmless but almost certainly a mistake in a peer table.
            tracing::debug!(node = self.node_id, "own id in the peer table; ignored");
        }
        if self.peers.fixed.contains_key(&0) {
            return bad("peer id 0 is reserved");
        }
        if self.max_unacked_per_peer == 0 {
            return bad("max_unacked_per_peer must be at least 1");
        }
        if self.max_unacked_bytes_per_peer == 0 {
            return bad("max_unacked_bytes_per_peer must be at least 1");
        }
        range(
            "deliveries_per_poll",
            self.deliveries_per_poll,
            1,
            usize::MAX,
        )?;
        range(
            "recv_batches_per_poll",
            self.recv_batches_per_poll,
            1,
            1 << 16,
        )?;
        range("transmits_per_poll", self.transmits_per_poll, 1, 1 << 20)?;
        if self.store_capacity < hrpc_store::MIN_CAPACITY {
            return Err(NodeError::Config(ConfigError::Other(format!(
                "store capacity of {} bytes is below the minimum of {} bytes",
                self.store_capacity,
                hrpc_store::MIN_CAPACITY
            ))));
        }
        let (lo, hi) = (MIN_SOCKET_BUFFER, MAX_SOCKET_BUFFER);
        range("socket recv buffer", self.udp.recv_buffer, lo, hi)?;
        range("socket send buffer", self.udp.send_buffer, lo, hi)?;
        self.core.validate().map_err(NodeError::Config)
    }
}
