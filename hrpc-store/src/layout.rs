//! On-disk byte layouts. All integers little-endian; every checksum is crc32c.
//!
//! ```text
//! meta file
//! +----------------------------+ 0
//! | superblock (64 B used)     |
//! +----------------------------+ SUPER_LEN = 4096
//! | peer entry 0: 3 x 64 B     |  copies of one peer's record (double/triple buffering)
//! | peer entry 1               |  ENTRY_LEN = 3 * RECORD_LEN = 192
//! | ...  (max_peers entries)   |
//! +----------------------------+ SUPER_LEN + max_peers * ENTRY_LEN
//!
//! superblock                       peer record copy                 slot header
//! off len field                    off len field                    off len field
//!   0   8 magic "HRPCSTOR"           0   8 generation (0 = never written)    0   8 state word (0 = free,
//!   8   4 format version = 2         8   4 peer node id                       else = generation: published)
//!  12   4 node id                   12   4 outbound incarnation       8   8 generation (== state)
//!  16   8 node epoch (random, !=0)  16   4 inbound incarnation       16   8 seq
//!  24   4 max_peers                 20   4 flags (bit 0: inbound started)                 24   4 peer node id
//!  28   4 SUPER_LEN (4096)          24   8 next outbound seq floor   28   4 payload len
//!  32   4 RECORD_LEN (64)           32   8 acked outbound seq        32   4 payload crc32c
//!  36  24 reserved (0)              40   8 consumed inbound seq      36   4 incarnation
//!  60   4 crc32c(bytes 0..60)       48   8 peer session epoch        40   1 kind (1 out, 2 in, 3/4 lost, 5 call)
//!  64                               56   4 reserved (0)              41   1 flags (bit 0: call envelope)
//!                                   60   4 crc32c(bytes 0..60)       42   2 reserved (0)
//!                                                                    44   4 reply: inbound incarnation
//!                                                                    48   8 reply: inbound seq it consumes (0 = none)
//!                                                                    56   4 reserved (0)
//!                                                                    60   4 crc32c(bytes 8..60)
//!                                                                    64     payload (len bytes)
//!
//! segment file "seg-NNNNNN"
//! off len field
//!   0   8 magic "HRPCSEG1"
//!   8   4 format version = 2
//!  12   4 segment index (== NNNNNN; indexes of deleted segments are reused)
//!  16   4 size class index
//!  20   4 slot size (== class size)
//!  24   4 slot count
//!  28   4 reserved (0)
//!  32   8 node epoch (must equal the superblock's)
//!  40  20 reserved (0)
//!  60   4 crc32c(bytes 0..60)
//!  64     slot 0, slot 1, ... each `slot size` bytes (a multiple of 64)
//! ```

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Superblock area (one page; 64 bytes used).
pub(crate) const SUPER_LEN: usize = 4096;
/// One copy of a peer record.
pub(crate) const RECORD_LEN: usize = 64;
/// Copies per peer entry.
pub(crate) const COPIES: usize = 3;
/// One peer entry (all copies).
pub(crate) const ENTRY_LEN: usize = RECORD_LEN * COPIES;
/// Slot header length; payload starts here.
pub(crate) const SLOT_HDR: usize = 64;
/// Segment header length; slot 0 starts here.
pub(crate) const SEG_HDR: usize = 64;
/// On-disk format version. 2: the size-class table with 1/16 steps above 4 KiB (version 1 had
/// 36 classes, 1.5× steps up to 24 MiB); stores of version 1 are refused as unsupported.
pub(crate) const FORMAT_VERSION: u32 = 2;
const MAGIC: [u8; 8] = *b"HRPCSTOR";
const SEG_MAGIC: [u8; 8] = *b"HRPCSEG1";

