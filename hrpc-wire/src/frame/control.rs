//! The fixed-size control frames: HEARTBEAT (liveness and cursors), RESET (epoch notices),
//! LOST (seqs the sender will never deliver) and CHALLENGE/RESPONSE (address validation by
//! cookie).
//!
//! Their reserved bytes must be zero; a LOST range is `1 <= first <= last`.

use zerocopy::byteorder::network_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FRAME_CHALLENGE, FRAME_HEARTBEAT, FRAME_LOST, FRAME_RESET, Frame, split};
use crate::WireError;

/// Bytes of a HEARTBEAT frame.
pub const HEARTBEAT_LEN: usize = size_of::<RawHeartbeat>();
/// Bytes of a RESET frame.
pub const RESET_LEN: usize = size_of::<RawReset>();
/// Bytes of a LOST frame.
pub const LOST_LEN: usize = size_of::<RawLost>();
/// Bytes of a CHALLENGE or RESPONSE frame.
pub const COOKIE_LEN: usize = size_of::<RawCookie>();

const HEARTBEAT_REPLY: u8 = 0x01;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawHeartbeat {
    ty: u8,
    flags: u8,
    reserved: [u8; 6],
    next_seq: U64,
    first_pending: U64,
    expected: U64,
    timestamp_us: U64,
    echo_us: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawReset {
    ty: u8,
    reason: u8,
    reserved: [u8; 6],
    epoch: U64,
    seen_epoch: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawLost {
    ty: u8,
    reserved: [u8; 7],
    first: U64,
    last: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawCookie {
    ty: u8,
    reserved: [u8; 7],
    cookie: U64,
}

const _: () = assert!(COOKIE_LEN == 16);
const _: () = assert!(LOST_LEN == 24);
const _: () = assert!(HEARTBEAT_LEN == 48);
const _: () = assert!(RESET_LEN == 24);

/// Liveness and cursors, sent periodically and on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatFrame {
    /// The sender wants a heartbeat back soon (probing liveness or RTT).
    pub reply_requested: bool,
    /// The sender's next outbound seq: it has committed every seq below this.
    pub next_seq: u64,
    /// The lowest seq the sender still holds: every seq below it was
    /// acknowledged by the receiver, so the receiver need not wait for it.
    pub first_pending: u64,
    /// The next seq the sender expects from the receiver (everything below is persisted).
    pub expected: u64,
    /// The sender's clock in µs, for the round-trip echo.
    pub timestamp_us: u64,
    /// The newest `timestamp_us` the sender received from the receiver (0: none).
    pub echo_us: u64,
}

/// Why a RESET was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResetReason {
    /// The datagram named a receiver epoch that is not the receiver's current one.
    EpochMismatch = 1,
    /// The sender's store was recreated: it has a new epoch and no memory of the peer.
    StoreLost = 2,
}

impl ResetReason {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            1 => Ok(ResetReason::EpochMismatch),
            2 => Ok(ResetReason::StoreLost),
            other => Err(WireError::UnknownResetReason(other)),
        }
    }
}

/// Epoch notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetFrame {
    /// Why.
    pub reason: ResetReason,
    /// The sender's current epoch.
    pub epoch: u64,
    /// The epoch value in the datagram that caused this notice.
    pub seen_epoch: u64,
}

/// The sender will never deliver seqs `first..=last`: they were discarded by
/// its application or lost from its store. The receiver counts them as
/// received (so its stream does not wait for them), and tells its
/// application about those it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LostFrame {
    /// First seq of the gap (≥ 1).
    pub first: u64,
    /// Last seq of the gap (≥ `first`).
    pub last: u64,
}

/// The cookie of a CHALLENGE or RESPONSE frame: an opaque value the challenger made and
/// can check again without keeping state (a keyed hash of the claimant's address and
/// claims, in hrpc-node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieFrame {
    /// The cookie.
    pub cookie: u64,
}

