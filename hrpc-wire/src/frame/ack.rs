//! ACK frames: the receiver's cumulative acknowledgement, its flow-control window and up to
//! [`MAX_SACK_RANGES`] selective-ack ranges.
//!
//! Selective-ack ranges are ascending, inclusive, and each starts after a gap: at least two
//! past the end of the previous range (or of `cumulative`).

use core::fmt;

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FRAME_ACK, Frame, split, truncated};
use crate::{MAX_SACK_RANGES, WireError};

/// Bytes of an ACK frame without selective-ack ranges.
pub const ACK_BASE_LEN: usize = size_of::<RawAck>();
/// Bytes each selective-ack range adds to an ACK frame.
pub const SACK_RANGE_LEN: usize = size_of::<RawSack>();

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

const _: () = assert!(ACK_BASE_LEN == 24);
const _: () = assert!(SACK_RANGE_LEN == 16);

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

    pub(super) fn validate(&self, cumulative: u64) -> Result<(), WireError> {
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

/// Decodes the ACK frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
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
    Ok((Frame::Ack(a), rest))
}

/// Writes ACK frame `a` at the start of `out` (checked large enough by the caller).
pub(super) fn encode(a: &AckFrame<'_>, out: &mut [u8]) {
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
