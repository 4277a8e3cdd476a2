//! Recovery's decisions about the slots [`Store::open`](super::Store::open) found, made
//! before anything is written: which to keep, which to free, and which outbound ranges were
//! lost with damage (I7 tells a missing message from an acknowledged one).

use super::SlotId;
use super::report::{LostRange, OpenReport};
use crate::layout::{KIND_IN_LOST, Record, SUPER_LEN, is_outbound};
use std::path::Path;

pub(super) struct Candidate {
    /// Position in the candidate list (after sorting).
    pub(super) index: usize,
    pub(super) peer: u32,
    pub(super) kind: u8,
    pub(super) seq: u64,
    /// Last seq it stands for (`seq`, or a gap marker's end).
    pub(super) last: u64,
    pub(super) generation: u64,
    pub(super) inc: u32,
    pub(super) len: u32,
    pub(super) crc: u32,
    pub(super) slot: SlotId,
    /// Message flags (0 for markers and calls, as the header decoder ensures).
    pub(super) flags: u8,
    /// A reply: the inbound incarnation and seq of the request it consumed (0 = none).
    pub(super) link_inc: u32,
    pub(super) link: u64,
    /// A call slot: its deadline (ms since the Unix epoch); 0 otherwise.
    pub(super) deadline_ms: u64,
}

/// Consumption that replies recorded and the peer records may not have: for each peer, the
/// consumed cursor moved through every request answered by a reply recovery keeps (current
/// incarnations on both sides), as long as they follow the cursor without a hole — a reply
/// commit is the commit point of its request's consumption, and requests are consumed in
/// order. `record(peer)` gives the peer's current record. Returns `(peer, new cursor)` for
/// each peer whose cursor moves, in peer order.
fn consumed_by_replies<'a>(
    cands: impl Iterator<Item = &'a Candidate>,
    record: impl Fn(u32) -> Option<Record>,
) -> Vec<(u32, u64)> {
    let mut links: Vec<(u32, u64)> = cands
        .filter(|c| c.kind == crate::layout::KIND_OUT && c.link != 0)
        .filter(|c| record(c.peer).is_some_and(|r| c.inc == r.out_inc && c.link_inc == r.in_inc))
        .map(|c| (c.peer, c.link))
        .collect();
    links.sort_unstable();
    let mut moved = Vec::new();
    let mut at = 0;
    while at < links.len() {
        let peer = links[at].0;
        let n = links[at..].partition_point(|l| l.0 == peer);
        let start = record(peer).map_or(0, |r| r.consumed_in);
        let mut cursor = start;
        for &(_, link) in &links[at..at + n] {
            if link == cursor.saturating_add(1) {
                cursor = link;
            } else if link > cursor {
                break;
            }
        }
        if cursor > start {
            moved.push((peer, cursor));
        }
        at += n;
    }
    moved
}

/// Call slots found: per call id the one with the highest generation is kept (a second copy
/// is what damage could leave; the newest is the truth). Returns the indexes into `calls` to
/// keep and to free.
pub(super) fn keep_calls(calls: &mut [Candidate]) -> (Vec<usize>, Vec<usize>) {
    calls.sort_unstable_by_key(|c| (c.seq, std::cmp::Reverse(c.generation)));
    let (mut keep, mut free) = (Vec::new(), Vec::new());
    for (i, c) in calls.iter().enumerate() {
        if i > 0 && calls[i - 1].seq == c.seq {
            free.push(i);
        } else {
            keep.push(i);
        }
    }
    (keep, free)
}

/// Recovery's decisions about the slots found, made before anything is written.
#[derive(Debug, Default)]
pub(super) struct RecoveryPlan {
    /// Candidates (indexes) to keep, in (peer, direction, seq) order.
    pub(super) keep: Vec<usize>,
    /// Candidates to free: superseded, acknowledged or consumed, of an older session, or
    /// (Sync mode) committed after the last sync behind a hole.
    pub(super) free: Vec<usize>,
    /// Outbound ranges lost with the damage (gap markers to create).
    pub(super) lost: Vec<LostRange>,
    /// `(peer, cursor)`: consumed cursors that kept replies move ([`consumed_by_replies`]),
    /// for the caller to write into the peer records.
    pub(super) relinked: Vec<(u32, u64)>,
}