/// Classes below 4 KiB: 128, 192, 256, 384, … 3072 (powers of two and 1.5× them).
const SMALL_CLASSES: usize = 10;
/// Classes from 4 KiB up step by 1/16 of a power of two: 4096, 4352, 4608, … 16 MiB; the last
/// class is exactly `MAX_MESSAGE_LEN + SLOT_HDR`.
const FINE_STEPS: usize = 16;
/// Largest slot: the largest message plus its header.
const MAX_SLOT: usize = crate::MAX_MESSAGE_LEN + SLOT_HDR;
/// Number of slot size classes (10 small, 12 doublings × 16 from 4 KiB to 16 MiB, 16 MiB itself
/// and `MAX_SLOT`).
pub(crate) const NUM_CLASSES: usize = SMALL_CLASSES + 12 * FINE_STEPS + 2;
/// Slot kind: outbound message.
pub(crate) const KIND_OUT: u8 = 1;
/// Slot kind: inbound message.
pub(crate) const KIND_IN: u8 = 2;
/// Slot kind: outbound gap marker: seqs `seq..=last` (`last` is the 8-byte
/// little-endian payload) are gone; the peer is to be told.
pub(crate) const KIND_OUT_LOST: u8 = 3;
/// Slot kind: inbound gap marker: the sender will never deliver `seq..=last`.
pub(crate) const KIND_IN_LOST: u8 = 4;
/// Payload length of a gap marker slot.
pub(crate) const LOST_LEN: u32 = 8;
/// Slot kind: an outstanding call (a request waiting for its response). The header's seq is
/// the call id, its peer the callee; the payload is the deadline, 8 bytes little-endian, in
/// milliseconds since the Unix epoch. Not part of any stream.
pub(crate) const KIND_CALL: u8 = 5;
/// Payload length of a call slot.
pub(crate) const CALL_LEN: u32 = 8;
/// Message flag: the payload starts with a call envelope (a request or a response). The store
/// keeps it and hands it back; what the envelope holds is the node's business.
pub const FLAG_CALL: u8 = 1;

/// Whether slots of `kind` belong to the outbound direction.
pub(crate) const fn is_outbound(kind: u8) -> bool {
    kind == KIND_OUT || kind == KIND_OUT_LOST
}

/// Size in bytes of slots of class `c` (a multiple of 64): 128, 192, 256, 384, … 3072, then
/// 4096, 4352, 4608, … (steps of 1/16 of a power of two), … 16 MiB, and `MAX_SLOT`.
pub(crate) const fn class_size(c: usize) -> usize {
    if c < SMALL_CLASSES {
        if c.is_multiple_of(2) {
            1 << (7 + c / 2)
        } else {
            3 << (6 + c / 2)
        }
    } else {
        let f = c - SMALL_CLASSES;
        let k = 12 + f / FINE_STEPS;
        let s = (1 << k) + (f % FINE_STEPS) * (1 << (k - 4));
        if s > MAX_SLOT { MAX_SLOT } else { s }
    }
}

/// Smallest class whose slots hold `n` bytes (header included). `n` ≤ `MAX_SLOT`.
#[inline]
pub(crate) fn class_for(n: usize) -> usize {
    if n <= 128 {
        return 0;
    }
    if n <= 3072 {
        // 2^k >= n > 2^(k-1), k >= 8
        let k = (usize::BITS - (n - 1).leading_zeros()) as usize;
        return if n <= 3 << (k - 2) {
            2 * (k - 8) + 1
        } else {
            2 * (k - 7)
        };
    }
    if n <= 4096 {
        return SMALL_CLASSES;
    }
    // 2^k < n <= 2^(k+1), k >= 12: the smallest 2^k + i·2^(k-4) >= n, i in 1..=16.
    let k = (usize::BITS - 1 - (n - 1).leading_zeros()) as usize;
    let i = (n - (1 << k)).div_ceil(1 << (k - 4));
    (SMALL_CLASSES + (k - 12) * FINE_STEPS + i).min(NUM_CLASSES - 1)
}

