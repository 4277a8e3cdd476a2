//! Property tests of the datagram format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_wire::{
    AckFrame, CookieFrame, DataFrame, Datagram, DatagramWriter, EncodeError, FragAckFrame,
    FragRange, FragRanges, Frame, HEADER_LEN, HeaderFields, HeartbeatFrame, LostFrame,
    MAX_DATAGRAM_LEN, MAX_SACK_RANGES, ResetFrame, ResetReason, SackRange, SackRanges,
    decode_frames,
};
use proptest::prelude::*;

/// A frame with owned parts, so strategies can generate it.
#[derive(Debug, Clone)]
enum OwnedFrame {
    Data {
        flags: u8,
        seq: u64,
        msg_len: u32,
        offset: u32,
        crc: u32,
        payload: Vec<u8>,
    },
    Ack {
        cumulative: u64,
        delay: u32,
        msgs: u32,
        bytes: u32,
        sacks: Vec<SackRange>,
    },
    Heartbeat(HeartbeatFrame),
    Reset(ResetFrame),
    FragAck {
        seq: u64,
        received: u32,
        ranges: Vec<FragRange>,
    },
    Lost(LostFrame),
    Challenge(CookieFrame),
    Response(CookieFrame),
}

impl OwnedFrame {
    fn frame(&self) -> Frame<'_> {
        match self {
            OwnedFrame::Data {
                flags,
                seq,
                msg_len,
                offset,
                crc,
                payload,
            } => Frame::Data(DataFrame {
                flags: *flags,
                seq: *seq,
                msg_len: *msg_len,
                offset: *offset,
                msg_crc: *crc,
                payload,
            }),
            OwnedFrame::Ack {
                cumulative,
                delay,
                msgs,
                bytes,
                sacks,
            } => Frame::Ack(AckFrame {
                cumulative: *cumulative,
                ack_delay_us: *delay,
                window_msgs: *msgs,
                window_bytes: *bytes,
                sacks: SackRanges::Native(sacks),
            }),
            OwnedFrame::Heartbeat(h) => Frame::Heartbeat(*h),
            OwnedFrame::Reset(r) => Frame::Reset(*r),
            OwnedFrame::FragAck {
                seq,
                received,
                ranges,
            } => Frame::FragAck(FragAckFrame {
                seq: *seq,
                received: *received,
                ranges: FragRanges::Native(ranges),
            }),
            OwnedFrame::Lost(l) => Frame::Lost(*l),
            OwnedFrame::Challenge(c) => Frame::Challenge(*c),
            OwnedFrame::Response(c) => Frame::Response(*c),
        }
    }
}

fn data_frame() -> impl Strategy<Value = OwnedFrame> {
    (
        1..=u64::MAX,
        proptest::collection::vec(any::<u8>(), 0..300),
        0u32..1000,
        0u32..1000,
        any::<u32>(),
        0u8..=hrpc_wire::DATA_FLAG_CALL,
    )
        .prop_map(|(seq, payload, before, after, crc, flags)| {
            let len = payload.len() as u32;
            // A non-empty message may not carry an empty fragment.
            let (offset, msg_len) = if len == 0 {
                (0, 0)
            } else {
                (before, before + len + after)
            };
            OwnedFrame::Data {
                flags,
                seq,
                msg_len,
                offset,
                crc,
                payload,
            }
        })
}

fn ack_frame() -> impl Strategy<Value = OwnedFrame> {
    (
        0u64..u64::MAX / 2,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec((1u64..1000, 0u64..1000), 0..=MAX_SACK_RANGES),
    )
        .prop_map(|(cumulative, delay, msgs, bytes, gaps)| {
            let mut floor = cumulative;
            let sacks = gaps
                .into_iter()
                .map(|(gap, width)| {
                    let first = floor + 1 + gap;
                    floor = first + width;
                    SackRange { first, last: floor }
                })
                .collect();
            OwnedFrame::Ack {
                cumulative,
                delay,
                msgs,
                bytes,
                sacks,
            }
        })
}

fn frame() -> impl Strategy<Value = OwnedFrame> {
    prop_oneof![
        data_frame(),
        ack_frame(),
        (
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(reply_requested, next_seq, first_pending, expected, timestamp_us, echo_us)| {
                    OwnedFrame::Heartbeat(HeartbeatFrame {
                        reply_requested,
                        next_seq,
                        first_pending,
                        expected,
                        timestamp_us,
                        echo_us,
                    })
                }
            ),
        (
            1..=u64::MAX,
            0..u32::MAX / 2,
            proptest::collection::vec((1..1000u32, 1..1000u32), 0..=16)
        )
            .prop_map(|(seq, received, gaps)| {
                // Ranges after `received`, each after a gap.
                let mut at = received;
                let ranges: Vec<FragRange> = gaps
                    .into_iter()
                    .map(|(gap, len)| {
                        let start = at + gap;
                        at = start + len;
                        FragRange { start, end: at }
                    })
                    .collect();
                OwnedFrame::FragAck {
                    seq,
                    received,
                    ranges,
                }
            }),
        (1..u64::MAX / 2, 0..u64::MAX / 2).prop_map(|(first, n)| OwnedFrame::Lost(LostFrame {
            first,
            last: first + n
        })),
        (any::<bool>(), any::<u64>()).prop_map(|(challenge, cookie)| {
            let c = CookieFrame { cookie };
            if challenge {
                OwnedFrame::Challenge(c)
            } else {
                OwnedFrame::Response(c)
            }
        }),
        (any::<bool>(), any::<u64>(), any::<u64>()).prop_map(|(lost, epoch, seen_epoch)| {
            OwnedFrame::Reset(ResetFrame {
                reason: if lost {
                    ResetReason::StoreLost
                } else {
                    ResetReason::EpochMismatch
                },
                epoch,
                seen_epoch,
            })
        }),
    ]
}

