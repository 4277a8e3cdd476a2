//! Frames: the units packed back to back after the datagram header.
//!
//! Every frame starts with a one-byte type. Layouts (big-endian):
//!
//! ```text
//! DATA (0x01), 24 bytes + payload
//!   0 type   1 flags(0)   2 frag_len u16   4 msg_len u32   8 offset u32
//!  12 msg_crc u32 (crc32c of the whole message)   16 seq u64   24 payload[frag_len]
//!
//! ACK (0x02), 24 bytes + 16 per range
//!   0 type   1 sack_count u8   2 reserved u16(0)   4 ack_delay_us u32
//!   8 cumulative u64   16 window_msgs u32   20 window_bytes u32
//!  24 sack_count × { first u64, last u64 }   (inclusive ranges)
//!
//! HEARTBEAT (0x03), 48 bytes
//!   0 type   1 flags (bit 0 reply requested)   2 reserved[6](0)   8 next_seq u64
//!  16 first_pending u64   24 expected u64   32 timestamp_us u64   40 echo_us u64
//!
//! RESET (0x04), 24 bytes
//!   0 type   1 reason u8   2 reserved[6](0)   8 epoch u64   16 seen_epoch u64
//!
//! FRAG_ACK (0x05), 16 bytes + 8 per range
//!   0 type   1 range_count u8   2 reserved u16(0)   4 received u32   8 seq u64
//!  16 range_count × { start u32, end u32 }   (byte ranges held past `received`, end exclusive)
//!
//! LOST (0x06), 24 bytes
//!   0 type   1 reserved[7](0)   8 first u64   16 last u64   (inclusive, 1 <= first <= last)
//!
//! CHALLENGE (0x07), 16 bytes
//!   0 type   1 reserved[7](0)   8 cookie u64
//!
//! RESPONSE (0x08), 16 bytes
//!   0 type   1 reserved[7](0)   8 cookie u64   (the cookie of a CHALLENGE, echoed)
//! ```
//!
//! This module holds the frame type bytes, the [`Frame`] enum and the dispatch of decoding and
//! encoding by type; each family's wire layout, limits and checks live in a module of its own
//! (`data`, `ack`, `frag_ack`, `control`).

mod ack;
mod control;
mod data;
mod frag_ack;

use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::WireError;

pub use ack::{ACK_BASE_LEN, AckFrame, RawSack, SACK_RANGE_LEN, SackRange, SackRanges};
pub use control::{
    COOKIE_LEN, CookieFrame, HEARTBEAT_LEN, HeartbeatFrame, LOST_LEN, LostFrame, RESET_LEN,
    ResetFrame, ResetReason,
};
pub use data::{DATA_FLAG_CALL, DATA_OVERHEAD, DataFrame};
pub use frag_ack::{
    FRAG_ACK_LEN, FRAG_RANGE_LEN, FragAckFrame, FragRange, FragRanges, MAX_FRAG_RANGES,
    RawFragRange,
};

/// Frame type byte of [`DataFrame`].
pub const FRAME_DATA: u8 = 0x01;
/// Frame type byte of [`AckFrame`].
pub const FRAME_ACK: u8 = 0x02;
/// Frame type byte of [`HeartbeatFrame`].
pub const FRAME_HEARTBEAT: u8 = 0x03;
/// Frame type byte of [`ResetFrame`].
pub const FRAME_RESET: u8 = 0x04;
/// Frame type byte of [`FragAckFrame`].
pub const FRAME_FRAG_ACK: u8 = 0x05;
/// Frame type byte of [`LostFrame`].
pub const FRAME_LOST: u8 = 0x06;
/// Frame type byte of [`Frame::Challenge`].
pub const FRAME_CHALLENGE: u8 = 0x07;
/// Frame type byte of [`Frame::Response`].
pub const FRAME_RESPONSE: u8 = 0x08;

