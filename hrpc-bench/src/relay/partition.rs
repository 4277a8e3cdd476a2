//! Partition windows: when the relay cuts the path in both directions, drawn from a seed so a
//! run can be repeated.

use std::ops::Range;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `count` partition windows within `span`, drawn from `seed`: the span is cut into `count`
/// equal slots and each slot holds one window, its length uniform in `length` (capped at the
/// slot) and its start uniform within what the slot leaves. The windows are sorted, disjoint
/// and inside `span`; the same arguments give the same windows.
pub fn partition_schedule(
    seed: u64,
    span: Duration,
    count: u32,
    length: Range<Duration>,
) -> Vec<Range<Duration>> {
    if count == 0 || span.is_zero() {
        return Vec::new();
    }
    // A generator of its own, so the schedule does not shift the per-datagram decisions.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7061_7274_6974_696f);
    let slot = span / count;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let lo = length.start.min(slot);
        let hi = length.end.min(slot).max(lo);
        let len = if hi > lo {
            Duration::from_nanos(rng.random_range(lo.as_nanos() as u64..=hi.as_nanos() as u64))
        } else {
            lo
        };
        let room = (slot - len).as_nanos() as u64;
        let offset = Duration::from_nanos(if room > 0 {
            rng.random_range(0..=room)
        } else {
            0
        });
        let start = slot * i + offset;
        if !len.is_zero() {
            out.push(start..start + len);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::relay::{Impairment, RelayConfig};

    /// A partition schedule is a pure function of its arguments: sorted, disjoint windows
    /// inside the span with lengths in range, one per slot; another seed moves them.
    #[test]
    fn partition_schedules_are_seeded_and_bounded() {
        let span = Duration::from_secs(30);
        let len = Duration::from_millis(50)..Duration::from_millis(400);
        let a = partition_schedule(5, span, 10, len.clone());
        assert_eq!(a, partition_schedule(5, span, 10, len.clone()));
        assert_ne!(a, partition_schedule(6, span, 10, len.clone()));
        assert_eq!(a.len(), 10);
        let slot = span / 10;
        for (i, w) in a.iter().enumerate() {
            let l = w.end - w.start;
            assert!(len.start <= l && l <= len.end, "{w:?}");
            assert!(
                w.start >= slot * i as u32 && w.end <= slot * (i as u32 + 1),
                "{w:?}"
            );
        }
        assert!(a.windows(2).all(|p| p[0].end <= p[1].start));
        // Windows longer than a slot are cut to the slot; no windows for no span or count.
        let tight = partition_schedule(1, Duration::from_secs(1), 4, len.start * 10..len.end * 10);
        assert!(
            tight
                .iter()
                .all(|w| w.end - w.start <= Duration::from_millis(250))
        );
        assert!(partition_schedule(1, Duration::ZERO, 4, len.clone()).is_empty());
        assert!(partition_schedule(1, span, 0, len).is_empty());
    }

    /// During a scheduled partition every datagram is dropped, whatever the other
    /// probabilities, and outside all windows none is (with zero loss).
    #[test]
    fn scheduled_partitions_cut_everything() {
        let start = Instant::now();
        let mut cfg = RelayConfig::new(11);
        cfg.duplicate = 0.5;
        cfg.partitions = partition_schedule(
            11,
            Duration::from_secs(10),
            5,
            Duration::from_millis(100)..Duration::from_millis(500),
        );
        let windows = cfg.partitions.clone();
        let mut imp = Impairment::new(&cfg, start);
        let (mut cut, mut open) = (0, 0);
        for ms in (0..10_000).step_by(7) {
            let at = Duration::from_millis(ms);
            let n = imp.fate(start + at, 100).copies().count();
            if windows.iter().any(|w| w.contains(&at)) {
                assert_eq!(n, 0, "at {at:?}");
                cut += 1;
            } else {
                assert!(n >= 1, "at {at:?}");
                open += 1;
            }
        }
        assert!(cut > 50 && open > 500, "{cut} {open}");
    }
}
