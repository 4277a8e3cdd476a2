//! The delivery log's format: one 16-byte record per delivery (seq, length, digest) and the
//! start and torn markers, and opening a log for appending after a kill.
//!
//! A record is written with one `write(2)`; a start writes a start marker, and a record cut
//! short by a kill is cut off at the next start with a torn marker written in its place.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes of one delivery-log record.
pub const RECORD: usize = 16;
/// The seq of the marker record a side writes each time it starts.
pub const START_MARK: u64 = u64::MAX;
/// The seq of the marker record written where a torn record was cut off.
pub const TORN_MARK: u64 = u64::MAX - 1;

/// One log record for a delivery of `payload` with hrpc seq `seq`.
pub fn record(seq: u64, payload: &[u8]) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    r[12..].copy_from_slice(&digest(payload).to_le_bytes());
    r
}

/// FNV-1a (32 bits) of `bytes`: the log's fingerprint of a payload. Not crc32c: a message
/// ends with its own crc32c, and the crc32c of any such message is one constant.
pub fn digest(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub(super) fn marker(seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r
}

pub(super) fn parse_record(r: &[u8]) -> Option<(u64, u32, u32)> {
    let seq = u64::from_le_bytes(r.get(..8)?.try_into().ok()?);
    let len = u32::from_le_bytes(r.get(8..12)?.try_into().ok()?);
    let crc = u32::from_le_bytes(r.get(12..16)?.try_into().ok()?);
    Some((seq, len, crc))
}

/// Opens the log for appending: cuts off a torn tail (writing a torn marker), finds the
/// highest seq delivered so far, and writes a start marker.
pub(super) fn open_log(path: &Path) -> io::Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let whole = len - len % RECORD as u64;
    if whole != len {
        f.set_len(whole)?;
        f.write_all(&marker(TORN_MARK))?;
    }
    // The last delivery record, scanning back over markers a chunk at a time.
    let mut last = 0;
    let mut end = whole;
    let mut buf = vec![0u8; 4096 * RECORD];
    'scan: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = buf
            .get_mut(..(end - start) as usize)
            .ok_or_else(|| io::Error::other("log chunk"))?;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for r in chunk.chunks(RECORD).rev() {
            if let Some((seq, _, _)) = parse_record(r)
                && seq < TORN_MARK
            {
                last = seq;
                break 'scan;
            }
        }
        end = start;
    }
    f.write_all(&marker(START_MARK))?;
    Ok((f, last))
}
