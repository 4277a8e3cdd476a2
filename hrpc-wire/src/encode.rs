//! Encoding: frames written straight into the caller's buffer.

use zerocopy::IntoBytes;
use zerocopy::byteorder::network_endian::U32;

use crate::frame::encode_frame;
use crate::header::{
    AUTH_TAG_LEN, CHECKSUM_OFFSET, DatagramHeader, FLAG_ENCRYPTED, HEADER_LEN, NONCE_LEN,
    datagram_checksum,
};
use crate::{
    AckFrame, CookieFrame, DATA_OVERHEAD, DataFrame, EncodeError, FragAckFrame, Frame,
    HeaderFields, HeartbeatFrame, LostFrame, MAX_DATAGRAM_LEN, ResetFrame, WireError,
};

/// Builds one datagram in a caller-owned buffer, frame by frame.
///
/// The buffer's length is the datagram size limit (the path MTU minus IP and
/// UDP headers). Nothing is allocated; a frame that does not fit is refused
/// with [`EncodeError::Full`] and leaves the datagram as it was, so the caller
/// can send this datagram and start the next.
#[derive(Debug)]
pub struct DatagramWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    limit: usize,
    frames: usize,
}

impl<'a> DatagramWriter<'a> {
    /// Starts a datagram with `header` in `buf`.
    pub fn new(buf: &'a mut [u8], header: &HeaderFields) -> Result<Self, WireError> {
        let trailer = if header.auth { AUTH_TAG_LEN } else { 0 };
        if buf.len() < HEADER_LEN + trailer || buf.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::BadBufferSize(buf.len()));
        }
        buf[..HEADER_LEN].copy_from_slice(DatagramHeader::from_fields(header).as_bytes());
        let limit = buf.len() - trailer;
        Ok(DatagramWriter {
            buf,
            len: HEADER_LEN,
            limit,
            frames: 0,
        })
    }

    /// Starts a datagram to be enciphered: `header` with [`FLAG_AUTH`](crate::FLAG_AUTH)
    /// and [`FLAG_ENCRYPTED`](crate::FLAG_ENCRYPTED), and room for the nonce before the
    /// frames. After [`DatagramWriter::finish`] the caller writes the nonce, enciphers
    /// `buf[HEADER_LEN + NONCE_LEN..len - AUTH_TAG_LEN]` in place with the header as
    /// associated data, and writes the tag.
    pub fn new_encrypted(buf: &'a mut [u8], header: &HeaderFields) -> Result<Self, WireError> {
        let header = HeaderFields {
            auth: true,
            ..*header
        };
        if buf.len() < HEADER_LEN + NONCE_LEN + AUTH_TAG_LEN {
            return Err(WireError::BadBufferSize(buf.len()));
        }
        let mut w = DatagramWriter::new(buf, &header)?;
        w.buf[3] |= FLAG_ENCRYPTED;
        w.buf[HEADER_LEN..HEADER_LEN + NONCE_LEN].fill(0);
        w.len = HEADER_LEN + NONCE_LEN;
        Ok(w)
    }

    /// The datagram's size limit: buffer length less any tag trailer.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes still free for frames.
    pub fn remaining(&self) -> usize {
        self.limit - self.len
    }

    /// The largest fragment payload a DATA frame could carry now (0 if none fits).
    pub fn data_capacity(&self) -> usize {
        self.remaining()
            .saturating_sub(DATA_OVERHEAD)
            .min(usize::from(u16::MAX))
    }

    /// Frames written so far.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Whether no frame has been written.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Appends any frame.
    pub fn push(&mut self, frame: &Frame<'_>) -> Result<(), EncodeError> {
        let need = frame.encoded_len();
        if need > self.remaining() {
            return Err(EncodeError::Full);
        }
        frame.validate()?;
        encode_frame(frame, &mut self.buf[self.len..self.len + need]);
        self.len += need;
        self.frames += 1;
        Ok(())
    }

    /// Appends a DATA frame.
    pub fn push_data(&mut self, frame: &DataFrame<'_>) -> Result<(), EncodeError> {
        self.push(&Frame::Data(*frame))
    }

    /// Appends an ACK frame.
    pub fn push_ack(&mut self, frame: &AckFrame<'_>) -> Result<(), EncodeError> {
        self.push(&Frame::Ack(*frame))
    }

    /// Appends a HEARTBEAT frame.
    pub fn push_heartbeat(&mut self, frame: &HeartbeatFrame) -> Result<(), EncodeError> {
        self.push(&Frame::Heartbeat(*frame))
    }

    /// Appends a RESET frame.
    pub fn push_reset(&mut self, frame: &ResetFrame) -> Result<(), EncodeError> {
        self.push(&Frame::Reset(*frame))
    }

    /// Appends a LOST frame.
    pub fn push_lost(&mut self, frame: &LostFrame) -> Result<(), EncodeError> {
        self.push(&Frame::Lost(*frame))
    }

    /// Appends a CHALLENGE frame.
    pub fn push_challenge(&mut self, cookie: u64) -> Result<(), EncodeError> {
        self.push(&Frame::Challenge(CookieFrame { cookie }))
    }

    /// Appends a RESPONSE frame (a challenge's cookie, echoed).
    pub fn push_response(&mut self, cookie: u64) -> Result<(), EncodeError> {
        self.push(&Frame::Response(CookieFrame { cookie }))
    }

    /// Appends a FRAG_ACK frame.
    pub fn push_frag_ack(&mut self, frame: &FragAckFrame) -> Result<(), EncodeError> {
        self.push(&Frame::FragAck(*frame))
    }

    /// Seals the datagram and returns its length.
    ///
    /// Without authentication the checksum is written now. With it, the tag
    /// bytes are zeroed and left for the caller to fill over
    /// `buf[..len - AUTH_TAG_LEN]`.
    pub fn finish(self) -> usize {
        if self.limit < self.buf.len() {
            let end = self.len + AUTH_TAG_LEN;
            self.buf[self.len..end].fill(0);
            return end;
        }
        let crc = datagram_checksum(&self.buf[..self.len]);
        self.buf[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(U32::new(crc).as_bytes());
        self.len
    }
}
