//! The fixed datagram header.
//!
//! ```text
//! offset size field
//!      0    2 magic        "HR"
//!      2    1 version      VERSION
//!      3    1 flags        FLAG_AUTH, FLAG_ENCRYPTED; every other bit zero
//!      4    4 src          sending node id
//!      8    4 dst          receiving node id
//!     12    8 src_epoch    sender's session epoch
//!     20    8 dst_epoch    epoch the sender believes the receiver has (0 = unknown)
//!     28    4 checksum     crc32c of bytes 0..28 then 32..end (0 when FLAG_AUTH)
//!     32      frames …     (FLAG_ENCRYPTED: a 24-byte nonce, then the frames enciphered)
//!   end-16   16 tag        only when FLAG_AUTH
//! ```
//! All integers are big-endian (network order).

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The two magic bytes every datagram starts with: `"HR"`.
pub const MAGIC: u16 = u16::from_be_bytes(*b"HR");
/// The wire version this build speaks.
pub const VERSION: u8 = 1;
/// Flag: the datagram ends with an [`AUTH_TAG_LEN`]-byte authentication tag
/// and carries no checksum.
pub const FLAG_AUTH: u8 = 0x01;
/// Flag (only with [`FLAG_AUTH`]): the frames are enciphered. A [`NONCE_LEN`]-byte nonce
/// follows the header, and the tag is the AEAD's, over the header as associated data and the
/// enciphered frames. [`Datagram::parse`](crate::Datagram::parse) refuses such a datagram
/// ([`WireError::Encrypted`](crate::WireError::Encrypted)): the holder of the key deciphers
/// it ([`encrypted_parts`]) and parses the plain frames.
pub const FLAG_ENCRYPTED: u8 = 0x02;
/// Every flag bit this version defines.
pub(crate) const KNOWN_FLAGS: u8 = FLAG_AUTH | FLAG_ENCRYPTED;
/// Length of the nonce an enciphered datagram carries after its header.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag trailer.
pub const AUTH_TAG_LEN: usize = 16;
/// Length of the datagram header.
pub const HEADER_LEN: usize = size_of::<DatagramHeader>();

/// Offset of the checksum field, derived from the fields before it.
pub(crate) const CHECKSUM_OFFSET: usize = 2 + 1 + 1 + 4 + 4 + 8 + 8;

/// The datagram header as it lies on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DatagramHeader {
    /// [`MAGIC`].
    pub magic: U16,
    /// [`VERSION`].
    pub version: u8,
    /// Flag bits ([`FLAG_AUTH`]).
    pub flags: u8,
    /// Sending node id.
    pub src: U32,
    /// Receiving node id.
    pub dst: U32,
    /// Sender's session epoch.
    pub src_epoch: U64,
    /// The receiver's epoch as the sender knows it; 0 when it does not know it yet.
    pub dst_epoch: U64,
    /// crc32c over the datagram without this field; zero when [`FLAG_AUTH`] is set.
    pub checksum: U32,
}

const _: () = assert!(HEADER_LEN == 32);
const _: () = assert!(CHECKSUM_OFFSET + 4 == HEADER_LEN);

/// The header fields a sender chooses, in native types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HeaderFields {
    /// Sending node id.
    pub src: u32,
    /// Receiving node id.
    pub dst: u32,
    /// Sender's session epoch.
    pub src_epoch: u64,
    /// The receiver's epoch as the sender knows it; 0 when unknown.
    pub dst_epoch: u64,
    /// Whether an authentication tag trailer is reserved ([`FLAG_AUTH`]).
    pub auth: bool,
}

impl DatagramHeader {
    /// The fields in native types.
    pub fn fields(&self) -> HeaderFields {
        HeaderFields {
            src: self.src.get(),
            dst: self.dst.get(),
            src_epoch: self.src_epoch.get(),
            dst_epoch: self.dst_epoch.get(),
            auth: self.flags & FLAG_AUTH != 0,
        }
    }

    pub(crate) fn from_fields(f: &HeaderFields) -> Self {
        DatagramHeader {
            magic: U16::new(MAGIC),
            version: VERSION,
            flags: if f.auth { FLAG_AUTH } else { 0 },
            src: U32::new(f.src),
            dst: U32::new(f.dst),
            src_epoch: U64::new(f.src_epoch),
            dst_epoch: U64::new(f.dst_epoch),
            checksum: U32::new(0),
        }
    }
}

/// An enciphered datagram ([`FLAG_ENCRYPTED`]) taken apart for deciphering.
#[derive(Debug, Clone, Copy)]
pub struct EncryptedParts<'a> {
    /// The header as sent: the associated data.
    pub header: &'a [u8; HEADER_LEN],
    /// The nonce.
    pub nonce: &'a [u8; NONCE_LEN],
    /// The enciphered frames.
    pub ciphertext: &'a [u8],
    /// The AEAD tag.
    pub tag: &'a [u8; AUTH_TAG_LEN],
}

/// The parts of `bytes` if it is an enciphered datagram of this version with a well-formed
/// header (magic, version, known flags, `FLAG_AUTH`, zero checksum); `None` otherwise.
pub fn encrypted_parts(bytes: &[u8]) -> Option<EncryptedParts<'_>> {
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    let h = DatagramHeader::ref_from_bytes(header).ok()?;
    let wanted = FLAG_AUTH | FLAG_ENCRYPTED;
    if h.magic.get() != MAGIC || h.version != VERSION || h.flags != wanted || h.checksum.get() != 0
    {
        return None;
    }
    let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>()?;
    let (ciphertext, tag) = rest.split_last_chunk::<AUTH_TAG_LEN>()?;
    Some(EncryptedParts {
        header,
        nonce,
        ciphertext,
        tag,
    })
}

/// crc32c of a whole datagram, skipping the checksum field itself.
pub(crate) fn datagram_checksum(datagram: &[u8]) -> u32 {
    let (head, rest) = datagram.split_at(CHECKSUM_OFFSET.min(datagram.len()));
    let crc = crc32c::crc32c(head);
    match rest.get(4..) {
        Some(body) => crc32c::crc32c_append(crc, body),
        None => crc,
    }
}
