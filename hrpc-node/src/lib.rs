//! hrpc-node: the protocol state machine and the UDP driver around it.
#![forbid(unsafe_code)]

pub mod driver;
pub mod proto;
