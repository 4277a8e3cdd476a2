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

use core::fmt;

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{MAX_MESSAGE_LEN, MAX_SACK_RANGES, WireError};

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

/// Bytes a DATA frame adds in front of its payload.
pub const DATA_OVERHEAD: usize = size_of::<RawData>();
/// Bytes of an ACK frame without selective-ack ranges.
pub const ACK_BASE_LEN: usize = size_of::<RawAck>();
/// Bytes each selective-ack range adds to an ACK frame.
pub const SACK_RANGE_LEN: usize = size_of::<RawSack>();
/// Bytes of a HEARTBEAT frame.
pub const HEARTBEAT_LEN: usize = size_of::<RawHeartbeat>();
/// Bytes of a RESET frame.
pub const RESET_LEN: usize = size_of::<RawReset>();
/// Bytes of a FRAG_ACK frame without byte ranges.
pub const FRAG_ACK_LEN: usize = size_of::<RawFragAck>();
/// Bytes each byte range adds to a FRAG_ACK frame.
pub const FRAG_RANGE_LEN: usize = size_of::<RawFragRange>();
/// Most byte ranges one FRAG_ACK carries.
pub const MAX_FRAG_RANGES: usize = 16;
/// Bytes of a LOST frame.
pub const LOST_LEN: usize = size_of::<RawLost>();
/// Bytes of a CHALLENGE or RESPONSE frame.
pub const COOKIE_LEN: usize = size_of::<RawCookie>();

const HEARTBEAT_REPLY: u8 = 0x01;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawData {
    ty: u8,
    flags: u8,
    frag_len: U16,
    msg_len: U32,
    offset: U32,
    msg_crc: U32,
    seq: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawAck {
    ty: u8,
    sack_count: u8,
    reserved: U16,
    ack_delay_us: U32,
    cumulative: U64,
    window_msgs: U32,
    window_bytes: U32,
}

/// One selective-ack range as it lies on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSack {
    first: U64,
    last: U64,
}

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
pub(crate) struct RawFragAck {
    ty: u8,
    count: u8,
    reserved: [u8; 2],
    received: U32,
    seq: U64,
}

/// One FRAG_ACK byte range as it lies on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawFragRange {
    start: U32,
    end: U32,
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
const _: () = assert!(DATA_OVERHEAD == 24);
const _: () = assert!(LOST_LEN == 24);
const _: () = assert!(FRAG_ACK_LEN == 16);
const _: () = assert!(FRAG_RANGE_LEN == 8);
const _: () = assert!(ACK_BASE_LEN == 24);
const _: () = assert!(SACK_RANGE_LEN == 16);
const _: () = assert!(HEARTBEAT_LEN == 48);
const _: () = assert!(RESET_LEN == 24);

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

/// The cookie of a CHALLENGE or RESPONSE frame: an opaque value the challenger made and
/// can check again without keeping state (a keyed hash of the claimant's address and
/// claims, in hrpc-node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieFrame {
    /// The cookie.
    pub cookie: u64,
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

/// A whole message, or the fragment `offset..offset + payload.len()` of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// Per-peer message sequence number, from 1.
    pub seq: u64,
    /// Length of the whole message.
    pub msg_len: u32,
    /// Where this fragment starts in the message.
    pub offset: u32,
    /// crc32c of the whole message, as the sender's store computed it.
    pub msg_crc: u32,
    /// The fragment's bytes.
    pub payload: &'a [u8],
}

impl DataFrame<'_> {
    /// Whether this frame carries the whole message.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.payload.len() as u64 == u64::from(self.msg_len)
    }

    fn validate(&self) -> Result<(), WireError> {
        if self.seq == 0 {
            return Err(WireError::ZeroSeq);
        }
        if self.msg_len as usize > MAX_MESSAGE_LEN {
            return Err(WireError::MessageTooLarge(u64::from(self.msg_len)));
        }
        let len = u32::try_from(self.payload.len())
            .ok()
            .filter(|&l| l <= u32::from(u16::MAX))
            .ok_or(WireError::MessageTooLarge(self.payload.len() as u64))?;
        if u64::from(self.offset) + u64::from(len) > u64::from(self.msg_len) {
            return Err(WireError::FragmentOutOfRange {
                offset: self.offset,
                len,
                msg_len: self.msg_len,
            });
        }
        if len == 0 && self.msg_len != 0 {
            return Err(WireError::ZeroLength);
        }
        Ok(())
    }
}

