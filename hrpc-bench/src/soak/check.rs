//! Checking a receiver's delivery log against what its peer sent: lost, duplicated (and
//! which duplicates the handler-crash rule explains), reordered and corrupt deliveries.

use super::log::{RECORD, START_MARK, TORN_MARK, digest, parse_record};
use crate::payload;

/// What [`check_log`] finds in one receiver's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// Distinct intact messages.
    pub delivered: u64,
    /// Sent (1..=sent) but absent.
    pub lost: u64,
    /// Intact repeats.
    pub duplicated: u64,
    /// Repeats that are not the first record after a restart repeating the last one before.
    pub unexplained_duplicates: u64,
    /// New messages below the highest seq seen.
    pub reordered: u64,
    /// Records that match no message sent (wrong digest, length, seq 0 or above `sent`), and
    /// torn records.
    pub corrupt: u64,
    /// Start markers (1 + restarts).
    pub starts: u64,
}

/// Checks the log of a receiver whose peer `sender` committed messages 1..=`sent` of `size`
/// bytes each (see the [`soak`](crate::soak) module docs for the rules).
pub fn check_log(log: &[u8], sender: u32, size: usize, sent: u64) -> LogCheck {
    let mut c = LogCheck::default();
    let mut seen = vec![0u64; (sent as usize / 64) + 1];
    let mut msg = vec![0u8; size];
    let mut max = 0u64;
    let mut last = 0u64; // seq of the last intact record
    let mut after_start = false;
    for r in log.chunks(RECORD) {
        let Some((seq, len, crc)) = parse_record(r) else {
            c.corrupt += 1; // a partial record at the end
            break;
        };
        match seq {
            START_MARK => {
                c.starts += 1;
                after_start = true;
                continue;
            }
            TORN_MARK => {
                c.corrupt += 1;
                continue;
            }
            _ => {}
        }
        let first_after_start = std::mem::replace(&mut after_start, false);
        let intact = seq >= 1 && seq <= sent && len as usize == size && {
            payload::fill(&mut msg, sender, seq);
            digest(&msg) == crc
        };
        if !intact {
            c.corrupt += 1;
            continue;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let Some(w) = seen.get_mut(word) else {
            c.corrupt += 1;
            continue;
        };
        if *w & bit != 0 {
            c.duplicated += 1;
            if !(first_after_start && seq == last) {
                c.unexplained_duplicates += 1;
            }
        } else {
            *w |= bit;
            c.delivered += 1;
            if seq < max {
                c.reordered += 1;
            }
            max = max.max(seq);
        }
        last = seq;
    }
    c.lost = sent.saturating_sub(c.delivered);
    c
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::soak::log::{marker, open_log, record};

    const SIZE: usize = 32;

    fn msg(sender: u32, seq: u64) -> Vec<u8> {
        let mut b = vec![0; SIZE];
        payload::fill(&mut b, sender, seq);
        b
    }

    /// A log from records: `Some(seq)` a delivery of message `seq` from node 2, `None` a start.
    fn log(entries: &[Option<u64>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            match e {
                Some(seq) => out.extend_from_slice(&record(*seq, &msg(2, *seq))),
                None => out.extend_from_slice(&marker(START_MARK)),
            }
        }
        out
    }

    #[test]
    fn a_clean_log_with_restarts_passes() {
        let l = log(&[None, Some(1), Some(2), None, Some(3), Some(4), None]);
        let c = check_log(&l, 2, SIZE, 4);
        assert_eq!(
            c,
            LogCheck {
                delivered: 4,
                starts: 3,
                ..LogCheck::default()
            }
        );
    }

    #[test]
    fn a_gap_is_lost_and_a_late_fill_is_reordered() {
        let c = check_log(&log(&[None, Some(1), Some(3)]), 2, SIZE, 3);
        assert_eq!((c.delivered, c.lost, c.reordered), (2, 1, 0));
        let c = check_log(&log(&[None, Some(1), Some(3), Some(2)]), 2, SIZE, 3);
        assert_eq!((c.delivered, c.lost, c.reordered), (3, 0, 1));
        // Messages never delivered at the end are lost too.
        let c = check_log(&log(&[None, Some(1)]), 2, SIZE, 5);
        assert_eq!(c.lost, 4);
    }

    #[test]
    fn only_a_repeat_right_after_a_restart_is_a_handler_crash_duplicate() {
        // The last message before the kill, delivered again first after the restart.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!(
            (c.delivered, c.duplicated, c.unexplained_duplicates),
            (3, 1, 0)
        );
        // A repeat without a restart.
        let c = check_log(
            &log(&[None, Some(1), Some(2), Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (1, 1));
        // A repeat after a restart of an older message than the last.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(1), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (1, 1));
        // Two repeats after one restart: the second is unexplained.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(2), Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (2, 1));
    }

    #[test]
    fn damaged_or_foreign_records_are_corrupt() {
        // Every intact message ends with its own crc32c; the digest still tells them apart.
        assert_ne!(digest(&msg(2, 1)), digest(&msg(2, 2)));
        assert_ne!(digest(&msg(2, 1)), digest(&msg(3, 1)));
        let mut l = log(&[None, Some(1), Some(2)]);
        // Flip a bit of the digest of message 2.
        let last = l.len() - 1;
        l[last] ^= 1;
        let c = check_log(&l, 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.lost), (1, 1, 1));
        // A message from another sender, one of the wrong size, one never sent, a damaged one,
        // a torn marker and a torn tail.
        let mut l = log(&[None, Some(1)]);
        l.extend_from_slice(&record(2, &msg(3, 2)));
        l.extend_from_slice(&record(2, &msg(2, 2)[..SIZE - 1]));
        l.extend_from_slice(&record(9, &msg(2, 9)));
        // A payload with one byte changed (its own trailing crc32c left as it was).
        let mut bad = msg(2, 2);
        bad[20] ^= 4;
        l.extend_from_slice(&record(2, &bad));
        l.extend_from_slice(&marker(TORN_MARK));
        l.extend_from_slice(&[0; 5]);
        let c = check_log(&l, 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.lost), (1, 6, 1));
    }

    #[test]
    fn the_log_reopens_after_its_last_delivery_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut f, last) = open_log(&path).unwrap();
        assert_eq!(last, 0);
        f.write_all(&record(1, &msg(2, 1))).unwrap();
        f.write_all(&record(2, &msg(2, 2))).unwrap();
        f.write_all(&[7; 3]).unwrap(); // torn
        drop(f);
        let (f, last) = open_log(&path).unwrap();
        drop(f);
        assert_eq!(last, 2);
        let (f, last) = open_log(&path).unwrap();
        drop(f);
        assert_eq!(last, 2, "markers are skipped");
        let c = check_log(&std::fs::read(&path).unwrap(), 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.starts), (2, 1, 3));
    }
}