/// Decodes the HEARTBEAT frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode_heartbeat(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let (h, rest) = split::<RawHeartbeat>(bytes)?;
    if h.flags & !HEARTBEAT_REPLY != 0 || h.reserved != [0; 6] {
        return Err(WireError::ReservedBits("heartbeat frame"));
    }
    let hb = HeartbeatFrame {
        reply_requested: h.flags & HEARTBEAT_REPLY != 0,
        next_seq: h.next_seq.get(),
        first_pending: h.first_pending.get(),
        expected: h.expected.get(),
        timestamp_us: h.timestamp_us.get(),
        echo_us: h.echo_us.get(),
    };
    Ok((Frame::Heartbeat(hb), rest))
}

/// Decodes the RESET frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode_reset(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let (h, rest) = split::<RawReset>(bytes)?;
    if h.reserved != [0; 6] {
        return Err(WireError::ReservedBits("reset frame"));
    }
    let r = ResetFrame {
        reason: ResetReason::from_u8(h.reason)?,
        epoch: h.epoch.get(),
        seen_epoch: h.seen_epoch.get(),
    };
    Ok((Frame::Reset(r), rest))
}

/// Decodes the LOST frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode_lost(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let (h, rest) = split::<RawLost>(bytes)?;
    if h.reserved != [0; 7] {
        return Err(WireError::ReservedBits("lost frame"));
    }
    let l = LostFrame {
        first: h.first.get(),
        last: h.last.get(),
    };
    Ok((Frame::Lost(l), rest))
}

/// Decodes the CHALLENGE or RESPONSE frame (type byte `ty`) at the start of `bytes`; returns
/// it and the bytes after it.
pub(super) fn decode_cookie(ty: u8, bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let (h, rest) = split::<RawCookie>(bytes)?;
    if h.reserved != [0; 7] {
        return Err(WireError::ReservedBits("cookie frame"));
    }
    let c = CookieFrame {
        cookie: h.cookie.get(),
    };
    let frame = if ty == FRAME_CHALLENGE {
        Frame::Challenge(c)
    } else {
        Frame::Response(c)
    };
    Ok((frame, rest))
}

/// Writes HEARTBEAT frame `hb` at the start of `out` (checked large enough by the caller).
pub(super) fn encode_heartbeat(hb: &HeartbeatFrame, out: &mut [u8]) {
    let h = RawHeartbeat {
        ty: FRAME_HEARTBEAT,
        flags: if hb.reply_requested {
            HEARTBEAT_REPLY
        } else {
            0
        },
        reserved: [0; 6],
        next_seq: U64::new(hb.next_seq),
        first_pending: U64::new(hb.first_pending),
        expected: U64::new(hb.expected),
        timestamp_us: U64::new(hb.timestamp_us),
        echo_us: U64::new(hb.echo_us),
    };
    out[..HEARTBEAT_LEN].copy_from_slice(h.as_bytes());
}

/// Writes RESET frame `r` at the start of `out` (checked large enough by the caller).
pub(super) fn encode_reset(r: &ResetFrame, out: &mut [u8]) {
    let h = RawReset {
        ty: FRAME_RESET,
        reason: r.reason as u8,
        reserved: [0; 6],
        epoch: U64::new(r.epoch),
        seen_epoch: U64::new(r.seen_epoch),
    };
    out[..RESET_LEN].copy_from_slice(h.as_bytes());
}

/// Writes LOST frame `l` at the start of `out` (checked large enough by the caller).
pub(super) fn encode_lost(l: &LostFrame, out: &mut [u8]) {
    let h = RawLost {
        ty: FRAME_LOST,
        reserved: [0; 7],
        first: U64::new(l.first),
        last: U64::new(l.last),
    };
    out[..LOST_LEN].copy_from_slice(h.as_bytes());
}

/// Writes the CHALLENGE or RESPONSE frame (type byte `ty`) carrying `c` at the start of
/// `out` (checked large enough by the caller).
pub(super) fn encode_cookie(ty: u8, c: &CookieFrame, out: &mut [u8]) {
    let h = RawCookie {
        ty,
        reserved: [0; 7],
        cookie: U64::new(c.cookie),
    };
    out[..COOKIE_LEN].copy_from_slice(h.as_bytes());
}
