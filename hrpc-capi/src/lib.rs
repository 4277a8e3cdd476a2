//! hrpc-capi: the C ABI of hrpc, source-compatible with the original C library's `hrpc.h`.
//!
//! `cargo build --release -p hrpc-capi` builds `libhrpc_capi.a` and `libhrpc_capi.so` in
//! `target/release/`, with `hrpc.pc` (pkg-config) and `hrpcConfig.cmake` (CMake
//! `find_package(hrpc)`) beside them; the header is `include/hrpc.h`.
//!
//! Two APIs:
//!
//! - [`compat`]: `hrpc_init`, `hrpc_touch_connect`, `hrpc_is_connected`, `hrpc_send`,
//!   `hrpc_once`, `hrpc_once_timeout`, as in the original library, on one node per thread.
//! - [`handle`]: `hrpc_node_open` … `hrpc_node_close` for any number of nodes, with error
//!   codes ([`error`]).
//!
//! The send buffer `hrpc_send` / `hrpc_node_send` return lies in the node's store (an owned
//! [`hrpc_node::SendReservation`]); it is committed at the caller's next call on that node,
//! or when the message callback that took it returns. No panic crosses into C ([`boundary`]);
//! null pointers and negative sizes are errors. `hrpc.h` is checked against these
//! definitions by `tests/header.rs`.

pub mod boundary;
pub mod compat;
pub mod config;
pub mod error;
pub mod handle;
pub mod node;

pub use config::{HRPC_DURABILITY_PROCESS, HRPC_DURABILITY_SYNC, hrpc_config, hrpc_stats};
pub use error::*;
pub use node::HrpcNode;
