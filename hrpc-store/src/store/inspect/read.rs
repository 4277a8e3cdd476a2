//! Reading a store's files for inspection: read-only opens that refuse anything but a
//! regular file, the lock probe, reads by offset that zero-fill past the end, and the walk
//! over a segment's slots.

use super::super::recovery::Candidate;
use super::super::report::OpenReport;
use super::super::scan::{check_segment_header, check_slot_header, check_slot_payload};
use super::super::{LOCK_FILE, MAX_SEGMENTS, SlotId};
use super::types::{LockState, SegmentInfo};
use crate::layout::{SEG_HDR, SLOT_HDR};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Opens `path` read-only, refusing anything but a regular file. `O_NONBLOCK`, so that a
/// FIFO (or device) planted under a store file's name cannot make the open wait forever.
pub(super) fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Probes the lock without taking it from anyone (see [`LockState`]).
pub(super) fn probe_lock(dir: &Path) -> LockState {
    let file = match open_regular(&dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LockState::NoLockFile,
        Err(e) => return LockState::Unknown(format!("open {LOCK_FILE}: {e}")),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            // Released at once; closing the file would release it too.
            let _ = file.unlock();
            LockState::Free
        }
        Err(fs::TryLockError::WouldBlock) => LockState::Held,
        Err(fs::TryLockError::Error(e)) => LockState::Unknown(format!("flock {LOCK_FILE}: {e}")),
    }
}

/// Reads `buf.len()` bytes at `off`, or as many as the file has: the rest of `buf` is zeroed
/// (as `open` with `recover_damaged` extends a cut file with zeros). Returns the bytes read.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(done)
}

/// Bytes read at a time from a segment of small slots.
const CHUNK: usize = 1 << 20;

/// Reads a segment's slots by offset, walking down from the last slot (the order `open`
/// scans them, so damage is listed in the same order). Slots of at most half a [`CHUNK`] are
/// read a chunk of whole slots at a time; larger ones header first, payload only if needed.
struct SlotReader<'a> {
    file: &'a File,
    slot_size: usize,
    per_chunk: u32,
    /// Slots `first..first + count` are in `buf`.
    first: u32,
    count: u32,
    buf: Vec<u8>,
    payload: Vec<u8>,
}

impl<'a> SlotReader<'a> {
    fn new(file: &'a File, slot_size: usize) -> Self {
        SlotReader {
            file,
            slot_size,
            per_chunk: u32::try_from(CHUNK / slot_size).unwrap_or(1).max(1),
            first: 0,
            count: 0,
            buf: Vec::new(),
            payload: Vec::new(),
        }
    }

    fn off(&self, idx: u32) -> u64 {
        SEG_HDR as u64 + u64::from(idx) * self.slot_size as u64
    }

    fn chunked(&self) -> bool {
        self.per_chunk > 1
    }

    /// The 64-byte header of slot `idx` (state word first).
    fn head(&mut self, idx: u32) -> io::Result<[u8; SLOT_HDR]> {
        let mut h = [0u8; SLOT_HDR];
        if !self.chunked() {
            read_full_at(self.file, &mut h, self.off(idx))?;
            return Ok(h);
        }
        if !(self.first <= idx && idx - self.first < self.count) {
            let first = (idx + 1).saturating_sub(self.per_chunk);
            let count = idx + 1 - first;
            self.buf.resize(count as usize * self.slot_size, 0);
            let off = self.off(first);
            read_full_at(self.file, &mut self.buf, off)?;
            (self.first, self.count) = (first, count);
        }
        let at = (idx - self.first) as usize * self.slot_size;
        h.copy_from_slice(&self.buf[at..at + SLOT_HDR]);
        Ok(h)
    }

    /// The first `len` payload bytes of slot `idx` (`len` ≤ the slot's capacity); after
    /// [`SlotReader::head`] of the same slot.
    fn payload(&mut self, idx: u32, len: usize) -> io::Result<&[u8]> {
        if self.chunked() && self.first <= idx && idx - self.first < self.count {
            let at = (idx - self.first) as usize * self.slot_size + SLOT_HDR;
            return Ok(&self.buf[at..at + len]);
        }
        self.payload.resize(len, 0);
        let off = self.off(idx) + SLOT_HDR as u64;
        read_full_at(self.file, &mut self.payload, off)?;
        Ok(&self.payload)
    }
}

/// Checks one segment file the way `open` does, filling `info`, adding the valid slots to
/// `cands` and what is wrong to `report`. Unlike `open`, a segment it cannot use is reported
/// and skipped, and a cut segment is read up to the cut (the rest reads as free slots).
pub(super) fn scan_segment(
    path: &Path,
    index: u32,
    epoch: u64,
    sync: bool,
    info: &mut SegmentInfo,
    cands: &mut Vec<Candidate>,
    report: &mut OpenReport,
) {
    if index as usize >= MAX_SEGMENTS {
        report.damage(path, 0, "segment index out of range");
        return;
    }
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) => {
            report.damage(path, 0, format!("cannot open: {e}"));
            return;
        }
    };
    let flen = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            report.damage(path, 0, format!("cannot stat: {e}"));
            return;
        }
    };
    info.bytes = flen;
    if flen < SEG_HDR as u64 {
        report.damage(path, 0, format!("truncated to {flen} bytes"));
        return;
    }
    let mut hb = [0u8; SEG_HDR];
    if let Err(e) = file.read_exact_at(&mut hb, 0) {
        report.damage(path, 0, format!("cannot read header: {e}"));
        return;
    }
    let h = match check_segment_header(index, &hb, epoch) {
        Ok(h) => h,
        Err(r) => {
            report.damage(path, 0, r);
            return;
        }
    };
    info.header_ok = true;
    info.class = h.class;
    info.slot_size = h.slot_size;
    info.slots = h.slots;
    info.expected_bytes = h.file_len();
    if flen < info.expected_bytes {
        // Files are created at full length: a shorter one was cut, and the slots past the
        // cut are gone.
        report.damage(
            path,
            flen,
            format!("cut short: {flen} of {} bytes", info.expected_bytes),
        );
    }
    let slot_size = h.slot_size as usize;
    let cap = slot_size - SLOT_HDR;
    let mut reader = SlotReader::new(&file, slot_size);
    for idx in (0..h.slots).rev() {
        let head = match reader.head(idx) {
            Ok(head) => head,
            Err(e) => {
                report.damage(path, reader.off(idx), format!("cannot read: {e}"));
                return;
            }
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[..8]);
        let state = u64::from_le_bytes(word);
        if state == 0 {
            info.free_slots += 1;
            continue;
        }
        let mut hdr = [0u8; SLOT_HDR - 8];
        hdr.copy_from_slice(&head[8..]);
        let slot = SlotId { seg: index, idx };
        let checked = check_slot_header(state, &hdr, cap).and_then(|h| {
            let payload = reader
                .payload(idx, h.len as usize)
                .map_err(|_| "payload cannot be read")?;
            check_slot_payload(&h, payload, slot)
        });
        match checked {
            Ok(c) => cands.push(c),
            Err(what) => {
                info.damaged_slots += 1;
                // As in `open`: in Sync mode a power loss can tear a published slot.
                if !sync {
                    report.damage(
                        path,
                        reader.off(idx),
                        format!("slot {idx}: published, but {what}"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_full_at_zero_fills_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = [9u8; 6];
        assert_eq!(read_full_at(&f, &mut buf, 1).unwrap(), 2);
        assert_eq!(&buf, b"bc\0\0\0\0");
    }
}