/// An inclusive range of sequence numbers the receiver has persisted beyond a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SackRange {
    /// First sequence number in the range.
    pub first: u64,
    /// Last sequence number in the range (inclusive).
    pub last: u64,
}

/// Selective-ack ranges: borrowed from a datagram, or from the caller when encoding.
#[derive(Clone, Copy)]
pub enum SackRanges<'a> {
    /// Ranges as they lie in a received datagram.
    Wire(&'a [RawSack]),
    /// Ranges the caller built.
    Native(&'a [SackRange]),
}

impl<'a> SackRanges<'a> {
    /// Number of ranges.
    pub fn len(&self) -> usize {
        match self {
            SackRanges::Wire(r) => r.len(),
            SackRanges::Native(r) => r.len(),
        }
    }

    /// Whether there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Range `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<SackRange> {
        (i < self.len()).then(|| self.at(i))
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SackRange> + 'a {
        let this = *self;
        (0..this.len()).map(move |i| this.at(i))
    }

    /// Range `i`; the caller keeps `i < len()`.
    fn at(&self, i: usize) -> SackRange {
        match self {
            SackRanges::Wire(r) => SackRange {
                first: r[i].first.get(),
                last: r[i].last.get(),
            },
            SackRanges::Native(r) => r[i],
        }
    }

    fn validate(&self, cumulative: u64) -> Result<(), WireError> {
        if self.len() > MAX_SACK_RANGES {
            return Err(WireError::TooManySacks(self.len()));
        }
        // Each range must start after a gap: at least two past the previous end.
        let mut floor = cumulative;
        for r in self.iter() {
            let min_first = floor.checked_add(2).ok_or(WireError::BadSackRanges)?;
            if r.first < min_first || r.last < r.first {
                return Err(WireError::BadSackRanges);
            }
            floor = r.last;
        }
        Ok(())
    }
}

impl PartialEq for SackRanges<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for SackRanges<'_> {}

impl fmt::Debug for SackRanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|r| r.first..=r.last))
            .finish()
    }
}

/// Acknowledgement: every seq up to `cumulative` is persisted by the receiver,
/// and so is every seq in `sacks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame<'a> {
    /// Every seq `<= cumulative` is persisted (0: none yet).
    pub cumulative: u64,
    /// How long the receiver held the newest acknowledged message before acking it, in µs.
    pub ack_delay_us: u32,
    /// How many messages beyond `cumulative` the receiver accepts.
    pub window_msgs: u32,
    /// How many payload bytes beyond `cumulative` the receiver accepts (saturating).
    pub window_bytes: u32,
    /// Persisted ranges beyond a gap, ascending, disjoint and non-adjacent.
    pub sacks: SackRanges<'a>,
}

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

/// How much of a fragmented message the receiver has written: every byte
/// below `received`, and the byte ranges past it in `ranges` (a selective
/// acknowledgement of fragments). Lets the sender pace a long message, send
/// again only what is missing, and resume where the receiver's copy stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragAckFrame<'a> {
    /// The message.
    pub seq: u64,
    /// Every byte of it below this offset is written at the receiver.
    pub received: u32,
    /// Byte ranges `[start, end)` written past `received`: ascending, each
    /// starting after a gap, at most [`MAX_FRAG_RANGES`].
    pub ranges: FragRanges<'a>,
}

/// A byte range `[start, end)` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FragRange {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

