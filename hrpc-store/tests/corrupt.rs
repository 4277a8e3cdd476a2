//! Damaged files: a closed, valid store is mutated (bit flips, zeroed pages, garbage pages,
//! truncation) and opened. Opening never panics or faults; it either returns a typed error or a
//! store whose every message is one that was committed, byte for byte. The same mutation
//! harness drives `fuzz/fuzz_targets/store_open.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use hrpc_store::{Store, StoreConfig, StoreError};
use proptest::prelude::*;

fn cfg() -> StoreConfig {
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

struct Template {
    dir: tempfile::TempDir,
    out: BTreeMap<(u32, u64), Vec<u8>>,
    inb: BTreeMap<(u32, u64), Vec<u8>>,
    files: Vec<(String, Vec<u8>)>,
}

/// A valid store with outbound/inbound messages of several size classes, built once.
fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut out = BTreeMap::new();
        let mut inb = BTreeMap::new();
        {
            let mut s = Store::open(dir.path(), &cfg()).unwrap();
            for i in 0..60u64 {
                let peer = (i % 3) as u32 + 1;
                let len = [10usize, 100, 300, 1000, 5000][(i % 5) as usize];
                let seq = s.producer().send(peer, &payload(peer, i, len)).unwrap();
                out.insert((peer, seq), payload(peer, i, len));
            }
            s.release_outbound_through(1, 5).unwrap();
            out.retain(|k, _| !(k.0 == 1 && k.1 <= 5));
            for seq in 1..=10u64 {
                let p = payload(9, seq, 200 * seq as usize);
                s.put_inbound(9, seq, &p).unwrap();
                inb.insert((9, seq), p);
            }
            s.consume_inbound(9, 1).unwrap();
            inb.remove(&(9, 1));
            s.set_peer_epoch(2, 1234).unwrap();
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        Template {
            dir,
            out,
            inb,
            files,
        }
    })
}

/// One mutation, decoded from arbitrary bytes (shared shape with the fuzz target).
#[derive(Debug, Clone)]
enum Mutation {
    Flip { file: usize, offset: usize, bit: u8 },
    ZeroPage { file: usize, page: usize },
    GarbagePage { file: usize, page: usize, seed: u8 },
    Truncate { file: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(file, offset, bit)| Mutation::Flip { file, offset, bit }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(file, page)| Mutation::ZeroPage { file, page }),
        1 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(file, page, seed)| Mutation::GarbagePage { file, page, seed }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(file, len)| Mutation::Truncate { file, len }),
    ]
}

fn apply(files: &mut [(String, Vec<u8>)], m: &Mutation) {
    let n = files.len();
    match *m {
        Mutation::Flip { file, offset, bit } => {
            let f = &mut files[file % n].1;
            if !f.is_empty() {
                let o = offset % f.len();
                f[o] ^= 1 << (bit % 8);
            }
        }
        Mutation::ZeroPage { file, page } | Mutation::GarbagePage { file, page, .. } => {
            let f = &mut files[file % n].1;
            let pages = f.len().div_ceil(4096);
            if pages > 0 {
                let s = (page % pages) * 4096;
                let e = (s + 4096).min(f.len());
                let seed = if let Mutation::GarbagePage { seed, .. } = *m {
                    seed
                } else {
                    0
                };
                for (i, b) in f[s..e].iter_mut().enumerate() {
                    *b = if seed == 0 {
                        0
                    } else {
                        (i as u8).wrapping_mul(seed).wrapping_add(seed)
                    };
                }
            }
        }
        Mutation::Truncate { file, len } => {
            let f = &mut files[file % n].1;
            let l = len % (f.len() + 1);
            f.truncate(l);
        }
    }
}

/// Opens a mutated copy and checks the outcome.
fn check_mutated(muts: &[Mutation]) {
    let t = template();
    let _ = &t.dir;
    let mut files = t.files.clone();
    for m in muts {
        apply(&mut files, m);
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    check_open(dir.path(), &t.out, &t.inb);
}

fn check_open(
    dir: &Path,
    out: &BTreeMap<(u32, u64), Vec<u8>>,
    inb: &BTreeMap<(u32, u64), Vec<u8>>,
) {
    match Store::open(dir, &cfg()) {
        Ok(s) => {
            for peer in s.peers() {
                for seq in s.outbound_seqs(peer) {
                    let got = s.outbound_message(peer, seq).unwrap().payload();
                    assert!(
                        out.get(&(peer, seq)).is_some_and(|p| p == got),
                        "bad outbound {peer}/{seq}"
                    );
                }
                for seq in s.inbound_seqs(peer) {
                    let got = s.inbound_message(peer, seq).unwrap().payload();
                    assert!(
                        inb.get(&(peer, seq)).is_some_and(|p| p == got),
                        "bad inbound {peer}/{seq}"
                    );
                }
            }
            // Still usable.
            match s.producer().send(1, b"after") {
                Ok(_) | Err(StoreError::TooManyPeers { .. }) => {}
                Err(e) => panic!("send after recovery: {e}"),
            }
            drop(s);
            Store::open(dir, &cfg()).expect("second open after successful recovery");
        }
        Err(
            StoreError::Corrupt { .. }
            | StoreError::NodeIdMismatch { .. }
            | StoreError::NoSpace
            | StoreError::Io(_),
        ) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

/// The unmodified template opens with all messages intact (the baseline the mutations break).
#[test]
fn template_round_trips() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &t.files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let s = Store::open(dir.path(), &cfg()).unwrap();
    let n: usize = s.peers().iter().map(|&p| s.outbound_seqs(p).len()).sum();
    assert_eq!(n, t.out.len());
    assert_eq!(s.inbound_seqs(9).len(), t.inb.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any combination of bit flips, zeroed/garbage pages and truncations: open never panics,
    /// never faults, and returns either a typed error or only intact committed messages.
    #[test]
    fn mutated_store_opens_safely(muts in proptest::collection::vec(mutation(), 1..6)) {
        check_mutated(&muts);
    }
}
