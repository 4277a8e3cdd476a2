//! A seeded user-space UDP relay that impairs traffic: drop, duplicate, reorder, delay and
//! corrupt datagrams with given probabilities, cut the path during partition windows, and stop
//! by itself after a bounded lifetime.
//!
//! The relay sits between clients and one server, like a NAT: clients send to its
//! [`Relay::front_addr`]; for each client address it opens one socket facing the server, so
//! the server sees every client at its own address and its replies come back through the
//! right socket to the right client. Both directions are impaired with the same
//! [`RelayConfig`]. Only loopback addresses are used.
//!
//! [`Relay::link`] joins two fixed endpoints instead: each side is given the relay address that
//! stands for the other ([`Relay::front_addr`] for `b`, [`Relay::link_addr`] for `a`), so
//! either may send first, and a side that restarts on the same port is reached again through
//! the same addresses. [`partition_schedule`] draws partition windows from a seed.
//!
//! What happens to each datagram is decided by [`Impairment`], a pure function of the seed and
//! the order of datagrams, so it can be tested without sockets:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hrpc_bench::relay::{Impairment, RelayConfig};
//!
//! let mut cfg = RelayConfig::new(7);
//! cfg.duplicate = 1.0;
//! let mut imp = Impairment::new(&cfg, Instant::now());
//! let fate = imp.fate(Instant::now(), 100);
//! assert_eq!(fate.copies().count(), 2);
//! ```

mod forward;
mod handle;
mod impairment;
mod partition;

pub use forward::RelayStats;
pub use handle::Relay;
pub use impairment::{Copy, Fate, Impairment, RelayConfig};
pub use partition::partition_schedule;

/// Most client addresses one relay maps (one server-facing socket each).
pub const MAX_CLIENTS: usize = 4096;
