//! What the relay does to each datagram: the impairment settings ([`RelayConfig`]) and the
//! seeded decisions ([`Impairment`]) that turn them into a [`Fate`] — zero, one or two copies,
//! each maybe held back or with a byte flipped.
//!
//! The decisions are a pure function of the seed, the partition windows and the order and
//! lengths of the datagrams, so they can be tested without sockets.

use std::ops::Range;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the relay does to traffic. Probabilities are in `0.0..=1.0` and independent.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a forwarded datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a forwarded datagram is held back by up to [`RelayConfig::reorder_by`]
    /// so later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held at most (uniformly chosen up to this).
    pub reorder_by: Duration,
    /// Probability that a forwarded datagram is delayed by [`RelayConfig::delay_by`].
    pub delay: f64,
    /// Delay applied to delayed datagrams.
    pub delay_by: Duration,
    /// Probability that one byte of a forwarded datagram is flipped.
    pub corrupt: f64,
    /// Seed of the relay's random decisions.
    pub seed: u64,
    /// Windows (measured from the relay's start) during which every datagram is dropped.
    pub partitions: Vec<Range<Duration>>,
    /// The relay stops by itself this long after it started.
    pub lifetime: Duration,
}

impl RelayConfig {
    /// A relay that forwards everything unchanged, seeded with `seed`, living 60 s.
    pub fn new(seed: u64) -> Self {
        RelayConfig {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_by: Duration::from_millis(2),
            delay: 0.0,
            delay_by: Duration::from_millis(5),
            corrupt: 0.0,
            seed,
            partitions: Vec::new(),
            lifetime: Duration::from_secs(60),
        }
    }

    /// The `--loss P` relay of `hrpc-bench pair`: drop, duplicate and reorder each with
    /// probability `percent / 100`.
    pub fn lossy(percent: f64, seed: u64) -> Self {
        let p = (percent / 100.0).clamp(0.0, 1.0);
        RelayConfig {
            drop: p,
            duplicate: p,
            reorder: p,
            ..RelayConfig::new(seed)
        }
    }
}

/// One copy of a datagram to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// How long to hold it before sending (zero = at once).
    pub hold: Duration,
    /// A byte to flip: (index, xor mask).
    pub flip: Option<(usize, u8)>,
}

/// What happens to one datagram: zero, one or two copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fate {
    copies: [Option<Copy>; 2],
}

impl Fate {
    /// The copies to forward (none = dropped).
    pub fn copies(&self) -> impl Iterator<Item = Copy> + '_ {
        self.copies.iter().flatten().copied()
    }
}

/// The relay's decisions, from a seeded generator: the same seed and the same sequence of
/// datagram lengths give the same fates.
#[derive(Debug)]
pub struct Impairment {
    cfg: RelayConfig,
    rng: StdRng,
    start: Instant,
}

impl Impairment {
    /// Decisions per `cfg`, with partition windows measured from `start`.
    pub fn new(cfg: &RelayConfig, start: Instant) -> Self {
        Impairment {
            cfg: cfg.clone(),
            rng: StdRng::seed_from_u64(cfg.seed),
            start,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.rng.random_bool(p))
    }

    /// The fate of a datagram of `len` bytes arriving at `now`.
    pub fn fate(&mut self, now: Instant, len: usize) -> Fate {
        let since = now.saturating_duration_since(self.start);
        if self.cfg.partitions.iter().any(|w| w.contains(&since)) {
            return Fate::default();
        }
        if self.chance(self.cfg.drop) {
            return Fate::default();
        }
        let copies = if self.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        let mut fate = Fate::default();
        for slot in fate.copies.iter_mut().take(copies) {
            let mut hold = Duration::ZERO;
            if self.chance(self.cfg.reorder) {
                let max = self.cfg.reorder_by.as_micros().max(1) as u64;
                hold += Duration::from_micros(self.rng.random_range(1..=max));
            }
            if self.chance(self.cfg.delay) {
                hold += self.cfg.delay_by;
            }
            let flip = (len > 0 && self.chance(self.cfg.corrupt)).then(|| {
                (
                    self.rng.random_range(0..len),
                    self.rng.random_range(1..=255u8),
                )
            });
            *slot = Some(Copy { hold, flip });
        }
        fate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a fixed seed and any sequence of lengths: drop probability 1.0 drops every
    /// datagram, all-zero probabilities forward each exactly once without delay or damage
    /// (so in order), and duplicate probability 1.0 always gives two copies. The same seed
    /// gives the same fates.
    #[test]
    fn fates_follow_the_probabilities() {
        let now = Instant::now();
        let lens: Vec<usize> = (0..1000).map(|i| 1 + (i * 37) % 1500).collect();

        let mut cfg = RelayConfig::new(1);
        cfg.drop = 1.0;
        let mut imp = Impairment::new(&cfg, now);
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().count() == 0));

        let mut imp = Impairment::new(&RelayConfig::new(1), now);
        let plain = Copy {
            hold: Duration::ZERO,
            flip: None,
        };
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().eq([plain])));

        let mut cfg = RelayConfig::new(1);
        cfg.duplicate = 1.0;
        let mut imp = Impairment::new(&cfg, now);
        assert!(lens.iter().all(|&l| imp.fate(now, l).copies().count() == 2));

        let cfg = RelayConfig::lossy(30.0, 9);
        let a: Vec<Fate> = {
            let mut imp = Impairment::new(&cfg, now);
            lens.iter().map(|&l| imp.fate(now, l)).collect()
        };
        let mut imp = Impairment::new(&cfg, now);
        let b: Vec<Fate> = lens.iter().map(|&l| imp.fate(now, l)).collect();
        assert_eq!(a, b);
        let dropped = a.iter().filter(|f| f.copies().count() == 0).count();
        assert!(
            (200..400).contains(&dropped),
            "30% of 1000 dropped: {dropped}"
        );
    }

    /// Partition windows drop everything inside them and nothing outside.
    #[test]
    fn partitions_drop_inside_the_window() {
        let start = Instant::now();
        let mut cfg = RelayConfig::new(3);
        cfg.partitions = vec![Duration::from_secs(1)..Duration::from_secs(2)];
        let mut imp = Impairment::new(&cfg, start);
        assert_eq!(imp.fate(start, 10).copies().count(), 1);
        let inside = start + Duration::from_millis(1500);
        assert_eq!(imp.fate(inside, 10).copies().count(), 0);
        assert_eq!(
            imp.fate(start + Duration::from_secs(2), 10)
                .copies()
                .count(),
            1
        );
    }

    proptest::proptest! {
        /// For any seed and probabilities, a fate has at most two copies, never two unless
        /// duplication is possible, and flips only bytes inside the datagram.
        #[test]
        fn fates_are_well_formed(seed in 0u64..1000, drop in 0.0f64..=1.0, dup in 0.0f64..=1.0,
                                 corrupt in 0.0f64..=1.0, len in 1usize..2000) {
            let now = Instant::now();
            let mut cfg = RelayConfig::new(seed);
            cfg.drop = drop;
            cfg.duplicate = dup;
            cfg.corrupt = corrupt;
            let mut imp = Impairment::new(&cfg, now);
            for _ in 0..20 {
                let f = imp.fate(now, len);
                let n = f.copies().count();
                proptest::prop_assert!(n <= 2);
                proptest::prop_assert!(dup > 0.0 || n <= 1);
                for c in f.copies() {
                    if let Some((i, m)) = c.flip {
                        proptest::prop_assert!(i < len && m != 0);
                    }
                }
            }
        }
    }
}
