//! hrpc-store benchmarks: commit+free (Process mode), Sync-mode group commit, open+recovery of
//! 1M pending messages, and disk footprint (printed).
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hrpc_store::{Durability, Store, StoreConfig};

const PAYLOAD: [u8; 100] = [0x5a; 100];

fn commit_free(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), &StoreConfig::new(1)).expect("open");
    let p = store.producer();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("commit_free_100B_process", |b| {
        b.iter(|| {
            let mut r = p.reserve(2, PAYLOAD.len()).expect("reserve");
            r.payload_mut().copy_from_slice(&PAYLOAD);
            let seq = r.commit().expect("commit");
            store
                .release_outbound_through(2, black_box(seq))
                .expect("release");
        })
    });
    // How the node frees: one cumulative ack releases a batch (here 64).
    g.throughput(Throughput::Elements(64));
    g.bench_function("commit_64_free_cumulative_100B_process", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..64 {
                let mut r = p.reserve(2, PAYLOAD.len()).expect("reserve");
                r.payload_mut().copy_from_slice(&PAYLOAD);
                last = r.commit().expect("commit");
            }
            store
                .release_outbound_through(2, black_box(last))
                .expect("release");
        })
    });
    g.finish();
}

fn sync_group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        durability: Durability::Sync,
        ..StoreConfig::new(1)
    };
    let mut store = Store::open(dir.path(), &cfg).expect("open");
    let p = store.producer();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(256));
    g.sample_size(20);
    g.bench_function("sync_group_commit_256x100B", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..256 {
                let mut r = p.reserve(2, PAYLOAD.len()).expect("reserve");
                r.payload_mut().copy_from_slice(&PAYLOAD);
                last = r.commit().expect("commit");
            }
            store.sync().expect("sync");
            // The acks of this batch (freed at the next sync, like a real poll loop).
            store.release_outbound_through(2, last).expect("release");
        })
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), &StoreConfig::new(1)).expect("open");
        let p = store.producer();
        for i in 0..N {
            p.send((i % 16) as u32, &PAYLOAD).expect("send");
        }
        let r = store.inspect();
        println!(
            "store with {N} pending 100-byte messages: {} bytes on disk in {} files",
            r.disk_bytes,
            r.files.len()
        );
    }
    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("open_recover_1M_pending", |b| {
        b.iter(|| {
            let s = Store::open(dir.path(), &StoreConfig::new(1)).expect("open");
            assert_eq!(
                s.inspect()
                    .peers
                    .iter()
                    .map(|p| p.outbound_count as u64)
                    .sum::<u64>(),
                N
            );
            s
        })
    });
    g.finish();
}

fn footprint(_c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), &StoreConfig::new(1)).expect("open");
    println!(
        "footprint: empty store = {} bytes",
        store.inspect().disk_bytes
    );
    let p = store.producer();
    let t = Instant::now();
    for _ in 0..1_000_000 {
        let seq = p.send(2, &PAYLOAD).expect("send");
        store.release_outbound_through(2, seq).expect("release");
    }
    println!(
        "footprint: after 1M committed-and-freed 100-byte messages = {} bytes ({:.1} M msg/s incl. copy)",
        store.inspect().disk_bytes,
        1.0 / t.elapsed().as_secs_f64()
    );
    let seq = p.send(2, &vec![0x5a; 16 << 20]).expect("send");
    println!(
        "footprint: with one 16 MiB message pending = {} bytes",
        store.inspect().disk_bytes
    );
    store.release_outbound_through(2, seq).expect("release");
    store.maintain();
    println!(
        "footprint: once it is acknowledged and maintain() ran = {} bytes",
        store.inspect().disk_bytes
    );
}

criterion_group!(benches, commit_free, sync_group, recovery, footprint);
criterion_main!(benches);
