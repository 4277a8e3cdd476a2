//! Damaged-store harness shared by the `store_open` fuzz target and
//! `tests/corrupt.rs`. Not part of the API.
//!
//! A valid store (outbound and inbound messages of several size classes,
//! cursors, a peer epoch) is built once and closed; its files are copied,
//! mutated (bit flips, zeroed pages, garbage pages, truncation) and opened.
//! [`check_open`] asserts the invariant: opening never panics or faults; damage
//! is never silent (a plain open that succeeds lost nothing, one that fails
//! changed nothing); an open with `recover_damaged` accounts for every lost
//! message; every message returned is one that was committed, byte for byte.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Store, StoreConfig, StoreError};

/// The configuration every template and damaged copy is opened with.
pub fn config() -> StoreConfig {
    StoreConfig {
        max_peers: 8,
        ..StoreConfig::new(11)
    }
}

fn payload(peer: u32, seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (u64::from(peer) * 7 + seq * 3 + i as u64) as u8)
        .collect()
}

/// A closed valid store: its files and what it holds.
#[derive(Debug, Clone)]
pub struct Template {
    /// File name and contents, sorted by name.
    pub files: Vec<(String, Vec<u8>)>,
    /// Pending outbound messages by (peer, seq).
    pub outbound: BTreeMap<(u32, u64), Vec<u8>>,
    /// Outbound messages committed and then released (acknowledged). Damage that erases the
    /// record of the release (a peer record and a freed slot's state word, say) can bring one
    /// back as pending: it was still committed, byte for byte, and the peer drops the repeat.
    pub released: BTreeMap<(u32, u64), Vec<u8>>,
    /// Persisted, unconsumed inbound messages by (peer, seq).
    pub inbound: BTreeMap<(u32, u64), Vec<u8>>,
    /// Next outbound seq per peer.
    pub next: BTreeMap<u32, u64>,
}

impl Template {
    /// Builds the template store in the empty directory `dir` and reads its files.
    pub fn build(dir: &Path) -> Result<Template, StoreError> {
        let mut outbound = BTreeMap::new();
        let mut released = BTreeMap::new();
        let mut inbound = BTreeMap::new();
        let mut next = BTreeMap::new();
        {
            let mut s = Store::open(dir, &config())?;
            for i in 0..60u64 {
                let peer = (i % 3) as u32 + 1;
                let len = [10usize, 100, 300, 1000, 5000][(i % 5) as usize];
                let seq = s.producer().send(peer, &payload(peer, i, len))?;
                outbound.insert((peer, seq), payload(peer, i, len));
                next.insert(peer, seq + 1);
            }
            s.release_outbound_through(1, 5)?;
            for seq in 1..=5 {
                if let Some(p) = outbound.remove(&(1, seq)) {
                    released.insert((1, seq), p);
                }
            }
            for seq in 1..=10u64 {
                let p = payload(9, seq, 200 * seq as usize);
                s.put_inbound(9, seq, &p)?;
                inbound.insert((9, seq), p);
            }
            s.consume_inbound(9, 1)?;
            inbound.remove(&(9, 1));
            s.set_peer_epoch(2, 1234)?;
        }
        let mut files = Vec::new();
        let read_dir = StoreError::io("read store directory", dir);
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let entry = entry.map_err(StoreError::io("read store directory", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).map_err(StoreError::io("read", dir))?;
            files.push((name, bytes));
        }
        files.sort();
        Ok(Template {
            files,
            outbound,
            released,
            inbound,
            next,
        })
    }

    /// Writes the template's files, damaged by `mutations` (see [`mutate`]), into `dir`.
    pub fn write_damaged(&self, dir: &Path, mutations: &[u8]) -> std::io::Result<()> {
        let mut files = self.files.clone();
        mutate(&mut files, mutations);
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }
}

/// Applies the mutations encoded in `bytes`, five bytes each: `[kind, file,
/// pos lo, pos hi, extra]` — kinds 0–4 flip a bit, 5 zeroes a 4 KiB page, 6
/// fills one with garbage, 7 truncates the file.
pub fn mutate(files: &mut [(String, Vec<u8>)], bytes: &[u8]) {
    let n = files.len();
    if n == 0 {
        return;
    }
    for m in bytes.chunks_exact(5) {
        let f = &mut files[m[1] as usize % n].1;
        let at = usize::from(u16::from_le_bytes([m[2], m[3]])) * 8 + usize::from(m[4] & 7);
        match m[0] % 8 {
            0..=4 if !f.is_empty() => {
                let o = at % f.len();
                f[o] ^= 1 << (m[4] >> 5);
            }
            5 | 6 if !f.is_empty() => {
                let pages = f.len().div_ceil(4096);
                let s = (at % pages) * 4096;
                let e = (s + 4096).min(f.len());
                if m[0] % 8 == 5 {
                    f[s..e].fill(0);
                } else {
                    let seed = m[4] | 1;
                    for (i, b) in f[s..e].iter_mut().enumerate() {
                        *b = (i as u8).wrapping_mul(seed).wrapping_add(seed);
                    }
                }
            }
            7 => {
                let l = at % (f.len() + 1);
                f.truncate(l);
            }
            _ => {}
        }
    }
}