/// The byte ranges of a [`FragAckFrame`], borrowed (so a decoded frame copies nothing and a
/// [`Frame`] stays small).
#[derive(Clone, Copy)]
pub enum FragRanges<'a> {
    /// Ranges as they lie in a received datagram.
    Wire(&'a [RawFragRange]),
    /// Ranges the caller built.
    Native(&'a [FragRange]),
}

impl<'a> FragRanges<'a> {
    /// Number of ranges.
    pub fn len(&self) -> usize {
        match self {
            FragRanges::Wire(r) => r.len(),
            FragRanges::Native(r) => r.len(),
        }
    }

    /// Whether there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FragRange> + 'a {
        let this = *self;
        (0..this.len()).map(move |i| match this {
            FragRanges::Wire(r) => FragRange {
                start: r[i].start.get(),
                end: r[i].end.get(),
            },
            FragRanges::Native(r) => r[i],
        })
    }
}

impl PartialEq for FragRanges<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for FragRanges<'_> {}

impl fmt::Debug for FragRanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|r| r.start..r.end))
            .finish()
    }
}

impl FragAckFrame<'_> {
    fn validate(&self) -> Result<(), WireError> {
        if self.seq == 0 {
            return Err(WireError::ZeroSeq);
        }
        if self.ranges.len() > MAX_FRAG_RANGES {
            return Err(WireError::BadFragRanges);
        }
        let mut prev_end = self.received;
        for r in self.ranges.iter() {
            // Each range follows a gap (so `received` would have absorbed it otherwise).
            if r.start <= prev_end || r.end <= r.start {
                return Err(WireError::BadFragRanges);
            }
            prev_end = r.end;
        }
        Ok(())
    }
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
        FRAME_DATA => {
            let (h, rest) = split::<RawData>(bytes)?;
            if h.flags != 0 {
                return Err(WireError::ReservedBits("data frame"));
            }
            let len = usize::from(h.frag_len.get());
            if rest.len() < len {
                return Err(truncated(len, rest.len()));
            }
            let (payload, rest) = rest.split_at(len);
            let d = DataFrame {
                seq: h.seq.get(),
                msg_len: h.msg_len.get(),
                offset: h.offset.get(),
                msg_crc: h.msg_crc.get(),
                payload,
            };
            (Frame::Data(d), rest)
        }
        FRAME_ACK => {
            let (h, rest) = split::<RawAck>(bytes)?;
            if h.reserved.get() != 0 {
                return Err(WireError::ReservedBits("ack frame"));
            }
            let n = usize::from(h.sack_count);
            if n > MAX_SACK_RANGES {
                return Err(WireError::TooManySacks(n));
            }
            let (sacks, rest) = <[RawSack]>::ref_from_prefix_with_elems(rest, n)
                .map_err(|_| truncated(n * SACK_RANGE_LEN, rest.len()))?;
            let a = AckFrame {
                cumulative: h.cumulative.get(),
                ack_delay_us: h.ack_delay_us.get(),
                window_msgs: h.window_msgs.get(),
                window_bytes: h.window_bytes.get(),
                sacks: SackRanges::Wire(sacks),
            };
            (Frame::Ack(a), rest)
        }
        FRAME_HEARTBEAT => {
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
            (Frame::Heartbeat(hb), rest)
        }
        FRAME_RESET => {
            let (h, rest) = split::<RawReset>(bytes)?;
            if h.reserved != [0; 6] {
                return Err(WireError::ReservedBits("reset frame"));
            }
            let r = ResetFrame {
                reason: ResetReason::from_u8(h.reason)?,
                epoch: h.epoch.get(),
                seen_epoch: h.seen_epoch.get(),
            };
            (Frame::Reset(r), rest)
        }
        FRAME_FRAG_ACK => {
            let (h, rest) = split::<RawFragAck>(bytes)?;
            if h.reserved != [0; 2] {
                return Err(WireError::ReservedBits("frag ack frame"));
            }
            let n = usize::from(h.count);
            if n > MAX_FRAG_RANGES {
                return Err(WireError::BadFragRanges);
            }
            let (raw, rest) = <[RawFragRange]>::ref_from_prefix_with_elems(rest, n)
                .map_err(|_| truncated(n * FRAG_RANGE_LEN, rest.len()))?;
            let f = FragAckFrame {
                seq: h.seq.get(),
                received: h.received.get(),
                ranges: FragRanges::Wire(raw),
            };
            (Frame::FragAck(f), rest)
        }
        FRAME_LOST => {
            let (h, rest) = split::<RawLost>(bytes)?;
            if h.reserved != [0; 7] {
                return Err(WireError::ReservedBits("lost frame"));
            }
            let l = LostFrame {
                first: h.first.get(),
                last: h.last.get(),
            };
            (Frame::Lost(l), rest)
        }
        FRAME_CHALLENGE | FRAME_RESPONSE => {
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
            (frame, rest)
        }
        other => return Err(WireError::UnknownFrame(other)),
    };
    frame.validate()?;
    Ok((frame, rest))
}

