//! The protocol core alone, no sockets: two cores move 100-byte messages
//! one way through in-memory datagrams (stores on /dev/shm when present).
//!
//! `cargo bench -p hrpc-bench --bench core` — throughput in messages/s.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hrpc_node::proto::{Core, CoreConfig, StaticResolver};
use hrpc_store::{Store, StoreConfig};

const BATCH: u64 = 4096;

struct Pair {
    a: Core,
    b: Core,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    buf: Vec<u8>,
    now: Instant,
    _dir: tempfile::TempDir,
}

fn pair(max_segments: usize) -> Pair {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let a_addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.2:2".parse().unwrap();
    let resolver = StaticResolver([(1, a_addr), (2, b_addr)].into_iter().collect());
    let mut cfg = CoreConfig::default();
    cfg.max_segments = max_segments;
    let now = Instant::now();
    let open = |id: u32| {
        let store = Store::open(&dir.path().join(id.to_string()), &StoreConfig::new(id)).unwrap();
        Core::new(store, cfg.clone(), Box::new(resolver.clone()), now).unwrap()
    };
    let mut p = Pair {
        a: open(1),
        b: open(2),
        a_addr,
        b_addr,
        buf: vec![0; cfg.mtu * max_segments],
        now,
        _dir: dir,
    };
    // Exchange epochs before measuring.
    p.a.touch(2, now);
    for _ in 0..10 {
        p.step(&mut 0);
    }
    p
}

impl Pair {
    /// One loop iteration of each side; counts deliveries at b.
    fn step(&mut self, delivered: &mut u64) {
        self.now += Duration::from_micros(10);
        let now = self.now;
        while let Some(t) = self.a.poll_transmit(now, &mut self.buf) {
            let seg = t.segment_size.unwrap_or(t.len);
            for d in self.buf[..t.len].chunks(seg) {
                self.b.handle_datagram(now, self.a_addr, d);
            }
        }
        self.b.sync().unwrap();
        *delivered += self
            .b
            .deliver(usize::MAX, &mut |d| {
                black_box(d.payload);
            })
            .unwrap() as u64;
        while let Some(t) = self.b.poll_transmit(now, &mut self.buf) {
            let seg = t.segment_size.unwrap_or(t.len);
            for d in self.buf[..t.len].chunks(seg) {
                self.a.handle_datagram(now, self.b_addr, d);
            }
        }
        if self.a.poll_timeout().is_some_and(|t| t <= now) {
            self.a.handle_timeout(now);
        }
    }
}

fn core(c: &mut Criterion) {
    let msg = [0x42u8; 100];
    let mut g = c.benchmark_group("core_pair_100B");
    g.throughput(Throughput::Elements(BATCH));
    for segs in [1usize, 16] {
        let mut p = pair(segs);
        let producer = p.a.producer();
        g.bench_function(format!("one_way_segments_{segs}"), |bch| {
            bch.iter(|| {
                for _ in 0..BATCH {
                    producer.send(2, &msg).unwrap();
                }
                let mut delivered = 0;
                let mut rounds = 0;
                while delivered < BATCH {
                    p.step(&mut delivered);
                    rounds += 1;
                    assert!(rounds < 100_000, "no progress");
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