/// The files of `dir` except the lock file, by name.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "LOCK"
                && let Ok(b) = std::fs::read(e.path())
            {
                files.insert(name, b);
            }
        }
    }
    files
}

/// A gap marker found: (peer, first, last).
type Marker = (u32, u64, u64);

/// Every message the store holds was committed (or persisted) as is; returns the outbound
/// (peer, seq) keys it holds as messages and the ranges it holds as gap markers.
fn check_contents(s: &Store, template: &Template, strict: bool) -> (Vec<(u32, u64)>, Vec<Marker>) {
    let mut held = Vec::new();
    let mut markers = Vec::new();
    for peer in s.peers() {
        for seq in s.outbound_seqs(peer) {
            let Some(m) = s.outbound_message(peer, seq) else {
                panic!("listed outbound {peer}/{seq} unreadable");
            };
            if let Some(last) = m.lost_through() {
                markers.push((peer, seq, last));
                continue;
            }
            let committed = template
                .outbound
                .get(&(peer, seq))
                .or_else(|| template.released.get(&(peer, seq)));
            assert!(
                committed.map(Vec::as_slice) == Some(m.payload()),
                "recovered outbound {peer}/{seq} was never committed as is"
            );
            held.push((peer, seq));
        }
        for seq in s.inbound_seqs(peer) {
            let got = s.inbound_message(peer, seq).map(|m| m.payload());
            assert!(
                got.is_some() && template.inbound.get(&(peer, seq)).map(Vec::as_slice) == got,
                "recovered inbound {peer}/{seq} was never persisted as is"
            );
        }
        if let Some(next) = template.next.get(&peer).filter(|_| strict) {
            let now = s.outbound_pending(peer).map_or(1, |p| p.1);
            assert!(
                now >= *next,
                "peer {peer}: next seq went back from {next} to {now}"
            );
        }
    }
    (held, markers)
}

/// Opens the (possibly damaged) store in `dir` and asserts the invariant:
///
/// - whatever the damage: no panic or fault; a refused open changes no file; every message
///   returned was committed, byte for byte; a recovered store is usable and opens again;
/// - `strict` (one damage, e.g. one flipped bit or one zeroed page — not several that could
///   together erase the redundancy, such as a peer record's newest copy *and* a slot): a plain
///   open either fails with a typed error, or succeeds with every pending outbound message
///   intact (a loss is never silent); an open with `recover_damaged` accounts for every pending
///   outbound message (held intact, or in a reported lost range that a gap marker now stands
///   for); seq numbers never go back.
pub fn check_open(dir: &Path, template: &Template, strict: bool) {
    let before = contents(dir);
    match Store::open(dir, &config()) {
        Ok(s) => {
            let (held, _) = check_contents(&s, template, strict);
            for k in template.outbound.keys().filter(|_| strict) {
                assert!(
                    held.contains(k),
                    "outbound {}/{} lost, and the open reported no damage",
                    k.0,
                    k.1
                );
            }
            return;
        }
        Err(StoreError::Damaged { problems, .. }) => {
            assert!(problems > 0);
            assert_eq!(before, contents(dir), "a refused open changed the files");
        }
        Err(
            StoreError::Corrupt { .. }
            | StoreError::NodeIdMismatch { .. }
            | StoreError::NoSpace
            | StoreError::Io { .. },
        ) => {
            assert_eq!(before, contents(dir), "a refused open changed the files");
            return;
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
    let recover = StoreConfig {
        recover_damaged: true,
        ..config()
    };
    match Store::open(dir, &recover) {
        Ok(s) => {
            let (held, markers) = check_contents(&s, template, strict);
            let report = s.open_report().clone();
            assert!(
                report.damage_count > 0,
                "damage refused before, none found now"
            );
            for &(peer, seq) in template.outbound.keys().filter(|_| strict) {
                let reported = report
                    .lost
                    .iter()
                    .any(|r| r.peer == peer && (r.first..=r.last).contains(&seq));
                let marked = markers
                    .iter()
                    .any(|&(p, f, l)| p == peer && (f..=l).contains(&seq));
                assert!(
                    held.contains(&(peer, seq)) || (reported && marked),
                    "outbound {peer}/{seq} neither held nor reported lost"
                );
            }
            // Still usable, and recovery left a store that opens again, plainly.
            match s.producer().send(1, b"after") {
                Ok(_) | Err(StoreError::TooManyPeers { .. }) => {}
                Err(e) => panic!("send after recovery: {e}"),
            }
            drop(s);
            if let Err(e) = Store::open(dir, &config()) {
                panic!("plain open after a successful recovery: {e}");
            }
        }
        Err(
            StoreError::Corrupt { .. }
            | StoreError::NodeIdMismatch { .. }
            | StoreError::NoSpace
            | StoreError::Io { .. },
        ) => {}
        Err(e) => panic!("unexpected error kind with recover_damaged: {e:?}"),
    }
}
