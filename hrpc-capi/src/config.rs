//! `hrpc_config` (how to open a node), `hrpc_stats` (its counters), and turning a C resolver
//! into a [`Resolver`](hrpc_node::Resolver).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hrpc_node::{Durability, NodeConfig, NodeStats};
use nix::libc::{AF_INET, sa_family_t, sockaddr_in};

use crate::error::CapiError;

/// `HRPC_DURABILITY_PROCESS`: a committed message survives the process being killed.
pub const HRPC_DURABILITY_PROCESS: u32 = 0;
/// `HRPC_DURABILITY_SYNC`: also an OS crash or power loss, after the next poll.
pub const HRPC_DURABILITY_SYNC: u32 = 1;

/// `hrpc_resolve_fn`: fills `*addr` and returns 1 for a known node id, 0 otherwise.
pub type HrpcResolveFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, node_id: u32, addr: *mut sockaddr_in) -> c_int>;

/// `hrpc_config`: how to open a node (see `hrpc.h` for each field).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct hrpc_config {
    /// Store directory (required).
    pub store_path: *const c_char,
    /// Nonzero node id (required).
    pub node_id: u32,
    /// Port to bind; 0 for an ephemeral one.
    pub bind_port: u16,
    /// Must be 0.
    pub reserved: u16,
    /// Dotted IPv4 address to bind; null for 0.0.0.0.
    pub bind_ip: *const c_char,
    /// Resolver; null if peers are known only once they have spoken.
    pub resolve: HrpcResolveFn,
    /// Passed to `resolve`.
    pub resolve_ctx: *mut c_void,
    /// Largest datagram; 0 for the default (1472).
    pub mtu: u32,
    /// [`HRPC_DURABILITY_PROCESS`] or [`HRPC_DURABILITY_SYNC`].
    pub durability: u32,
    /// Store capacity in bytes; 0 for the default (1 GiB).
    pub store_capacity: u64,
    /// Unacknowledged messages per peer before sends are refused; 0 for the default (65 536).
    pub max_unacked_per_peer: u64,
    /// How long `hrpc_node_send` and `hrpc_node_send_copy` drive the node on backpressure
    /// before they give up; 0: no wait.
    pub send_block_ms: u32,
    /// Must be 0.
    pub reserved2: u32,
}

/// `hrpc_stats`: a node's counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct hrpc_stats {
    /// Messages sent for the first time.
    pub messages_sent: u64,
    /// Messages sent again.
    pub messages_retransmitted: u64,
    /// Outbound messages the peers persisted.
    pub messages_acked: u64,
    /// Inbound messages persisted.
    pub messages_received: u64,
    /// Inbound messages handed to callbacks.
    pub messages_delivered: u64,
    /// Inbound seqs reported lost.
    pub messages_lost: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Polls.
    pub polls: u64,
    /// Messages committed and not yet acknowledged.
    pub unacked: u64,
}

impl hrpc_stats {
    pub(crate) fn from_node(s: &NodeStats, unacked: u64) -> Self {
        hrpc_stats {
            messages_sent: s.core.messages_sent,
            messages_retransmitted: s.core.messages_retransmitted,
            messages_acked: s.core.messages_acked,
            messages_received: s.core.messages_received,
            messages_delivered: s.core.messages_delivered,
            messages_lost: s.core.messages_lost,
            datagrams_sent: s.core.datagrams_sent,
            datagrams_received: s.core.datagrams_received,
            bytes_sent: s.core.bytes_sent,
            bytes_received: s.core.bytes_received,
            polls: s.polls,
            unacked,
        }
    }
}

/// The defaults `hrpc_config_init` fills in.
pub(crate) fn default_config(store_path: *const c_char, node_id: u32) -> hrpc_config {
    hrpc_config {
        store_path,
        node_id,
        bind_port: 0,
        reserved: 0,
        bind_ip: std::ptr::null(),
        resolve: None,
        resolve_ctx: std::ptr::null_mut(),
        mtu: 0,
        durability: HRPC_DURABILITY_PROCESS,
        store_capacity: 0,
        max_unacked_per_peer: 0,
        send_block_ms: 0,
        reserved2: 0,
    }
}