/// The superblock as it lies at offset 0 of `meta` (see the diagram above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSuperblock {
    magic: [u8; 8],
    version: U32,
    node_id: U32,
    epoch: U64,
    max_peers: U32,
    super_len: U32,
    record_len: U32,
    reserved: [u8; 24],
    /// crc32c of bytes 0..60.
    crc: U32,
}

/// One copy of a peer record as it lies in a peer entry (see the diagram above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawRecord {
    generation: U64,
    peer: U32,
    out_inc: U32,
    in_inc: U32,
    flags: U32,
    next_out: U64,
    acked_out: U64,
    consumed_in: U64,
    peer_epoch: U64,
    reserved: [u8; 4],
    /// crc32c of bytes 0..60.
    crc: U32,
}

/// A segment file's header, at offset 0 (see the diagram above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSegHeader {
    magic: [u8; 8],
    version: U32,
    index: U32,
    class: U32,
    slot_size: U32,
    slots: U32,
    reserved0: [u8; 4],
    epoch: U64,
    reserved: [u8; 20],
    /// crc32c of bytes 0..60.
    crc: U32,
}

/// Bytes 8..64 of a slot: its header after the state word (see the diagram above; offsets
/// here are 8 less than there).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawSlotHeader {
    generation: U64,
    seq: U64,
    peer: U32,
    len: U32,
    crc: U32,
    inc: U32,
    kind: u8,
    flags: u8,
    reserved: [u8; 2],
    link_inc: U32,
    link: U64,
    reserved2: [u8; 4],
    /// crc32c of bytes 0..52 of this struct (8..60 of the slot).
    hdr_crc: U32,
}

/// Superblock contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) node_id: u32,
    pub(crate) epoch: u64,
    pub(crate) max_peers: u32,
}

impl Superblock {
    pub(crate) fn encode(&self) -> [u8; 64] {
        let mut raw = RawSuperblock {
            magic: MAGIC,
            version: U32::new(FORMAT_VERSION),
            node_id: U32::new(self.node_id),
            epoch: U64::new(self.epoch),
            max_peers: U32::new(self.max_peers),
            super_len: U32::new(SUPER_LEN as u32),
            record_len: U32::new(RECORD_LEN as u32),
            reserved: [0; 24],
            crc: U32::ZERO,
        };
        raw.crc = U32::new(crc32c::crc32c(&raw.as_bytes()[..60]));
        zerocopy::transmute!(raw)
    }

    pub(crate) fn decode(b: &[u8; 64]) -> Result<Self, &'static str> {
        let raw: &RawSuperblock = zerocopy::transmute_ref!(b);
        if raw.magic != MAGIC {
            return Err("bad superblock magic");
        }
        if crc32c::crc32c(&b[..60]) != raw.crc.get() {
            return Err("superblock checksum mismatch");
        }
        if raw.version.get() != FORMAT_VERSION {
            return Err("unsupported format version");
        }
        if raw.super_len.get() as usize != SUPER_LEN || raw.record_len.get() as usize != RECORD_LEN
        {
            return Err("unsupported superblock geometry");
        }
        let sb = Self {
            node_id: raw.node_id.get(),
            epoch: raw.epoch.get(),
            max_peers: raw.max_peers.get(),
        };
        if sb.epoch == 0 || sb.max_peers == 0 || sb.max_peers > crate::MAX_PEERS {
            return Err("superblock field out of range");
        }
        Ok(sb)
    }
}

/// One copy of a peer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Record {
    pub(crate) generation: u64,
    pub(crate) peer: u32,
    pub(crate) out_inc: u32,
    pub(crate) in_inc: u32,
    pub(crate) next_out: u64,
    pub(crate) acked_out: u64,
    pub(crate) consumed_in: u64,
    pub(crate) peer_epoch: u64,
    /// [`REC_INBOUND_STARTED`] and future flags.
    pub(crate) flags: u32,
}

