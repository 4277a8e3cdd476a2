//! Fuzz target: open a damaged store.
//!
//! A valid store (outbound and inbound messages of several size classes, cursors, an epoch) is
//! built once and closed. Each input is decoded into mutations of copies of its files — bit
//! flips, zeroed pages, garbage pages, truncations, 5 bytes each — and the copy is opened. The
//! open must never panic, index out of bounds or fault (SIGBUS); it returns a typed error or a
//! store whose every message is one that was committed, byte for byte. `hrpc-store/tests/corrupt.rs`
//! applies the same kinds of mutations as an ordinary proptest, so CI covers this without the
//! fuzzer.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hrpc_store::{Store, StoreConfig, StoreError};
use libfuzzer_sys::fuzz_target;

struct Template {
    _dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
    msgs: BTreeMap<(bool, u32, u64), Vec<u8>>,
}

fn cfg() -> StoreConfig {
    StoreConfig { max_peers: 8, ..StoreConfig::new(11) }
}

fn payload(peer: u32, seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (u64::from(peer) * 7 + seq * 3 + i as u64) as u8).collect()
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut msgs = BTreeMap::new();
        {
            let mut s = Store::open(dir.path(), &cfg()).expect("open template");
            for i in 0..40u64 {
                let peer = (i % 3) as u32 + 1;
                let len = [10usize, 100, 300, 1000, 5000][(i % 5) as usize];
                let p = payload(peer, i, len);
                let seq = s.producer().send(peer, &p).expect("send");
                msgs.insert((true, peer, seq), p);
            }
            s.release_outbound_through(1, 3).expect("release");
            msgs.retain(|k, _| !(k.0 && k.1 == 1 && k.2 <= 3));
            for seq in 1..=6u64 {
                let p = payload(9, seq, 300 * seq as usize);
                s.put_inbound(9, seq, &p).expect("inbound");
                msgs.insert((false, 9, seq), p);
            }
            s.consume_inbound(9, 1).expect("consume");
            msgs.remove(&(false, 9, 1));
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| {
                let e = e.expect("entry");
                (e.file_name().into_string().expect("utf8"), std::fs::read(e.path()).expect("read"))
            })
            .collect();
        files.sort();
        Template { _dir: dir, files, msgs }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let mut files = t.files.clone();
    let n = files.len();
    for m in data.chunks_exact(5) {
        let f = &mut files[m[1] as usize % n].1;
        let at = u32::from(u16::from_le_bytes([m[2], m[3]])) * 8 + u32::from(m[4] & 7);
        match m[0] % 8 {
            0..=4 if !f.is_empty() => {
                let o = at as usize % f.len();
                f[o] ^= 1 << (m[4] >> 5);
            }
            5 | 6 if !f.is_empty() => {
                let pages = f.len().div_ceil(4096);
                let s = (at as usize % pages) * 4096;
                let e = (s + 4096).min(f.len());
                let fill = if m[0] % 8 == 5 { 0 } else { m[4] };
                f[s..e].iter_mut().for_each(|b| *b = fill);
            }
            7 => {
                let l = at as usize % (f.len() + 1);
                f.truncate(l);
            }
            _ => {}
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    match Store::open(dir.path(), &cfg()) {
        Ok(s) => {
            for peer in s.peers() {
                for seq in s.outbound_seqs(peer) {
                    let got = s.outbound_message(peer, seq).expect("listed").payload();
                    assert!(t.msgs.get(&(true, peer, seq)).is_some_and(|p| p == got));
                }
                for seq in s.inbound_seqs(peer) {
                    let got = s.inbound_message(peer, seq).expect("listed").payload();
                    assert!(t.msgs.get(&(false, peer, seq)).is_some_and(|p| p == got));
                }
            }
            let _ = s.producer().send(1, b"after");
        }
        Err(
            StoreError::Corrupt { .. }
            | StoreError::NodeIdMismatch { .. }
            | StoreError::NoSpace
            | StoreError::Io(_),
        ) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