/// One decoded frame, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A message or a fragment of one.
    Data(DataFrame<'a>),
    /// What the receiver has persisted, and how much more it takes.
    Ack(AckFrame<'a>),
    /// Liveness and cursors.
    Heartbeat(HeartbeatFrame),
    /// An epoch notice: the sender does not know the epoch it was addressed with.
    Reset(ResetFrame),
    /// Progress of a fragmented message being assembled.
    FragAck(FragAckFrame<'a>),
    /// Seqs the sender will never deliver.
    Lost(LostFrame),
    /// Address validation: the receiver proves it can receive at its address, and that it
    /// is who it claims to be, by echoing this cookie in a [`Frame::Response`].
    Challenge(CookieFrame),
    /// The cookie of a [`Frame::Challenge`], echoed back.
    Response(CookieFrame),
}

impl Frame<'_> {
    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Data(d) => DATA_OVERHEAD + d.payload.len(),
            Frame::Ack(a) => ACK_BASE_LEN + SACK_RANGE_LEN * a.sacks.len(),
            Frame::Heartbeat(_) => HEARTBEAT_LEN,
            Frame::Reset(_) => RESET_LEN,
            Frame::FragAck(f) => FRAG_ACK_LEN + FRAG_RANGE_LEN * f.ranges.len(),
            Frame::Lost(_) => LOST_LEN,
            Frame::Challenge(_) | Frame::Response(_) => COOKIE_LEN,
        }
    }

    /// Checks everything the decoder checks.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Frame::Data(d) => d.validate(),
            Frame::Ack(a) => a.sacks.validate(a.cumulative),
            Frame::FragAck(f) => f.validate(),
            Frame::Lost(l) if l.first == 0 => Err(WireError::ZeroSeq),
            Frame::Lost(l) if l.first > l.last => Err(WireError::BadLostRange),
            Frame::Heartbeat(_)
            | Frame::Reset(_)
            | Frame::Lost(_)
            | Frame::Challenge(_)
            | Frame::Response(_) => Ok(()),
        }
    }
}

fn truncated(needed: usize, available: usize) -> WireError {
    WireError::Truncated { needed, available }
}

fn split<T: FromBytes + KnownLayout + Immutable>(bytes: &[u8]) -> Result<(&T, &[u8]), WireError> {
    T::ref_from_prefix(bytes).map_err(|_| truncated(size_of::<T>(), bytes.len()))
}

/// Decodes the frame at the start of `bytes`; returns it and the bytes after it.
pub(crate) fn decode_frame(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let ty = *bytes.first().ok_or(truncated(1, 0))?;
    let (frame, rest) = match ty {
        // Validated by `data::decode` itself (the hot path: no second look at the frame).
        FRAME_DATA => return data::decode(bytes),
        FRAME_ACK => ack::decode(bytes)?,
        FRAME_HEARTBEAT => control::decode_heartbeat(bytes)?,
        FRAME_RESET => control::decode_reset(bytes)?,
        FRAME_FRAG_ACK => frag_ack::decode(bytes)?,
        FRAME_LOST => control::decode_lost(bytes)?,
        FRAME_CHALLENGE | FRAME_RESPONSE => control::decode_cookie(ty, bytes)?,
        other => return Err(WireError::UnknownFrame(other)),
    };
    frame.validate()?;
    Ok((frame, rest))
}

/// Writes `frame` at the start of `out`, which the caller has checked is large
/// enough ([`Frame::encoded_len`]) and the frame valid.
pub(crate) fn encode_frame(frame: &Frame<'_>, out: &mut [u8]) {
    match frame {
        Frame::Data(d) => data::encode(d, out),
        Frame::Ack(a) => ack::encode(a, out),
        Frame::Heartbeat(hb) => control::encode_heartbeat(hb, out),
        Frame::Reset(r) => control::encode_reset(r, out),
        Frame::FragAck(f) => frag_ack::encode(f, out),
        Frame::Lost(l) => control::encode_lost(l, out),
        Frame::Challenge(c) => control::encode_cookie(FRAME_CHALLENGE, c, out),
        Frame::Response(c) => control::encode_cookie(FRAME_RESPONSE, c, out),
    }
}