/// Record flag: the inbound stream from this peer has started (something was persisted or
/// skipped to) in the current inbound incarnation. A stream that has not started may begin
/// wherever the sender's first pending seq is; one that has cannot skip seqs silently.
pub(crate) const REC_INBOUND_STARTED: u32 = 1;

impl Record {
    #[cfg(test)]
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        words_to_bytes(self.encode_words())
    }

    /// [`Record::encode`] as eight little-endian words (see [`SlotHeader::encode_words`]).
    #[inline]
    pub(crate) fn encode_words(&self) -> [u64; RECORD_LEN / 8] {
        let mut w = [
            self.generation,
            u64::from(self.peer) | u64::from(self.out_inc) << 32,
            u64::from(self.in_inc) | u64::from(self.flags) << 32,
            self.next_out,
            self.acked_out,
            self.consumed_in,
            self.peer_epoch,
            0,
        ];
        w[7] = u64::from(crc_words(&w, 60)) << 32;
        w
    }

    /// `None` if never written or damaged.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let raw = RawRecord::ref_from_bytes(b).ok()?;
        if crc32c::crc32c(&b[..60]) != raw.crc.get() {
            return None;
        }
        let r = Self {
            generation: raw.generation.get(),
            peer: raw.peer.get(),
            out_inc: raw.out_inc.get(),
            in_inc: raw.in_inc.get(),
            next_out: raw.next_out.get(),
            acked_out: raw.acked_out.get(),
            consumed_in: raw.consumed_in.get(),
            peer_epoch: raw.peer_epoch.get(),
            flags: raw.flags.get(),
        };
        (r.generation != 0 && r.flags & !REC_INBOUND_STARTED == 0).then_some(r)
    }
}

/// Segment header contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegHeader {
    pub(crate) index: u32,
    pub(crate) class: u32,
    pub(crate) slot_size: u32,
    pub(crate) slots: u32,
    pub(crate) epoch: u64,
}

impl SegHeader {
    pub(crate) fn encode(&self) -> [u8; SEG_HDR] {
        let mut raw = RawSegHeader {
            magic: SEG_MAGIC,
            version: U32::new(FORMAT_VERSION),
            index: U32::new(self.index),
            class: U32::new(self.class),
            slot_size: U32::new(self.slot_size),
            slots: U32::new(self.slots),
            reserved0: [0; 4],
            epoch: U64::new(self.epoch),
            reserved: [0; 20],
            crc: U32::ZERO,
        };
        raw.crc = U32::new(crc32c::crc32c(&raw.as_bytes()[..60]));
        zerocopy::transmute!(raw)
    }

    pub(crate) fn decode(b: &[u8; SEG_HDR]) -> Result<Self, &'static str> {
        let raw: &RawSegHeader = zerocopy::transmute_ref!(b);
        if raw.magic != SEG_MAGIC {
            return Err("bad segment magic");
        }
        if crc32c::crc32c(&b[..60]) != raw.crc.get() {
            return Err("segment header checksum mismatch");
        }
        if raw.version.get() != FORMAT_VERSION {
            return Err("unsupported segment version");
        }
        let h = Self {
            index: raw.index.get(),
            class: raw.class.get(),
            slot_size: raw.slot_size.get(),
            slots: raw.slots.get(),
            epoch: raw.epoch.get(),
        };
        if h.class as usize >= NUM_CLASSES
            || h.slot_size as usize != class_size(h.class as usize)
            || h.slots == 0
        {
            return Err("segment geometry out of range");
        }
        Ok(h)
    }

    /// Total file length implied by the header.
    pub(crate) fn file_len(&self) -> u64 {
        SEG_HDR as u64 + u64::from(self.slot_size) * u64::from(self.slots)
    }
}

