//! Size classes, checksums, and the pinned on-disk layouts.

use super::*;

/// class_for returns the smallest class that fits, for every boundary.
#[test]
fn classes_are_tight() {
    for c in 0..NUM_CLASSES {
        let s = class_size(c);
        assert_eq!(class_for(s), c, "size {s}");
        if c > 0 {
            assert_eq!(class_for(class_size(c - 1) + 1), c);
        }
    }
    assert_eq!(
        class_size(NUM_CLASSES - 1),
        crate::MAX_MESSAGE_LEN + SLOT_HDR
    );
    assert!(class_size(NUM_CLASSES - 2) < crate::MAX_MESSAGE_LEN + SLOT_HDR);
    assert_eq!(class_for(1), 0);
}

/// Slots are multiples of 64 (8-aligned state words), ascend, and from 4 KiB up a slot is
/// at most 1/16 larger than the smallest size that needs it (so ≤ 6.25% waste).
#[test]
fn classes_are_fine_above_4k() {
    for c in 1..NUM_CLASSES {
        let (prev, s) = (class_size(c - 1), class_size(c));
        assert!(s.is_multiple_of(64) && s > prev, "class {c}: {s}");
        if prev >= 4096 {
            assert!(s * 16 <= (prev + 1) * 17, "class {c}: {prev} -> {s}");
        }
    }
    for n in [4097, 5000, 1 << 20, (1 << 20) + 65, 3_000_000, 16 << 20] {
        let s = class_size(class_for(n));
        assert!(s >= n && s * 16 <= n * 17, "{n} -> {s}");
    }
}