fn header() -> impl Strategy<Value = HeaderFields> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(src, dst, src_epoch, dst_epoch, auth)| HeaderFields {
            src,
            dst,
            src_epoch,
            dst_epoch,
            auth,
        })
}

/// Re-encodes a parsed datagram into a fresh buffer of the same size.
fn reencode(d: &Datagram<'_>, original: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; original.len()];
    let mut w = DatagramWriter::new(&mut buf, &d.header()).expect("buffer size");
    for f in d.frames() {
        w.push(&f).expect("a decoded frame re-encodes and fits");
    }
    let len = w.finish();
    if let Some(tag) = d.auth_tag() {
        buf[len - tag.len()..len].copy_from_slice(tag);
    }
    buf.truncate(len);
    buf
}

/// Builds a datagram with a valid header and checksum around `body`.
fn with_valid_header(header: &HeaderFields, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let w = DatagramWriter::new(
        &mut buf,
        &HeaderFields {
            auth: false,
            ..*header
        },
    )
    .expect("buffer size");
    let len = w.finish();
    assert_eq!(len, HEADER_LEN);
    buf.truncate(HEADER_LEN);
    buf.extend_from_slice(body);
    // Recompute the checksum over the spliced body: re-run the writer's rule.
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..28]), &buf[32..]);
    buf[28..32].copy_from_slice(&crc.to_be_bytes());
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Invariant: encode → decode is the identity for every frame type and for
    /// any batch of frames, and the encoder stops with `Full` exactly when the
    /// next frame would not fit.
    #[test]
    fn batch_roundtrip(h in header(), frames in proptest::collection::vec(frame(), 0..40), mtu in 100usize..4000) {
        let mut buf = vec![0u8; mtu];
        let mut w = DatagramWriter::new(&mut buf, &h).unwrap();
        let mut written = Vec::new();
        for f in &frames {
            let before = w.remaining();
            match w.push(&f.frame()) {
                Ok(()) => written.push(f.clone()),
                Err(EncodeError::Full) => {
                    prop_assert!(f.frame().encoded_len() > before);
                    prop_assert_eq!(w.remaining(), before);
                }
                Err(e) => prop_assert!(false, "valid frame refused: {e}"),
            }
        }
        let len = w.finish();
        let d = Datagram::parse(&buf[..len]).unwrap();
        prop_assert_eq!(d.header(), h);
        prop_assert_eq!(d.frame_count(), written.len());
        for (got, want) in d.frames().zip(&written) {
            prop_assert_eq!(got, want.frame());
        }
        prop_assert_eq!(reencode(&d, &buf[..len]), buf[..len].to_vec());
    }

    /// Invariant: any byte string either parses to a datagram whose frames
    /// re-encode to the same bytes, or yields a typed error (never a panic).
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(d) = Datagram::parse(&bytes) {
            prop_assert_eq!(reencode(&d, &bytes), bytes);
        }
    }

    /// Invariant: with a valid header and checksum, any frame body either
    /// decodes to frames that re-encode byte-identically or yields a typed
    /// error; `decode_frames` agrees with `Datagram::parse`.
    #[test]
    fn arbitrary_body(h in header(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let bytes = with_valid_header(&h, &body);
        let standalone: Result<Vec<_>, _> = decode_frames(&body).collect();
        match Datagram::parse(&bytes) {
            Ok(d) => {
                prop_assert_eq!(standalone.unwrap(), d.frames().collect::<Vec<_>>());
                prop_assert_eq!(reencode(&d, &bytes), bytes);
            }
            Err(e) => prop_assert_eq!(standalone.unwrap_err(), e),
        }
    }

    /// Invariant: flipping any single bit of a valid datagram is caught (by
    /// the checksum, or by header validation) — corrupt frames never decode.
    #[test]
    fn bit_flips_are_rejected(h in header(), frames in proptest::collection::vec(frame(), 1..10), bit in any::<usize>()) {
        let h = HeaderFields { auth: false, ..h };
        let mut buf = vec![0u8; 2000];
        let mut w = DatagramWriter::new(&mut buf, &h).unwrap();
        for f in &frames {
            let _ = w.push(&f.frame());
        }
        let len = w.finish();
        buf.truncate(len);
        let bit = bit % (len * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Datagram::parse(&buf).is_err());
    }
}
