//! FRAG_ACK frames: how much of a fragmented message the receiver has written — every byte
//! below `received`, and up to [`MAX_FRAG_RANGES`] byte ranges past it.
//!
//! A valid FRAG_ACK has a non-zero seq and ascending, non-empty ranges, each starting after a
//! gap (past `received`, and past the end of the range before it).

use core::fmt;

use zerocopy::byteorder::network_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FRAME_FRAG_ACK, Frame, split, truncated};
use crate::WireError;

/// Bytes of a FRAG_ACK frame without byte ranges.
pub const FRAG_ACK_LEN: usize = size_of::<RawFragAck>();
/// Bytes each byte range adds to a FRAG_ACK frame.
pub const FRAG_RANGE_LEN: usize = size_of::<RawFragRange>();
/// Most byte ranges one FRAG_ACK carries.
pub const MAX_FRAG_RANGES: usize = 16;

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

const _: () = assert!(FRAG_ACK_LEN == 16);
const _: () = assert!(FRAG_RANGE_LEN == 8);

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
    pub(super) fn validate(&self) -> Result<(), WireError> {
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

/// Decodes the FRAG_ACK frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
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
    Ok((Frame::FragAck(f), rest))
}

/// Writes FRAG_ACK frame `f` at the start of `out` (checked large enough by the caller).
pub(super) fn encode(f: &FragAckFrame<'_>, out: &mut [u8]) {
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
