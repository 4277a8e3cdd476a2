//! Benchmarks of hrpc: criterion micro-benchmarks and the `hrpc-bench` command.
//!
//! The criterion benches live in `benches/`: `wire` (encode and decode of a full datagram),
//! `store` (commit+free, group commit, recovery, disk footprint) and `core` (two protocol
//! cores moving messages without sockets); `cargo bench -p hrpc-bench --bench NAME` runs one.
//!
//! The `hrpc-bench` binary measures whole nodes over loopback UDP; its pieces are the modules
//! here, usable from tests:
//!
//! - [`seed`]: `server` / `client`, the original C library's README benchmark;
//! - [`pair`]: receiver and senders as two child processes, every message checked with
//!   [`payload`], optionally through the impairing [`relay`];
//! - [`raw`]: the plain-UDP ceiling with the same batching syscalls;
//! - [`latency`]: ping-pong round trips, hrpc and raw UDP;
//! - [`peer`]: the same one-way test with quinn and renet;
//! - [`soak`]: two nodes exchanging messages through the relay while they are SIGKILLed and
//!   restarted, every delivery checked from a durable log;
//! - [`report`]: the matrix `cargo xtask bench` runs, written as Markdown and SVG;
//! - [`procs`]: signals, peak RSS and child processes that die with their parent;
//! - [`inspect`]: `hrpc-bench inspect`, a read-only report on a store directory.
#![forbid(unsafe_code)]

pub mod c_seed;
pub mod inspect;
pub mod latency;
pub mod pair;
pub mod payload;
pub mod peer;
pub mod procs;
pub mod raw;
pub mod relay;
pub mod report;
pub mod seed;
pub mod soak;
