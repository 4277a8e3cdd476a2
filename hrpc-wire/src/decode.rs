//! Decoding: a validated view over a received datagram, borrowing its bytes.

use zerocopy::FromBytes;

use crate::frame::decode_frame;
use crate::header::{
    AUTH_TAG_LEN, DatagramHeader, FLAG_AUTH, FLAG_ENCRYPTED, HEADER_LEN, KNOWN_FLAGS, MAGIC,
    VERSION, datagram_checksum,
};
use crate::{Frame, HeaderFields, WireError};

/// A received datagram whose header, checksum and every frame have been checked.
///
/// Built by [`Datagram::parse`]; iterating [`Datagram::frames`] then cannot fail.
/// Payloads are borrowed from the input, never copied.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    bytes: &'a [u8],
    header: &'a DatagramHeader,
    body: &'a [u8],
    tag: Option<&'a [u8; AUTH_TAG_LEN]>,
    frame_count: usize,
}

impl<'a> Datagram<'a> {
    /// Validates `bytes` as a whole datagram.
    ///
    /// Checks, in order: length, magic, version, flags, checksum (when the
    /// datagram carries no authentication tag), then every frame. A datagram
    /// with [`FLAG_AUTH`] is returned unauthenticated: its tag is for the caller
    /// to verify ([`Datagram::auth_tag`], [`Datagram::authenticated_bytes`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (header, rest) =
            DatagramHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            })?;
        if header.magic.get() != MAGIC {
            return Err(WireError::BadMagic(header.magic.get()));
        }
        if header.version != VERSION {
            return Err(WireError::BadVersion(header.version));
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err(WireError::ReservedBits("datagram flags"));
        }
        if header.flags & FLAG_ENCRYPTED != 0 {
            return Err(WireError::Encrypted);
        }
        let (body, tag) = if header.flags & FLAG_AUTH != 0 {
            if header.checksum.get() != 0 {
                return Err(WireError::ReservedBits(
                    "checksum of an authenticated datagram",
                ));
            }
            let split = rest
                .len()
                .checked_sub(AUTH_TAG_LEN)
                .ok_or(WireError::Truncated {
                    needed: HEADER_LEN + AUTH_TAG_LEN,
                    available: bytes.len(),
                })?;
            let (body, tag) = rest.split_at(split);
            (body, <&[u8; AUTH_TAG_LEN]>::try_from(tag).ok())
        } else {
            if datagram_checksum(bytes) != header.checksum.get() {
                return Err(WireError::BadChecksum);
            }
            (rest, None)
        };
        let mut frame_count = 0;
        let mut cursor = body;
        while !cursor.is_empty() {
            let (_, next) = decode_frame(cursor)?;
            cursor = next;
            frame_count += 1;
        }
        Ok(Datagram {
            bytes,
            header,
            body,
            tag,
            frame_count,
        })
    }

    /// The header fields.
    pub fn header(&self) -> HeaderFields {
        self.header.fields()
    }

    /// The frames, in order.
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            rest: self.body,
            remaining: self.frame_count,
        }
    }

    /// Number of frames.
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// The authentication tag, when the datagram carries one.
    pub fn auth_tag(&self) -> Option<&'a [u8; AUTH_TAG_LEN]> {
        self.tag
    }

    /// Header and frames: the bytes an authentication tag covers.
    pub fn authenticated_bytes(&self) -> &'a [u8] {
        let len = HEADER_LEN + self.body.len();
        self.bytes.get(..len).unwrap_or(self.bytes)
    }
}

/// Iterator over the frames of a validated [`Datagram`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // Validated by `Datagram::parse`; an error here cannot happen, and would
        // end the iteration rather than panic.
        let (frame, rest) = decode_frame(self.rest).ok()?;
        self.rest = rest;
        self.remaining -= 1;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Frames<'_> {}

/// Decodes a frame sequence with no datagram header, as found after one.
///
/// Stops at the first malformed frame. Useful for tools and tests; nodes use
/// [`Datagram::parse`].
pub fn decode_frames(mut bytes: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, WireError>> {
    let mut failed = false;
    core::iter::from_fn(move || {
        if failed || bytes.is_empty() {
            return None;
        }
        match decode_frame(bytes) {
            Ok((frame, rest)) => {
                bytes = rest;
                Some(Ok(frame))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}
