//! Receive side of one peer's stream: what is persisted, what to acknowledge,
//! and messages being assembled from fragments.

use rustc_hash::FxHashMap;
use std::time::Instant;

use hrpc_store::InboundSlot;
use hrpc_wire::{MAX_SACK_RANGES, SackRange};
use rangemap::RangeInclusiveSet;

/// Which inbound seqs of one peer are persisted, and what is owed to it.
#[derive(Debug)]
pub(crate) struct RecvState {
    /// Every seq `<= cum` is persisted (delivered or waiting to be).
    pub(crate) cum: u64,
    /// Persisted seqs above `cum + 1`, past a gap, as ranges (a window with a gap every
    /// few datagrams holds a few ranges, not one entry per message).
    above: RangeInclusiveSet<u64>,
    /// The largest seq held: `cum`, or the end of the highest range in `above` (kept here
    /// so the checks made for every arriving message do not walk the tree).
    top: u64,
    /// The application consumed every seq `<= consumed`.
    pub(crate) consumed: u64,
    /// Every seq `<= handed` was handed to the application (`handed >= consumed`); those
    /// above `consumed` wait for [`Core::consume`](super::Core::consume). Not persisted: after
    /// a restart it starts at `consumed`, so what was handed and not consumed comes again.
    pub(crate) handed: u64,
    /// Messages being assembled, by seq.
    pub(crate) reassembly: FxHashMap<u64, Reassembly>,
    /// An acknowledgement should go out.
    pub(crate) ack_pending: bool,
    /// When the largest seq held was persisted: an ack's delay is measured from it, because
    /// the sender takes its RTT sample from the largest seq an ack names (also when an
    /// earlier ack naming it was lost).
    pub(crate) ack_delay_from: Option<Instant>,
    /// The window in the last ack sent.
    pub(crate) advertised_window: u32,
    /// The last few seqs persisted below the largest one held, past the gap (holes filled
    /// by retransmissions), newest at `fills_next - 1`: acks name their ranges.
    fills: [u64; RECENT_FILLS],
    fills_next: usize,
}

/// Filled holes an ack names besides the lowest range and the highest ones.
const RECENT_FILLS: usize = 8;

impl RecvState {
    /// The largest seq held (persisted or consumed).
    pub(crate) fn largest(&self) -> u64 {
        self.top
    }

    pub(crate) fn new(consumed: u64) -> Self {
        RecvState {
            cum: consumed,
            above: RangeInclusiveSet::new(),
            top: consumed,
            consumed,
            handed: consumed,
            reassembly: FxHashMap::default(),
            ack_pending: false,
            ack_delay_from: None,
            advertised_window: 0,
            fills: [0; RECENT_FILLS],
            fills_next: 0,
        }
    }

    /// Whether `seq` is already persisted.
    pub(crate) fn has(&self, seq: u64) -> bool {
        seq <= self.cum || (seq <= self.top && self.above.contains(&seq))
    }

    /// Records that every seq of `first..=last` is persisted (a gap marker
    /// stands for them). O(log ranges) whatever the length.
    pub(crate) fn insert_range(&mut self, first: u64, last: u64) {
        if last <= self.cum || last < first {
            return;
        }
        if first > self.cum + 1 {
            if last < self.top {
                self.fills[self.fills_next % RECENT_FILLS] = first;
                self.fills_next = self.fills_next.wrapping_add(1);
            }
            self.above.insert(first..=last);
            self.top = self.top.max(last);
            return;
        }
        self.cum = last;
        // What was held past the gap may now join on.
        let mut covered = None;
        for r in self.above.iter() {
            if *r.start() > self.cum + 1 {
                break;
            }
            covered = Some(*r.end());
        }
        if let Some(end) = covered {
            self.cum = self.cum.max(end);
        }
        if self
            .above
            .iter()
            .next()
            .is_some_and(|r| *r.start() <= self.cum)
        {
            self.above.remove(0..=self.cum);
        }
        self.top = self.top.max(self.cum);
    }

    /// The first seq held in `from..=to` past the gap, if any.
    pub(crate) fn next_held(&self, from: u64, to: u64) -> Option<u64> {
        if from > to {
            return None;
        }
        self.above
            .overlapping(&(from..=to))
            .next()
            .map(|r| (*r.start()).max(from))
    }

    /// The ranges held past the gap, ascending.
    pub(crate) fn held_past_gap(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.above.iter().map(|r| (*r.start(), *r.end()))
    }

    /// Nothing received, held or consumed yet: the stream has not started.
    pub(crate) fn is_fresh(&self) -> bool {
        self.cum == 0 && self.consumed == 0 && self.above.is_empty() && self.reassembly.is_empty()
    }