impl RecoveryPlan {
    /// Sorts the candidates by (peer, direction, seq, generation descending), numbers them, and
    /// decides about each peer's streams. `record(peer)` is the peer's current record; a peer
    /// without one has slots only through damage (Process mode) or a power loss between the
    /// two flushes (Sync mode), and its streams are judged against an empty record.
    /// `recorded` lists every peer that has a record: one whose outbound slots are all gone
    /// still owes the seqs from its acked cursor to its floor, so its stream is judged too.
    /// Outbound streams are judged first; the replies kept move the consumed cursors
    /// ([`RecoveryPlan::relinked`]) that the inbound streams are then judged against.
    pub(super) fn build(
        cands: &mut [Candidate],
        record: impl Fn(u32) -> Option<Record>,
        recorded: impl IntoIterator<Item = u32>,
        sync: bool,
        meta_path: &Path,
        report: &mut OpenReport,
    ) -> RecoveryPlan {
        // Streams: by (peer, direction, seq), highest generation first.
        cands.sort_unstable_by(|a, b| {
            (
                a.peer,
                is_outbound(a.kind),
                a.seq,
                std::cmp::Reverse(a.generation),
            )
                .cmp(&(
                    b.peer,
                    is_outbound(b.kind),
                    b.seq,
                    std::cmp::Reverse(b.generation),
                ))
        });
        for (i, c) in cands.iter_mut().enumerate() {
            c.index = i;
        }
        let mut plan = RecoveryPlan::default();
        // Each peer's slots of one direction: (start, end, peer, outbound).
        let mut groups = Vec::new();
        let mut at = 0;
        while at < cands.len() {
            let (peer, out) = (cands[at].peer, is_outbound(cands[at].kind));
            let n = cands[at..].partition_point(|c| c.peer == peer && is_outbound(c.kind) == out);
            groups.push((at, at + n, peer, out));
            at += n;
        }
        let record_or_empty = |peer: u32, report: &mut OpenReport| match record(peer) {
            Some(rec) => rec,
            None => {
                // Every slot's peer record is written before the slot is published; only
                // a power loss between the two flushes explains a slot without one.
                if !sync {
                    report.damage(
                        meta_path,
                        SUPER_LEN as u64,
                        format!("slots for peer {peer}, which has no record"),
                    );
                }
                Record {
                    peer,
                    next_out: 1,
                    ..Record::default()
                }
            }
        };
        // Outbound streams first: which replies are kept decides how far the inbound
        // streams were consumed (in Sync mode a reply committed after the last sync behind a
        // hole is dropped, and its request must then be handed and answered again).
        let mut walked: rustc_hash::FxHashSet<u32> = rustc_hash::FxHashSet::default();
        for &(start, end, peer, _) in groups.iter().filter(|g| g.3) {
            walked.insert(peer);
            let rec = record_or_empty(peer, report);
            plan.outbound(&cands[start..end], &rec, sync, meta_path, report);
        }
        // A peer whose every outbound slot was lost has no group above, yet its record still
        // says which seqs it owes: without this walk the loss would go unreported (and a plain
        // open would succeed) until the next message made the hole visible.
        for peer in recorded {
            if walked.contains(&peer) {
                continue;
            }
            if let Some(rec) = record(peer) {
                plan.outbound(&[], &rec, sync, meta_path, report);
            }
        }
        plan.relinked = consumed_by_replies(plan.keep.iter().map(|&i| &cands[i]), &record);
        for &(start, end, peer, _) in groups.iter().filter(|g| !g.3) {
            let mut rec = record_or_empty(peer, report);
            // `relinked` is in peer order.
            if let Ok(k) = plan.relinked.binary_search_by_key(&peer, |r| r.0) {
                rec.consumed_in = plan.relinked[k].1;
            }
            plan.inbound(&cands[start..end], &rec);
        }
        plan.keep.sort_unstable();
        // Reported in peer order whatever order the peers were judged in.
        plan.lost.sort_unstable_by_key(|r| (r.peer, r.first));
        plan
    }

    /// One peer's outbound slots, ascending by seq. An outbound stream is contiguous: the store
    /// holds every seq from `acked + 1` to the last committed one (messages or gap markers), and
    /// the recorded floor says how far it went at the last sync. A hole below the floor (or, in
    /// Process mode, anywhere) is damage: it becomes a gap marker. In Sync mode a hole at or
    /// above the floor is what a power loss leaves of commits made after the last sync (never
    /// transmitted): the rest of the stream is dropped and its seqs reused.
    pub(super) fn outbound(
        &mut self,
        group: &[Candidate],
        rec: &Record,
        sync: bool,
        meta_path: &Path,
        report: &mut OpenReport,
    ) {
        let peer = rec.peer;
        // Saturating: a record is only checksummed, its cursors may hold any value.
        let mut expected = rec.acked_out.saturating_add(1);
        let floor = rec.next_out.max(expected);
        let mut dropping = false;
        let mut prev: Option<u64> = None;
        let damaged = |report: &mut OpenReport, lost: &mut Vec<LostRange>, first, last| {
            report.damage(
                meta_path,
                SUPER_LEN as u64,
                format!("peer {peer}: outbound seqs {first}..={last} are missing"),
            );
            lost.push(LostRange { peer, first, last });
        };
        for c in group {
            if prev == Some(c.seq) || c.inc != rec.out_inc || c.last < expected || dropping {
                self.free.push(c.index);
                continue;
            }
            prev = Some(c.seq);
            if c.seq > expected {
                let gap_end = c.seq - 1;
                if sync {
                    let damaged_end = gap_end.min(floor - 1);
                    if expected <= damaged_end {
                        damaged(report, &mut self.lost, expected, damaged_end);
                    }
                    if gap_end >= floor {
                        dropping = true;
                        self.free.push(c.index);
                        continue;
                    }
                } else {
                    damaged(report, &mut self.lost, expected, gap_end);
                }
            }
            self.keep.push(c.index);
            expected = expected.max(c.last.saturating_add(1));
        }
        if expected < floor {
            damaged(report, &mut self.lost, expected, floor - 1);
        }
    }

    /// One peer's inbound slots: messages (and gap markers) past the consumed cursor are kept.
    pub(super) fn inbound(&mut self, group: &[Candidate], rec: &Record) {
        let mut covered = rec.consumed_in;
        let mut prev: Option<u64> = None;
        for c in group {
            if prev == Some(c.seq) || c.inc != rec.in_inc || c.seq <= covered {
                self.free.push(c.index);
                continue;
            }
            prev = Some(c.seq);
            self.keep.push(c.index);
            if c.kind == KIND_IN_LOST {
                covered = covered.max(c.last);
            }
        }
    }
}
