//! Benchmarks of hrpc.
//!
//! The criterion benches live in `benches/`: `wire` (encode and decode of a
//! full datagram), `store` (commit+free, group commit, recovery, disk
//! footprint) and `core` (two protocol cores moving messages without
//! sockets). `cargo xtask bench` runs them; `cargo bench -p hrpc-bench --bench
//! NAME` runs one. The command-line benchmark of whole nodes over UDP is
//! still to come; until then `hrpc-node`'s `seed_bench` example reproduces the
//! original C library's benchmark.
#![forbid(unsafe_code)]