    /// A fresh stream starts after `through` (the sender holds nothing at or
    /// below it). Only for a fresh stream: nothing is held to be dropped.
    pub(crate) fn skip_through(&mut self, through: u64) {
        debug_assert!(self.is_fresh());
        self.cum = self.cum.max(through);
        self.top = self.top.max(self.cum);
        self.consumed = self.consumed.max(through);
        self.handed = self.handed.max(self.consumed);
    }

    /// Fills `out` with selective-ack ranges, ascending; returns how many.
    ///
    /// When there are more ranges than fit, the ack names the lowest one (its start is
    /// the first gap's end, which the cumulative ack waits on), the ranges of the last
    /// few holes filled below the largest seq held (a retransmission that arrived: its
    /// sender learns it need not send it again), and the highest others. The highest
    /// matter most: the sender dates its RTT sample and detects loss from the largest seq
    /// named, and a message never named stays in its flight window. Ranges in between were
    /// the highest, or just filled, in earlier acks, so the sender has most likely heard of
    /// them already.
    pub(crate) fn sack_ranges(&self, out: &mut [SackRange; MAX_SACK_RANGES]) -> usize {
        let range = |r: &std::ops::RangeInclusive<u64>| SackRange {
            first: *r.start(),
            last: *r.end(),
        };
        let Some(lowest) = self.above.iter().next().map(range) else {
            return 0;
        };
        out[0] = lowest;
        let mut n = 1;
        let named = |out: &[SackRange], first: u64| out.iter().any(|r| r.first == first);
        // Newest fill first; at most a quarter of the ack, so the highest ranges keep their
        // place.
        for back in 1..=RECENT_FILLS.min(self.fills_next) {
            let seq = self.fills[self.fills_next.wrapping_sub(back) % RECENT_FILLS];
            if let Some(r) = self.above.get(&seq).map(range)
                && r.first > lowest.last
                && !named(&out[..n], r.first)
            {
                out[n] = r;
                n += 1;
            }
        }
        // From the top down, stopping at the lowest range. The ranges named so far are the
        // lowest and the fills: only those can repeat one of these (each of which is new).
        let fills_end = n;
        for r in self.above.iter().rev() {
            if n == MAX_SACK_RANGES || *r.start() <= lowest.last {
                break;
            }
            if !named(&out[..fills_end], *r.start()) {
                out[n] = range(r);
                n += 1;
            }
        }
        out[..n].sort_unstable_by_key(|r| r.first);
        n
    }

    /// Messages persisted and not yet consumed, in order from `consumed + 1`.
    pub(crate) fn deliverable(&self) -> u64 {
        self.cum - self.consumed
    }
}

/// A fragmented message being written into its store slot.
#[derive(Debug)]
pub(crate) struct Reassembly {
    pub(crate) slot: InboundSlot,
    pub(crate) msg_len: u32,
    pub(crate) crc: u32,
    /// Bytes arrived since the sender was last told `contiguous()`.
    pub(crate) report_due: bool,
    /// Byte ranges written so far: sorted, disjoint, non-adjacent.
    covered: Vec<(u32, u32)>,
    covered_bytes: u64,
    pub(crate) last_progress: Instant,
}

impl Reassembly {
    pub(crate) fn new(slot: InboundSlot, msg_len: u32, crc: u32, now: Instant) -> Self {
        Reassembly {
            slot,
            msg_len,
            crc,
            report_due: false,
            covered: Vec::new(),
            covered_bytes: 0,
            last_progress: now,
        }
    }

    /// Records `[offset, offset + len)` as written; returns whether it added bytes.
    pub(crate) fn add(&mut self, offset: u32, len: u32, now: Instant) -> bool {
        let (start, end) = (offset, offset.saturating_add(len));
        if start >= end {
            return false;
        }
        // Ranges that touch [start, end) merge with it.
        let first = self.covered.partition_point(|&(_, e)| e < start);
        let last = self.covered.partition_point(|&(s, _)| s <= end);
        let (mut s, mut e) = (start, end);
        let mut removed = 0u64;
        for &(rs, re) in &self.covered[first..last] {
            s = s.min(rs);
            e = e.max(re);
            removed += u64::from(re - rs);
        }
        let added = u64::from(e - s) - removed;
        self.covered.splice(first..last, [(s, e)]);
        self.covered_bytes += added;
        if added > 0 {
            self.last_progress = now;
            self.report_due = true;
        }
        added > 0
    }

    /// Byte ranges `[start, end)` written past [`Reassembly::contiguous`].
    pub(crate) fn held(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let skip = usize::from(self.covered.first().is_some_and(|r| r.0 == 0));
        self.covered.iter().skip(skip).copied()
    }

