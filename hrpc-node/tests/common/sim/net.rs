//! The simulated network of the deterministic simulation: the faults it applies (drawn from
//! the seed), datagrams in flight ordered by arrival time, and the messages nodes exchange
//! (payloads that name their sender, receiver and index, so a mix-up or corruption shows).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// Faults applied by the simulated network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    /// Maximum extra delay; random delays reorder datagrams.
    pub(crate) jitter: Duration,
    /// Extra drop probability for datagrams over 1200 bytes (a path MTU problem).
    pub(crate) big_drop: f64,
    /// Probability per step that some node crashes and restarts.
    pub(crate) crash: f64,
    /// When node 1 is cut off from the others, if ever: (start, end).
    pub(crate) partition: Option<(Duration, Duration)>,
    /// When datagrams from node 2 to node 1 (only that way) are lost, if ever.
    pub(crate) reverse_cut: Option<(Duration, Duration)>,
}

/// What a run exercises beyond the random faults.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scenario {
    /// Some messages of 100 KiB to 4 MiB, and a reverse-path outage.
    pub(crate) large: bool,
    /// Node 2 loses its store (it restarts with a new one) at a random moment.
    pub(crate) store_loss: bool,
}

impl Faults {
    pub(crate) fn random(rng: &mut StdRng) -> Self {
        let lossy = rng.random_bool(0.7);
        Faults {
            loss: if lossy {
                rng.random_range(0.0..0.2)
            } else {
                0.0
            },
            duplicate: if lossy {
                rng.random_range(0.0..0.1)
            } else {
                0.0
            },
            jitter: Duration::from_micros(rng.random_range(0..3000)),
            big_drop: if rng.random_bool(0.2) { 0.3 } else { 0.0 },
            crash: if rng.random_bool(0.5) { 0.002 } else { 0.0 },
            partition: rng.random_bool(0.2).then(|| {
                let start = Duration::from_micros(rng.random_range(0..20_000));
                (
                    start,
                    start + Duration::from_millis(rng.random_range(10..2000)),
                )
            }),
            reverse_cut: None,
        }
    }
}

#[derive(PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) at: Duration,
    pub(crate) order: u64,
    pub(crate) to: usize,
    pub(crate) from: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: earliest first.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Payload of message `index` from `src` to `dst`: a header that names it,
/// then filler derived from it, so corruption or mix-ups are caught.
pub(crate) fn payload(src: u32, dst: u32, index: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(16));
    p.extend_from_slice(&src.to_le_bytes());
    p.extend_from_slice(&dst.to_le_bytes());
    p.extend_from_slice(&index.to_le_bytes());
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(src) << 32 ^ u64::from(dst);
    while p.len() < len.max(16) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

pub(crate) fn message_len(rng: &mut StdRng, large: bool) -> usize {
    if large && rng.random_bool(0.08) {
        return rng.random_range(100_000..4 << 20);
    }
    match rng.random_range(0..100) {
        0..=69 => rng.random_range(16..200),
        70..=89 => rng.random_range(200..3000),
        _ => rng.random_range(3000..40_000),
    }
}