/// Writes `frame` at the start of `out`, which the caller has checked is large
/// enough ([`Frame::encoded_len`]) and the frame valid.
pub(crate) fn encode_frame(frame: &Frame<'_>, out: &mut [u8]) {
    match frame {
        Frame::Data(d) => {
            let h = RawData {
                ty: FRAME_DATA,
                flags: 0,
                frag_len: U16::new(d.payload.len() as u16),
                msg_len: U32::new(d.msg_len),
                offset: U32::new(d.offset),
                msg_crc: U32::new(d.msg_crc),
                seq: U64::new(d.seq),
            };
            let (head, body) = out.split_at_mut(DATA_OVERHEAD);
            head.copy_from_slice(h.as_bytes());
            body[..d.payload.len()].copy_from_slice(d.payload);
        }
        Frame::Ack(a) => {
            let h = RawAck {
                ty: FRAME_ACK,
                sack_count: a.sacks.len() as u8,
                reserved: U16::new(0),
                ack_delay_us: U32::new(a.ack_delay_us),
                cumulative: U64::new(a.cumulative),
                window_msgs: U32::new(a.window_msgs),
                window_bytes: U32::new(a.window_bytes),
            };
            out[..ACK_BASE_LEN].copy_from_slice(h.as_bytes());
            for (r, chunk) in a
                .sacks
                .iter()
                .zip(out[ACK_BASE_LEN..].chunks_exact_mut(SACK_RANGE_LEN))
            {
                let raw = RawSack {
                    first: U64::new(r.first),
                    last: U64::new(r.last),
                };
                chunk.copy_from_slice(raw.as_bytes());
            }
        }
        Frame::Heartbeat(hb) => {
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
        Frame::Reset(r) => {
            let h = RawReset {
                ty: FRAME_RESET,
                reason: r.reason as u8,
                reserved: [0; 6],
                epoch: U64::new(r.epoch),
                seen_epoch: U64::new(r.seen_epoch),
            };
            out[..RESET_LEN].copy_from_slice(h.as_bytes());
        }
        Frame::FragAck(f) => {
            let h = RawFragAck {
                ty: FRAME_FRAG_ACK,
                count: f.ranges.len() as u8,
                reserved: [0; 2],
                received: U32::new(f.received),
                seq: U64::new(f.seq),
            };
            out[..FRAG_ACK_LEN].copy_from_slice(h.as_bytes());
            for (i, r) in f.ranges.iter().enumerate() {
                let raw = RawFragRange {
                    start: U32::new(r.start),
                    end: U32::new(r.end),
                };
                let at = FRAG_ACK_LEN + i * FRAG_RANGE_LEN;
                out[at..at + FRAG_RANGE_LEN].copy_from_slice(raw.as_bytes());
            }
        }
        Frame::Lost(l) => {
            let h = RawLost {
                ty: FRAME_LOST,
                reserved: [0; 7],
                first: U64::new(l.first),
                last: U64::new(l.last),
            };
            out[..LOST_LEN].copy_from_slice(h.as_bytes());
        }
        Frame::Challenge(c) | Frame::Response(c) => {
            let h = RawCookie {
                ty: if matches!(frame, Frame::Challenge(_)) {
                    FRAME_CHALLENGE
                } else {
                    FRAME_RESPONSE
                },
                reserved: [0; 7],
                cookie: U64::new(c.cookie),
            };
            out[..COOKIE_LEN].copy_from_slice(h.as_bytes());
        }
    }
}