    /// Every byte below this has arrived.
    pub(crate) fn contiguous(&self) -> u32 {
        match self.covered.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Whether every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.covered_bytes == u64::from(self.msg_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cum` advances over contiguous seqs (including ones that arrived early),
    /// and SACK ranges describe exactly the persisted seqs past the gap.
    #[test]
    fn cumulative_and_sack() {
        let mut r = RecvState::new(0);
        for s in [1, 2, 4, 5, 7, 10, 11, 12] {
            r.insert_range(s, s);
        }
        assert_eq!(r.cum, 2);
        let mut out = [SackRange { first: 0, last: 0 }; MAX_SACK_RANGES];
        let n = r.sack_ranges(&mut out);
        let got: Vec<_> = out[..n].iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(got, vec![(4, 5), (7, 7), (10, 12)]);
        r.insert_range(3, 3);
        assert_eq!(r.cum, 5);
        assert!(r.has(7) && !r.has(6) && !r.has(8));
        r.insert_range(6, 6);
        assert_eq!(r.cum, 7);
        r.insert_range(8, 9);
        assert_eq!(r.cum, 12);
        assert_eq!(r.held_past_gap().count(), 0);
        let mut fresh = RecvState::new(0);
        assert!(fresh.is_fresh());
        fresh.skip_through(70_000);
        assert_eq!((fresh.cum, fresh.consumed), (70_000, 70_000));
    }

    /// With more ranges than an ack holds, it names the lowest range and the highest
    /// others (so always the largest seq held), ascending and disjoint.
    #[test]
    fn overflowing_sacks_keep_the_lowest_and_the_highest() {
        let mut r = RecvState::new(0);
        // Ranges {3k+2, 3k+3} for k in 0..100: 100 ranges above cum = 0.
        for k in 0..100u64 {
            r.insert_range(3 * k + 2, 3 * k + 2);
            r.insert_range(3 * k + 3, 3 * k + 3);
        }
        let mut out = [SackRange { first: 0, last: 0 }; MAX_SACK_RANGES];
        let n = r.sack_ranges(&mut out);
        assert_eq!(n, MAX_SACK_RANGES);
        let got: Vec<_> = out[..n].iter().map(|r| (r.first, r.last)).collect();
        let mut want = vec![(2, 3)];
        want.extend((100 - (MAX_SACK_RANGES as u64 - 1)..100).map(|k| (3 * k + 2, 3 * k + 3)));
        assert_eq!(got, want);
        assert_eq!(got.last().map(|g| g.1), Some(r.largest()));
    }

    /// A message that fills a hole below the ranges an ack has room for (a retransmission,
    /// or a late copy) is named in the next acks all the same, with the lowest range and
    /// the highest: otherwise its sender never hears of it and sends it again and again.
    /// Fills older than the last few give their place back to the highest ranges.
    #[test]
    fn sacks_name_the_holes_just_filled() {
        let mut r = RecvState::new(0);
        for k in 0..100u64 {
            r.insert_range(3 * k + 2, 3 * k + 3);
        }
        let named = |r: &RecvState| {
            let mut out = [SackRange { first: 0, last: 0 }; MAX_SACK_RANGES];
            let n = r.sack_ranges(&mut out);
            let got: Vec<_> = out[..n].iter().map(|r| (r.first, r.last)).collect();
            assert!(got.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{got:?}");
            got
        };
        // Seq 154 fills the hole between 152..=153 and 155..=156.
        r.insert_range(154, 154);
        let got = named(&r);
        assert_eq!(got.len(), MAX_SACK_RANGES);
        assert!(got.contains(&(152, 156)), "{got:?}");
        assert_eq!(got.first(), Some(&(2, 3)));
        assert_eq!(got.last().map(|g| g.1), Some(r.largest()));
        // Twelve more fills, none touching another (each joins ranges k and k + 1): the
        // newest eight are named, the older ones (and 152..=156) give their place back to
        // the highest ranges.
        let fills: Vec<u64> = (10..=43u64).step_by(3).collect();
        for &k in &fills {
            r.insert_range(3 * k + 4, 3 * k + 4);
        }
        let got = named(&r);
        let (older, newest) = fills.split_at(fills.len() - 8);
        for &k in newest {
            assert!(got.contains(&(3 * k + 2, 3 * k + 6)), "fill {k}: {got:?}");
        }
        for &k in older {
            assert!(!got.contains(&(3 * k + 2, 3 * k + 6)), "fill {k}: {got:?}");
        }
        assert!(!got.contains(&(152, 156)), "{got:?}");
        assert_eq!(got.first(), Some(&(2, 3)));
        assert_eq!(got.last().map(|g| g.1), Some(r.largest()));
        assert!(got.contains(&(3 * 99 + 2, 3 * 99 + 3)));
    }
}
