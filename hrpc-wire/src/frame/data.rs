//! DATA frames: a whole message, or one fragment of it, with the offset and length that place
//! it in the message and the crc32c of the whole message.
//!
//! A valid DATA frame has a non-zero seq, a message no longer than [`MAX_MESSAGE_LEN`], a
//! fragment of at most 65 535 bytes that lies inside the message, and an empty fragment only
//! for an empty message.

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FRAME_DATA, Frame, split, truncated};
use crate::{MAX_MESSAGE_LEN, WireError};

/// DATA flag: the message's payload starts with a call envelope (a request or a response,
/// which the node reads; the wire and the store carry it as payload bytes).
pub const DATA_FLAG_CALL: u8 = 1;

/// Bytes a DATA frame adds in front of its payload.
pub const DATA_OVERHEAD: usize = size_of::<RawData>();

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

const _: () = assert!(DATA_OVERHEAD == 24);

/// A whole message, or the fragment `offset..offset + payload.len()` of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// Message flags: [`DATA_FLAG_CALL`] or 0 (the same in every fragment of a message).
    pub flags: u8,
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

    #[inline]
    pub(super) fn validate(&self) -> Result<(), WireError> {
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

/// Decodes the DATA frame at the start of `bytes`; returns it and the bytes after it.
pub(super) fn decode(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    let (h, rest) = split::<RawData>(bytes)?;
    if h.flags & !DATA_FLAG_CALL != 0 {
        return Err(WireError::ReservedBits("data frame"));
    }
    let len = usize::from(h.frag_len.get());
    if rest.len() < len {
        return Err(truncated(len, rest.len()));
    }
    let (payload, rest) = rest.split_at(len);
    let d = DataFrame {
        flags: h.flags,
        seq: h.seq.get(),
        msg_len: h.msg_len.get(),
        offset: h.offset.get(),
        msg_crc: h.msg_crc.get(),
        payload,
    };
    // Checked here, while the fields are still in registers: the frame is not read back
    // from memory (which stalls when it was just written field by field).
    d.validate()?;
    Ok((Frame::Data(d), rest))
}

/// Writes DATA frame `d` at the start of `out` (checked large enough by the caller).
pub(super) fn encode(d: &DataFrame<'_>, out: &mut [u8]) {
    let h = RawData {
        ty: FRAME_DATA,
        flags: d.flags,
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
