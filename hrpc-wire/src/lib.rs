//! The hrpc datagram format.
//!
//! One UDP datagram carries a fixed 32-byte [header](DatagramHeader) and then
//! any number of frames, packed back to back up to the MTU:
//! [DATA](DataFrame) (a message or a fragment of one), [ACK](AckFrame)
//! (cumulative and selective acknowledgement plus the receiver's window),
//! [HEARTBEAT](HeartbeatFrame) (liveness and cursors) and [RESET](ResetFrame)
//! (epoch notices), [LOST](LostFrame) (seqs the sender will never deliver) and [FRAG_ACK](FragAckFrame) (progress of a long
//! message), [CHALLENGE and RESPONSE](CookieFrame) (address validation). Every datagram carries a crc32c over its bytes (or an
//! authentication tag instead), and every DATA frame the crc32c of its whole
//! message, so a message's checksum travels from the sender's store to the
//! receiver's.
//!
//! Encoding writes straight into the caller's buffer; decoding validates a
//! datagram once and then lends out its frames without copying payloads.
//! Nothing here allocates, does I/O, or panics on input.
//!
//! ```
//! use hrpc_wire::{Datagram, DatagramWriter, DataFrame, Frame, HeaderFields};
//!
//! let header = HeaderFields { src: 2, dst: 1, src_epoch: 7, dst_epoch: 9, auth: false };
//! let mut buf = [0u8; hrpc_wire::DEFAULT_MTU];
//! let mut w = DatagramWriter::new(&mut buf, &header)?;
//! let msg = b"hello";
//! let crc = crc32c::crc32c(msg);
//! w.push_data(&DataFrame { flags: 0, seq: 1, msg_len: 5, offset: 0, msg_crc: crc, payload: msg })?;
//! let len = w.finish();
//!
//! let d = Datagram::parse(&buf[..len])?;
//! assert_eq!(d.header(), header);
//! match d.frames().next() {
//!     Some(Frame::Data(f)) => assert_eq!(f.payload, b"hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The byte layouts are in the [`header`](DatagramHeader) and
//! [frame](crate::Frame) docs and in `docs/design.md`.
#![no_std]
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod decode;
mod encode;
mod error;
mod frame;
mod header;

pub use decode::{Datagram, Frames, decode_frames};
pub use encode::DatagramWriter;
pub use error::{EncodeError, WireError};
pub use frame::{
    ACK_BASE_LEN, AckFrame, COOKIE_LEN, CookieFrame, DATA_FLAG_CALL, DATA_OVERHEAD, DataFrame,
    FRAG_ACK_LEN, FRAG_RANGE_LEN, FRAME_ACK, FRAME_CHALLENGE, FRAME_DATA, FRAME_FRAG_ACK,
    FRAME_HEARTBEAT, FRAME_LOST, FRAME_RESET, FRAME_RESPONSE, FragAckFrame, FragRange, FragRanges,
    Frame, HEARTBEAT_LEN, HeartbeatFrame, LOST_LEN, LostFrame, MAX_FRAG_RANGES, RESET_LEN,
    RawFragRange, RawSack, ResetFrame, ResetReason, SACK_RANGE_LEN, SackRange, SackRanges,
};
pub use header::{
    AUTH_TAG_LEN, DatagramHeader, EncryptedParts, FLAG_AUTH, FLAG_ENCRYPTED, HEADER_LEN,
    HeaderFields, MAGIC, NONCE_LEN, VERSION, encrypted_parts,
};

/// Largest message hrpc carries: 16 MiB.
pub const MAX_MESSAGE_LEN: usize = 16 << 20;
const _: () = assert!(MAX_MESSAGE_LEN >= 16 << 20 && MAX_MESSAGE_LEN <= u32::MAX as usize);
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM_LEN: usize = 65_507;
/// Default datagram size limit: a 1500-byte Ethernet MTU less IPv4 and UDP headers.
pub const DEFAULT_MTU: usize = 1472;
/// Most selective-ack ranges one ACK frame carries.
pub const MAX_SACK_RANGES: usize = 32;
