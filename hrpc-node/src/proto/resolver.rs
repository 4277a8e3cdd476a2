//! Finding a peer's address before it has spoken.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Maps a node id to the address to send to, for peers whose address the
/// node has not learned by a handshake (the original C library's `get_addr`).
/// Called again when a peer has become unreachable, in case it moved.
///
/// The resolver is trusted: the node shows a peer its session token at the
/// address the resolver gives, and accepts a restart of the peer claimed from
/// there after one round trip.
pub trait Resolver: Send {
    /// The address of `peer`, if known.
    fn resolve(&mut self, peer: u32) -> Option<SocketAddr>;
}

impl<F> Resolver for F
where
    F: FnMut(u32) -> Option<SocketAddr> + Send,
{
    fn resolve(&mut self, peer: u32) -> Option<SocketAddr> {
        self(peer)
    }
}

/// A fixed table of addresses.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver(pub HashMap<u32, SocketAddr>);

impl Resolver for StaticResolver {
    fn resolve(&mut self, peer: u32) -> Option<SocketAddr> {
        self.0.get(&peer).copied()
    }
}

/// Knows no one: peers are reached only once they have spoken.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(&mut self, _peer: u32) -> Option<SocketAddr> {
        None
    }
}
