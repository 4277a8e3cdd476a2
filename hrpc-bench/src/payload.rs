//! The benchmark's self-checking message: who sent it, its per-sender number and a checksum,
//! so a receiver can tell lost, duplicated, reordered and corrupt messages apart.
//!
//! ```text
//! offset  size  field
//!      0     4  sender: the sending node id, little-endian
//!      4     8  seq: the sender's own message number, from 1, little-endian
//!     12   n-16 filler: byte i is (seq + i) as u8
//!   n-4      4  crc32c of bytes 0..n-4, little-endian
//! ```
//!
//! [`MIN_SIZE`] (16 bytes) is the smallest message that carries all fields. The sequence number
//! is the benchmark's own, counted on successful sends, independent of hrpc's seq.

/// Smallest message size that holds sender, seq and checksum.
pub const MIN_SIZE: usize = 16;

/// Refuses a `--size` below [`MIN_SIZE`], which could not carry a checkable message.
pub fn check_size(size: usize) -> std::io::Result<()> {
    if size < MIN_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--size must be at least {MIN_SIZE}"),
        ));
    }
    Ok(())
}

/// Writes a message from `sender` numbered `seq` into `buf` (its whole length; at least
/// [`MIN_SIZE`] bytes, else it is filled with zeros and will not verify).
pub fn fill(buf: &mut [u8], sender: u32, seq: u64) {
    if buf.len() < MIN_SIZE {
        buf.fill(0);
        return;
    }
    let n = buf.len();
    let (head, rest) = buf.split_at_mut(12);
    head[..4].copy_from_slice(&sender.to_le_bytes());
    head[4..12].copy_from_slice(&seq.to_le_bytes());
    let filler_len = n - MIN_SIZE;
    let start = seq as u8;
    for (i, b) in rest[..filler_len].iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    let crc = crc32c::crc32c(&buf[..n - 4]);
    buf[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a message: `Some((sender, seq))` if its checksum and filler are right.
pub fn verify(buf: &[u8]) -> Option<(u32, u64)> {
    if buf.len() < MIN_SIZE {
        return None;
    }
    let n = buf.len();
    let (body, tail) = buf.split_at(n - 4);
    let crc = u32::from_le_bytes(tail.try_into().ok()?);
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let sender = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(body.get(4..12)?.try_into().ok()?);
    Some((sender, seq))
}

/// Per-sender account of what a receiver got: each message counts as exactly one of
/// delivered (new and intact), duplicated (intact, seen before) or corrupt (failed
/// [`verify`], or claims another sender than the transport says); delivered messages that
/// arrive after a higher number from the same sender also count as reordered.
#[derive(Debug, Default, Clone)]
pub struct SenderTally {
    seen: Vec<u64>,
    max_seq: u64,
    /// New, intact messages.
    pub delivered: u64,
    /// Intact messages already delivered before.
    pub duplicated: u64,
    /// New messages that arrived after a higher-numbered one.
    pub reordered: u64,
    /// Payload bytes of delivered messages.
    pub bytes: u64,
}

impl SenderTally {
    /// Records message `seq` (≥ 1) of `len` bytes; returns whether it was new.
    pub fn record(&mut self, seq: u64, len: usize) -> bool {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let Some(w) = self.seen.get_mut(word) else {
            return false;
        };
        if *w & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        *w |= bit;
        self.delivered += 1;
        self.bytes += len as u64;
        if seq < self.max_seq {
            self.reordered += 1;
        }
        self.max_seq = self.max_seq.max(seq);
        true
    }
}

/// A receiver's account over all senders.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Keyed by node id (a fast, non-cryptographic hash: one lookup per delivered message).
    senders: rustc_hash::FxHashMap<u32, SenderTally>,
    /// Messages that failed verification.
    pub corrupt: u64,
}

impl Tally {
    /// Checks and records one delivered message that the transport says came from `peer`.
    /// Returns whether it was new and intact.
    pub fn record(&mut self, peer: u32, payload: &[u8]) -> bool {
        match verify(payload) {
            Some((sender, seq)) if sender == peer && seq >= 1 => self
                .senders
                .entry(sender)
                .or_default()
                .record(seq, payload.len()),
            _ => {
                self.corrupt += 1;
                false
            }
        }
    }

    /// Sum of new, intact messages over all senders.
    pub fn delivered(&self) -> u64 {
        self.senders.values().map(|s| s.delivered).sum()
    }

    /// Sum of duplicates over all senders.
    pub fn duplicated(&self) -> u64 {
        self.senders.values().map(|s| s.duplicated).sum()
    }

    /// Sum of reordered messages over all senders.
    pub fn reordered(&self) -> u64 {
        self.senders.values().map(|s| s.reordered).sum()
    }

    /// Payload bytes of delivered messages.
    pub fn bytes(&self) -> u64 {
        self.senders.values().map(|s| s.bytes).sum()
    }

    /// Number of distinct senders heard from.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        for size in [16, 17, 100, 1000, 64_000] {
            let mut b = vec![0; size];
            fill(&mut b, 7, 42);
            assert_eq!(verify(&b), Some((7, 42)));
            b[size / 2] ^= 1;
            assert_eq!(verify(&b), None, "size {size}");
        }
        assert_eq!(verify(&[0; 15]), None);
    }

    #[test]
    fn tally_classifies() {
        let mut t = Tally::default();
        let msg = |seq| {
            let mut b = vec![0; 32];
            fill(&mut b, 2, seq);
            b
        };
        assert!(t.record(2, &msg(1)));
        assert!(t.record(2, &msg(3)));
        assert!(t.record(2, &msg(2))); // late: reordered
        assert!(!t.record(2, &msg(2))); // duplicate
        assert!(!t.record(3, &msg(4))); // wrong sender: corrupt
        assert_eq!(
            (t.delivered(), t.duplicated(), t.reordered(), t.corrupt),
            (3, 1, 1, 1)
        );
    }
}