/// Slot header contents (without the state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlotHeader {
    pub(crate) generation: u64,
    pub(crate) seq: u64,
    pub(crate) peer: u32,
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) inc: u32,
    pub(crate) kind: u8,
    /// Message flags ([`FLAG_CALL`]); 0 for markers and calls.
    pub(crate) flags: u8,
    /// A reply (outbound message) only: the inbound incarnation and seq of the request its
    /// commit consumed (`link` 0 = none). Recovery consumes through it.
    pub(crate) link_inc: u32,
    pub(crate) link: u64,
}

/// crc32c of the first `len` bytes of `w` laid out little-endian. The words are stored whole
/// and 8-aligned, so the checksum's 8-byte loads are served by those stores.
#[inline]
fn crc_words<const N: usize>(w: &[u64; N], len: usize) -> u32 {
    let le: [u64; N] = w.map(u64::to_le);
    crc32c::crc32c(&le.as_bytes()[..len])
}

/// The bytes of little-endian words.
#[cfg(test)]
fn words_to_bytes<const N: usize, const B: usize>(w: [u64; N]) -> [u8; B] {
    let mut out = [0u8; B];
    for (chunk, x) in out.chunks_exact_mut(8).zip(w) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

impl SlotHeader {
    /// Encodes bytes 8..64 of the slot.
    #[inline]
    #[cfg(test)]
    pub(crate) fn encode(&self) -> [u8; SLOT_HDR - 8] {
        words_to_bytes(self.encode_words())
    }

    /// [`SlotHeader::encode`] as seven words, each the little-endian reading of 8 bytes (the
    /// layout of `RawSlotHeader`, checksum included). Built in registers and checksummed from
    /// whole aligned words, then written a word at a time: a header assembled from narrower
    /// stores and read back wider stalls on store forwarding, once per message.
    #[inline]
    pub(crate) fn encode_words(&self) -> [u64; 7] {
        let mut w = [
            self.generation,
            self.seq,
            u64::from(self.peer) | u64::from(self.len) << 32,
            u64::from(self.crc) | u64::from(self.inc) << 32,
            u64::from(self.kind) | u64::from(self.flags) << 8 | u64::from(self.link_inc) << 32,
            self.link,
            0,
        ];
        w[6] = u64::from(crc_words(&w, 52)) << 32;
        w
    }

    /// Decodes bytes 8..64 of a slot; `None` if the checksum or a field is bad.
    #[inline]
    pub(crate) fn decode(b: &[u8; SLOT_HDR - 8]) -> Option<Self> {
        let raw: &RawSlotHeader = zerocopy::transmute_ref!(b);
        if crc32c::crc32c(&b[..52]) != raw.hdr_crc.get() {
            return None;
        }
        let h = Self {
            generation: raw.generation.get(),
            seq: raw.seq.get(),
            peer: raw.peer.get(),
            len: raw.len.get(),
            crc: raw.crc.get(),
            inc: raw.inc.get(),
            kind: raw.kind,
            flags: raw.flags,
            link_inc: raw.link_inc.get(),
            link: raw.link.get(),
        };
        let kind_ok = matches!(
            h.kind,
            KIND_OUT | KIND_IN | KIND_OUT_LOST | KIND_IN_LOST | KIND_CALL
        );
        let marker_ok = !matches!(h.kind, KIND_OUT_LOST | KIND_IN_LOST) || h.len == LOST_LEN;
        let call_ok = h.kind != KIND_CALL || h.len == CALL_LEN;
        // Only messages carry flags, and only outbound ones a reply link.
        let message = matches!(h.kind, KIND_OUT | KIND_IN);
        let flags_ok = h.flags & !FLAG_CALL == 0 && (message || h.flags == 0);
        let link_ok = h.kind == KIND_OUT || h.link == 0 && h.link_inc == 0;
        (h.generation != 0 && h.seq != 0 && kind_ok && marker_ok && call_ok && flags_ok && link_ok)
            .then_some(h)
    }
}

#[cfg(test)]
mod tests;
