//! Typed errors for malformed datagrams and for frames the encoder refuses.

use thiserror::Error;

/// Why a datagram or one of its frames was rejected.
///
/// Every malformed input maps to exactly one of these; decoding never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the structure being read needs.
    #[error("datagram truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the next structure needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The first two bytes are not [`MAGIC`](crate::MAGIC).
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A version this build does not speak.
    #[error("unsupported wire version {0}")]
    BadVersion(u8),
    /// The datagram checksum does not match its bytes.
    #[error("datagram checksum mismatch")]
    BadChecksum,
    /// The frames are enciphered ([`FLAG_ENCRYPTED`](crate::FLAG_ENCRYPTED)): decipher them
    /// first.
    #[error("enciphered datagram")]
    Encrypted,
    /// A flag, reserved field or padding that must be zero was not.
    #[error("reserved bits set in {0}")]
    ReservedBits(&'static str),
    /// A frame type byte this version does not define.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrame(u8),
    /// A message length above [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN).
    #[error("message length {0} exceeds the maximum")]
    MessageTooLarge(u64),
    /// A fragment that extends past the end of its message.
    #[error("fragment {offset}+{len} beyond message length {msg_len}")]
    FragmentOutOfRange {
        /// Fragment offset within the message.
        offset: u32,
        /// Fragment length.
        len: u32,
        /// Total message length.
        msg_len: u32,
    },
    /// An empty fragment of a non-empty message.
    #[error("zero-length fragment of a non-empty message")]
    ZeroLength,
    /// Sequence number zero, which no message carries.
    #[error("sequence number zero")]
    ZeroSeq,
    /// More selective-ack ranges than [`MAX_SACK_RANGES`](crate::MAX_SACK_RANGES).
    #[error("{0} selective-ack ranges exceed the maximum")]
    TooManySacks(usize),
    /// Selective-ack ranges that are inverted, overlapping, adjacent, unsorted
    /// or not beyond the cumulative ack.
    #[error("malformed selective-ack ranges")]
    BadSackRanges,
    /// A reset frame with a reason code this version does not define.
    #[error("unknown reset reason {0}")]
    UnknownResetReason(u8),
    /// FRAG_ACK byte ranges that are empty, out of order, overlapping or too many.
    #[error("malformed fragment ranges")]
    BadFragRanges,
    /// A LOST frame whose range ends before it starts.
    #[error("lost range ends before it starts")]
    BadLostRange,
    /// The buffer given to the encoder cannot hold even the header, or is larger
    /// than [`MAX_DATAGRAM_LEN`](crate::MAX_DATAGRAM_LEN).
    #[error("datagram buffer size {0} out of range")]
    BadBufferSize(usize),
}

/// Why the encoder did not append a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The frame does not fit in what is left of the datagram; nothing was written.
    #[error("frame does not fit in the datagram")]
    Full,
    /// The frame is one the decoder would reject; nothing was written.
    #[error("invalid frame: {0}")]
    Invalid(#[from] WireError),
}