/// A `sockaddr_in` from C as a socket address: `None` unless it is AF_INET with a nonzero
/// port (the original library's `get_addr` returns a zeroed struct for an unknown node).
pub(crate) fn socket_addr(a: &sockaddr_in) -> Option<SocketAddr> {
    if a.sin_family != AF_INET as sa_family_t || a.sin_port == 0 {
        return None;
    }
    let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
    Some(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(a.sin_port),
    )))
}

/// A C resolver and its context pointer.
struct CResolver {
    resolve: unsafe extern "C" fn(*mut c_void, u32, *mut sockaddr_in) -> c_int,
    ctx: *mut c_void,
}

// SAFETY: the node calls its resolver only from the thread that polls it, and the C contract
// (hrpc.h) is that a node is driven by one thread at a time; the context pointer is only
// handed back to the caller's own function.
unsafe impl Send for CResolver {}

impl hrpc_node::Resolver for CResolver {
    fn resolve(&mut self, peer: u32) -> Option<SocketAddr> {
        // SAFETY: an all-zero sockaddr_in is a valid value of this plain C struct.
        let mut addr: sockaddr_in = unsafe { std::mem::zeroed() };
        // SAFETY: the caller gave this function and context in hrpc_config; the pointer
        // passed is to a live, writable sockaddr_in on this stack frame.
        let found = unsafe { (self.resolve)(self.ctx, peer, &mut addr) };
        if found == 1 { socket_addr(&addr) } else { None }
    }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &'static str) -> Result<&'a str, CapiError> {
    if p.is_null() {
        return Err(CapiError::InvalidArgument(what));
    }
    // SAFETY: non-null, and NUL-terminated and valid per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| CapiError::InvalidArgument(what))
}

/// What the C configuration asks for: the node's configuration and the send wait.
///
/// # Safety
/// The pointers in `c` are null or valid as `hrpc.h` documents for the duration of the call
/// (`resolve_ctx` as long as the node lives).
pub(crate) unsafe fn node_config(c: &hrpc_config) -> Result<(NodeConfig, Duration), CapiError> {
    // SAFETY: per this function's contract.
    let path = unsafe { c_str(c.store_path, "store_path is null or not UTF-8") }?;
    if path.is_empty() {
        return Err(CapiError::InvalidArgument("store_path is empty"));
    }
    if c.node_id == 0 {
        return Err(CapiError::InvalidArgument("node_id must be nonzero"));
    }
    if c.reserved != 0 || c.reserved2 != 0 {
        return Err(CapiError::InvalidArgument("reserved fields must be 0"));
    }
    let ip = if c.bind_ip.is_null() {
        Ipv4Addr::UNSPECIFIED
    } else {
        // SAFETY: per this function's contract.
        let s = unsafe { c_str(c.bind_ip, "bind_ip is not UTF-8") }?;
        s.parse()
            .map_err(|_| CapiError::InvalidArgument("bind_ip is not a dotted IPv4 address"))?
    };
    let mut cfg =
        NodeConfig::new(path, c.node_id).bind(SocketAddr::V4(SocketAddrV4::new(ip, c.bind_port)));
    if let Some(resolve) = c.resolve {
        cfg = cfg.resolver(CResolver {
            resolve,
            ctx: c.resolve_ctx,
        });
    }
    if c.mtu != 0 {
        cfg = cfg.mtu(c.mtu as usize);
    }
    cfg = cfg.durability(match c.durability {
        HRPC_DURABILITY_PROCESS => Durability::Process,
        HRPC_DURABILITY_SYNC => Durability::Sync,
        _ => {
            return Err(CapiError::InvalidArgument(
                "durability is not HRPC_DURABILITY_*",
            ));
        }
    });
    if c.store_capacity != 0 {
        cfg = cfg.store_capacity(c.store_capacity);
    }
    if c.max_unacked_per_peer != 0 {
        cfg = cfg.max_unacked_per_peer(c.max_unacked_per_peer);
    }
    Ok((cfg, Duration::from_millis(u64::from(c.send_block_ms))))
}