/// Encodings round-trip and any single bit flip is detected.
#[test]
fn checksums_detect_flips() {
    let h = SlotHeader {
        generation: 7,
        seq: 9,
        peer: 3,
        len: 100,
        crc: 5,
        inc: 1,
        kind: KIND_OUT,
        ..SlotHeader::default()
    };
    let b = h.encode();
    assert_eq!(SlotHeader::decode(&b), Some(h));
    for bit in 0..(b.len() * 8) {
        let mut c = b;
        c[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(SlotHeader::decode(&c), Some(h));
    }
    let r = Record {
        generation: 1,
        peer: 2,
        next_out: 3,
        ..Default::default()
    };
    assert_eq!(Record::decode(&r.encode()), Some(r));
    let s = Superblock {
        node_id: 1,
        epoch: 2,
        max_peers: 3,
    };
    assert_eq!(Superblock::decode(&s.encode()), Ok(s));
}

/// The raw layouts have exactly the sizes and field offsets the diagram above gives.
#[test]
fn layouts_are_pinned() {
    use std::mem::{offset_of, size_of};
    assert_eq!(size_of::<RawSuperblock>(), 64);
    assert_eq!(offset_of!(RawSuperblock, version), 8);
    assert_eq!(offset_of!(RawSuperblock, node_id), 12);
    assert_eq!(offset_of!(RawSuperblock, epoch), 16);
    assert_eq!(offset_of!(RawSuperblock, max_peers), 24);
    assert_eq!(offset_of!(RawSuperblock, super_len), 28);
    assert_eq!(offset_of!(RawSuperblock, record_len), 32);
    assert_eq!(offset_of!(RawSuperblock, reserved), 36);
    assert_eq!(offset_of!(RawSuperblock, crc), 60);

    assert_eq!(size_of::<RawRecord>(), RECORD_LEN);
    assert_eq!(offset_of!(RawRecord, generation), 0);
    assert_eq!(offset_of!(RawRecord, peer), 8);
    assert_eq!(offset_of!(RawRecord, out_inc), 12);
    assert_eq!(offset_of!(RawRecord, in_inc), 16);
    assert_eq!(offset_of!(RawRecord, flags), 20);
    assert_eq!(offset_of!(RawRecord, next_out), 24);
    assert_eq!(offset_of!(RawRecord, acked_out), 32);
    assert_eq!(offset_of!(RawRecord, consumed_in), 40);
    assert_eq!(offset_of!(RawRecord, peer_epoch), 48);
    assert_eq!(offset_of!(RawRecord, reserved), 56);
    assert_eq!(offset_of!(RawRecord, crc), 60);

    assert_eq!(size_of::<RawSegHeader>(), SEG_HDR);
    assert_eq!(offset_of!(RawSegHeader, version), 8);
    assert_eq!(offset_of!(RawSegHeader, index), 12);
    assert_eq!(offset_of!(RawSegHeader, class), 16);
    assert_eq!(offset_of!(RawSegHeader, slot_size), 20);
    assert_eq!(offset_of!(RawSegHeader, slots), 24);
    assert_eq!(offset_of!(RawSegHeader, reserved0), 28);
    assert_eq!(offset_of!(RawSegHeader, epoch), 32);
    assert_eq!(offset_of!(RawSegHeader, reserved), 40);
    assert_eq!(offset_of!(RawSegHeader, crc), 60);

    // Offsets within the slot are these plus 8 (the state word comes first).
    assert_eq!(size_of::<RawSlotHeader>(), SLOT_HDR - 8);
    assert_eq!(offset_of!(RawSlotHeader, generation), 0);
    assert_eq!(offset_of!(RawSlotHeader, seq), 8);
    assert_eq!(offset_of!(RawSlotHeader, peer), 16);
    assert_eq!(offset_of!(RawSlotHeader, len), 20);
    assert_eq!(offset_of!(RawSlotHeader, crc), 24);
    assert_eq!(offset_of!(RawSlotHeader, inc), 28);
    assert_eq!(offset_of!(RawSlotHeader, kind), 32);
    assert_eq!(offset_of!(RawSlotHeader, flags), 33);
    assert_eq!(offset_of!(RawSlotHeader, reserved), 34);
    assert_eq!(offset_of!(RawSlotHeader, link_inc), 36);
    assert_eq!(offset_of!(RawSlotHeader, link), 40);
    assert_eq!(offset_of!(RawSlotHeader, reserved2), 48);
    assert_eq!(offset_of!(RawSlotHeader, hdr_crc), 52);
}

/// The on-disk bytes of one known value of each fixed layout, captured from the format-2
/// encoders: a change here is a change of format, to be made deliberately (with a new
/// `FORMAT_VERSION`), never by accident.
#[test]
fn golden_bytes() {
    const SUPERBLOCK: [u8; 64] = [
        0x48, 0x52, 0x50, 0x43, 0x53, 0x54, 0x4f, 0x52, 0x02, 0x00, 0x00, 0x00, 0x04, 0x03, 0x02,
        0x01, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0x04, 0x00, 0x00, 0x00, 0x10,
        0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x60, 0x08, 0xe6, 0x36,
    ];
    const RECORD: [u8; 64] = [
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x5a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xef, 0xbe, 0xad, 0xde, 0x00, 0x00, 0x00, 0x00,
        0x75, 0x04, 0x38, 0x53,
    ];
    const SEGMENT: [u8; 64] = [
        0x48, 0x52, 0x50, 0x43, 0x53, 0x45, 0x47, 0x31, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x2d, 0x80, 0xa3, 0x9b,
    ];
    const SLOT: [u8; 56] = [
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x07, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x01, 0xef, 0xcd, 0xab, 0x02, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x92, 0x46, 0x07,
    ];

    let sb = Superblock {
        node_id: 0x0102_0304,
        epoch: 0x1122_3344_5566_7788,
        max_peers: 1024,
    };
    assert_eq!(sb.encode(), SUPERBLOCK);
    assert_eq!(Superblock::decode(&SUPERBLOCK), Ok(sb));
    let rec = Record {
        generation: 5,
        peer: 7,
        out_inc: 2,
        in_inc: 3,
        next_out: 100,
        acked_out: 90,
        consumed_in: 40,
        peer_epoch: 0xdead_beef_0000_0001,
        flags: REC_INBOUND_STARTED,
    };
    assert_eq!(rec.encode(), RECORD);
    assert_eq!(Record::decode(&RECORD), Some(rec));
    let seg = SegHeader {
        index: 3,
        class: 10,
        slot_size: 4096,
        slots: 15,
        epoch: 0x1122_3344_5566_7788,
    };
    assert_eq!(seg.encode(), SEGMENT);
    assert_eq!(SegHeader::decode(&SEGMENT), Ok(seg));
    let slot = SlotHeader {
        generation: 9,
        seq: 42,
        peer: 7,
        len: 100,
        crc: 0xabcd_ef01,
        inc: 2,
        kind: KIND_OUT,
        ..SlotHeader::default()
    };
    assert_eq!(slot.encode(), SLOT);
    assert_eq!(SlotHeader::decode(&SLOT), Some(slot));
}
