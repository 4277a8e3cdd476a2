//! Encode and decode of a datagram full of 100-byte messages at MTU 1472.
//!
//! `cargo bench -p hrpc-bench --bench wire` — criterion reports frames/s
//! (elements) and bytes/s for each.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hrpc_wire::{DEFAULT_MTU, DataFrame, Datagram, DatagramWriter, Frame, HeaderFields};

const HEADER: HeaderFields = HeaderFields {
    src: 2,
    dst: 1,
    src_epoch: 0x1234,
    dst_epoch: 0x5678,
    auth: false,
};

/// Fills `buf` with as many 100-byte DATA frames as fit; returns (len, frames).
fn fill(buf: &mut [u8], payload: &[u8], first_seq: u64) -> (usize, u64) {
    let mut w = DatagramWriter::new(buf, &HEADER).expect("mtu buffer");
    let mut seq = first_seq;
    while w
        .push_data(&DataFrame {
            flags: 0,
            seq,
            msg_len: payload.len() as u32,
            offset: 0,
            msg_crc: 0xdead_beef,
            payload,
        })
        .is_ok()
    {
        seq += 1;
    }
    let n = seq - first_seq;
    (w.finish(), n)
}

fn wire(c: &mut Criterion) {
    let payload = [0x5a_u8; 100];
    let mut buf = [0u8; DEFAULT_MTU];
    let (len, frames) = fill(&mut buf, &payload, 1);

    let mut g = c.benchmark_group("datagram_100B_mtu1472");
    g.throughput(Throughput::Elements(frames));
    g.bench_function("encode_frames", |b| {
        let mut out = [0u8; DEFAULT_MTU];
        let mut seq = 1;
        b.iter(|| {
            let (len, n) = fill(black_box(&mut out), black_box(&payload), seq);
            seq += n;
            black_box(len)
        })
    });
    g.bench_function("decode_frames", |b| {
        b.iter(|| {
            let d = Datagram::parse(black_box(&buf[..len])).expect("valid");
            let mut sum = 0u64;
            for f in d.frames() {
                if let Frame::Data(f) = f {
                    sum += f.seq + f.payload.len() as u64;
                }
            }
            black_box(sum)
        })
    });
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("decode_bytes", |b| {
        b.iter(|| black_box(Datagram::parse(black_box(&buf[..len])).map(|d| d.frame_count())))
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
