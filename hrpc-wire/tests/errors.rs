//! Each malformed-input class maps to its typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_wire::{
    AckFrame, DataFrame, Datagram, DatagramWriter, EncodeError, FRAME_DATA, HEADER_LEN,
    HeaderFields, MAX_MESSAGE_LEN, MAX_SACK_RANGES, SackRange, SackRanges, WireError,
    decode_frames,
};

const H: HeaderFields = HeaderFields {
    src: 1,
    dst: 2,
    src_epoch: 3,
    dst_epoch: 4,
    auth: false,
};

/// Builds a valid datagram holding one DATA frame for `payload`.
fn one_message(payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut w = DatagramWriter::new(&mut buf, &H).unwrap();
    w.push_data(&DataFrame {
        flags: 0,
        seq: 1,
        msg_len: payload.len() as u32,
        offset: 0,
        msg_crc: crc32c::crc32c(payload),
        payload,
    })
    .unwrap();
    let len = w.finish();
    buf.truncate(len);
    buf
}

/// Rewrites the checksum so a test can reach the checks behind it.
fn fix_crc(buf: &mut [u8]) {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..28]), &buf[32..]);
    buf[28..32].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn short_buffers_are_truncated() {
    let d = one_message(b"hello");
    for cut in 0..d.len() {
        let err = Datagram::parse(&d[..cut]).unwrap_err();
        assert!(
            matches!(err, WireError::Truncated { .. } | WireError::BadChecksum),
            "cut {cut}: {err:?}"
        );
    }
    // With the checksum fixed, a cut inside the frame is reported as truncation.
    let mut cut = d[..d.len() - 2].to_vec();
    fix_crc(&mut cut);
    assert!(matches!(
        Datagram::parse(&cut),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn bad_magic_version_flags_checksum() {
    let d = one_message(b"x");
    let mut m = d.clone();
    m[0] = b'X';
    assert!(matches!(Datagram::parse(&m), Err(WireError::BadMagic(_))));
    let mut v = d.clone();
    v[2] = 9;
    assert_eq!(Datagram::parse(&v).unwrap_err(), WireError::BadVersion(9));
    let mut f = d.clone();
    f[3] = 0x80;
    assert!(matches!(
        Datagram::parse(&f),
        Err(WireError::ReservedBits(_))
    ));
    let mut c = d.clone();
    let last = c.len() - 1;
    c[last] ^= 1;
    assert_eq!(Datagram::parse(&c).unwrap_err(), WireError::BadChecksum);
}

#[test]
fn unknown_frame_type() {
    let mut d = one_message(b"x");
    d[HEADER_LEN] = 0x7f;
    fix_crc(&mut d);
    assert_eq!(
        Datagram::parse(&d).unwrap_err(),
        WireError::UnknownFrame(0x7f)
    );
}

#[test]
fn lengths_are_checked_before_use() {
    // frag_len larger than what remains in the datagram.
    let mut d = one_message(b"abc");
    d[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&u16::MAX.to_be_bytes());
    fix_crc(&mut d);
    assert!(matches!(
        Datagram::parse(&d),
        Err(WireError::Truncated { .. })
    ));
    // msg_len above the maximum.
    let mut d = one_message(b"abc");
    let huge = (MAX_MESSAGE_LEN as u32) + 1;
    d[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&huge.to_be_bytes());
    fix_crc(&mut d);
    assert_eq!(
        Datagram::parse(&d).unwrap_err(),
        WireError::MessageTooLarge(u64::from(huge))
    );
    // Fragment beyond the message length.
    let mut d = one_message(b"abc");
    d[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&1u32.to_be_bytes());
    fix_crc(&mut d);
    assert!(matches!(
        Datagram::parse(&d),
        Err(WireError::FragmentOutOfRange { .. })
    ));
    // Offset near u32::MAX must not overflow.
    let mut d = one_message(b"abc");
    d[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_crc(&mut d);
    assert!(matches!(
        Datagram::parse(&d),
        Err(WireError::FragmentOutOfRange { .. })
    ));
}

#[test]
fn zero_length_and_zero_seq() {
    let mut body = vec![FRAME_DATA, 0, 0, 0];
    body.extend_from_slice(&10u32.to_be_bytes()); // msg_len 10, fragment empty
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&1u64.to_be_bytes());
    assert_eq!(
        decode_frames(&body).next().unwrap().unwrap_err(),
        WireError::ZeroLength
    );
    // An empty message is fine as a single empty frame.
    body[4..8].copy_from_slice(&0u32.to_be_bytes());
    assert!(decode_frames(&body).next().unwrap().is_ok());
    body[16..24].copy_from_slice(&0u64.to_be_bytes());
    assert_eq!(
        decode_frames(&body).next().unwrap().unwrap_err(),
        WireError::ZeroSeq
    );
}

fn ack(cumulative: u64, sacks: &[SackRange]) -> Result<(), EncodeError> {
    let mut buf = vec![0u8; 2000];
    let mut w = DatagramWriter::new(&mut buf, &H).unwrap();
    w.push_ack(&AckFrame {
        cumulative,
        ack_delay_us: 0,
        window_msgs: 0,
        window_bytes: 0,
        sacks: SackRanges::Native(sacks),
    })
}

#[test]
fn sack_ranges_are_validated() {
    let r = |first, last| SackRange { first, last };
    assert!(ack(10, &[r(12, 15), r(17, 17)]).is_ok());
    let bad = EncodeError::Invalid(WireError::BadSackRanges);
    assert_eq!(ack(10, &[r(11, 15)]), Err(bad), "no gap after cumulative");
    assert_eq!(ack(10, &[r(15, 12)]), Err(bad), "inverted");
    assert_eq!(ack(10, &[r(12, 15), r(14, 20)]), Err(bad), "overlapping");
    assert_eq!(ack(10, &[r(12, 15), r(16, 20)]), Err(bad), "adjacent");
    assert_eq!(ack(10, &[r(20, 25), r(12, 15)]), Err(bad), "unsorted");
    assert_eq!(
        ack(u64::MAX - 1, &[r(u64::MAX, u64::MAX)]),
        Err(bad),
        "overflow"
    );
    let many: Vec<_> = (0..=MAX_SACK_RANGES as u64)
        .map(|i| r(100 + 3 * i, 100 + 3 * i))
        .collect();
    assert_eq!(
        ack(10, &many),
        Err(EncodeError::Invalid(WireError::TooManySacks(many.len())))
    );
}

#[test]
fn auth_tag_is_reserved_and_returned() {
    let h = HeaderFields { auth: true, ..H };
    let mut buf = vec![0u8; 200];
    let mut w = DatagramWriter::new(&mut buf, &h).unwrap();
    assert_eq!(w.remaining(), 200 - HEADER_LEN - 16);
    w.push_data(&DataFrame {
        flags: 0,
        seq: 5,
        msg_len: 2,
        offset: 0,
        msg_crc: 0,
        payload: b"hi",
    })
    .unwrap();
    let len = w.finish();
    buf[len - 16..len].copy_from_slice(&[0xAB; 16]);
    let d = Datagram::parse(&buf[..len]).unwrap();
    assert_eq!(d.auth_tag(), Some(&[0xAB; 16]));
    assert_eq!(d.authenticated_bytes().len(), len - 16);
    assert!(d.header().auth);
}

#[test]
fn encoder_refuses_what_does_not_fit_and_bad_buffers() {
    assert_eq!(
        DatagramWriter::new(&mut [0u8; 10], &H).unwrap_err(),
        WireError::BadBufferSize(10)
    );
    let mut buf = vec![0u8; HEADER_LEN + 30];
    let mut w = DatagramWriter::new(&mut buf, &H).unwrap();
    assert_eq!(w.data_capacity(), 6);
    let frame = DataFrame {
        flags: 0,
        seq: 1,
        msg_len: 7,
        offset: 0,
        msg_crc: 0,
        payload: &[0; 7],
    };
    assert_eq!(w.push_data(&frame), Err(EncodeError::Full));
    assert!(w.is_empty());
}

/// LOST ranges must not end before they start or name seq 0; FRAG_ACK byte ranges must follow
/// gaps, be non-empty and ascend, and be at most `MAX_FRAG_RANGES`. Both are refused by the
/// encoder and, hand-built, by the decoder.
#[test]
fn lost_and_fragment_ranges_are_validated() {
    use hrpc_wire::{FragAckFrame, FragRange, FragRanges, Frame, LostFrame, MAX_FRAG_RANGES};
    let ranges_of = |v: &[(u32, u32)]| -> Vec<FragRange> {
        v.iter()
            .map(|&(start, end)| FragRange { start, end })
            .collect()
    };
    let mut buf = vec![0u8; 1472];
    let mut w = DatagramWriter::new(&mut buf, &H).unwrap();
    assert!(matches!(
        w.push_lost(&LostFrame { first: 5, last: 4 }),
        Err(EncodeError::Invalid(WireError::BadLostRange))
    ));
    assert!(matches!(
        w.push_lost(&LostFrame { first: 0, last: 4 }),
        Err(EncodeError::Invalid(WireError::ZeroSeq))
    ));
    for ranges in [
        vec![(10, 10)],           // empty
        vec![(5, 9)],             // touches `received` (no gap before it)
        vec![(20, 30), (30, 40)], // adjacent: no gap between
        vec![(40, 50), (20, 30)], // descending
    ] {
        let r = ranges_of(&ranges);
        let f = FragAckFrame {
            seq: 1,
            received: 5,
            ranges: FragRanges::Native(&r),
        };
        assert!(
            matches!(
                w.push_frag_ack(&f),
                Err(EncodeError::Invalid(WireError::BadFragRanges))
            ),
            "{ranges:?}"
        );
    }
    // A range count past the maximum, hand-built on the wire.
    let r = ranges_of(&[(10, 20)]);
    let ok = FragAckFrame {
        seq: 1,
        received: 5,
        ranges: FragRanges::Native(&r),
    };
    w.push_frag_ack(&ok).unwrap();
    let n = w.finish();
    let d = Datagram::parse(&buf[..n]).unwrap();
    assert!(matches!(d.frames().next(), Some(Frame::FragAck(f)) if f == ok));
    let mut raw = buf[HEADER_LEN..n].to_vec();
    raw[1] = (MAX_FRAG_RANGES + 1) as u8;
    assert!(matches!(
        decode_frames(&raw).next(),
        Some(Err(WireError::BadFragRanges))
    ));
}
