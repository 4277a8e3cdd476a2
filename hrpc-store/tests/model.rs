//! Model-based test: random sequences of store operations, crashes (drop = process death, since
//! `Store` does no work on drop) and reopens, checked against a reference model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{marker, marker_last, repr};

use std::collections::{BTreeMap, BTreeSet};

use hrpc_store::{Durability, OutboundOnReset, Store, StoreConfig, StoreError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send { peer: u32, len: usize },
    ReserveDrop { peer: u32, len: usize },
    Discard { peer: u32, pick: usize },
    ReleaseThrough { peer: u32, pick: usize },
    PutInbound { peer: u32, ahead: u64, len: usize },
    PartialInbound { peer: u32, ahead: u64 },
    Consume { peer: u32 },
    SkipInbound { peer: u32, ahead: u64 },
    SetEpoch { peer: u32, epoch: u64 },
    Reset { peer: u32, drop_out: bool },
    Sync,
    Maintain,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0u32..3;
    let len = prop_oneof![8 => 0usize..300, 1 => 300usize..5000];
    prop_oneof![
        10 => (peer.clone(), len.clone()).prop_map(|(peer, len)| Op::Send { peer, len }),
        1 => (peer.clone(), len.clone()).prop_map(|(peer, len)| Op::ReserveDrop { peer, len }),
        3 => (peer.clone(), any::<usize>()).prop_map(|(peer, pick)| Op::Discard { peer, pick }),
        3 => (peer.clone(), any::<usize>()).prop_map(|(peer, pick)| Op::ReleaseThrough { peer, pick }),
        5 => (peer.clone(), 1u64..4, len).prop_map(|(peer, ahead, len)| Op::PutInbound { peer, ahead, len }),
        1 => (peer.clone(), 1u64..4).prop_map(|(peer, ahead)| Op::PartialInbound { peer, ahead }),
        4 => peer.clone().prop_map(|peer| Op::Consume { peer }),
        1 => (peer.clone(), 0u64..4).prop_map(|(peer, ahead)| Op::SkipInbound { peer, ahead }),
        1 => (peer.clone(), 1u64..5).prop_map(|(peer, epoch)| Op::SetEpoch { peer, epoch }),
        1 => (peer.clone(), any::<bool>()).prop_map(|(peer, drop_out)| Op::Reset { peer, drop_out }),
        2 => Just(Op::Sync),
        1 => Just(Op::Maintain),
        3 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct PeerModel {
    next_out: u64,
    acked: u64,
    out: BTreeMap<u64, Vec<u8>>,
    /// Sync mode: selectively released since the last sync (may reappear after a crash).
    maybe_out: BTreeMap<u64, Vec<u8>>,
    consumed: u64,
    inbound: BTreeMap<u64, Vec<u8>>,
    epoch: Option<u64>,
}

fn payload(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn check(store: &Store, model: &mut BTreeMap<u32, PeerModel>, after_reopen: bool) {
    for (&peer, m) in model.iter_mut() {
        let seqs = store.outbound_seqs(peer);
        let mut expect: BTreeSet<u64> = m.out.keys().copied().collect();
        if after_reopen {
            // Resurrected selective releases (Sync mode, no sync since): accept, re-adopt.
            for s in &seqs {
                if let Some(p) = m.maybe_out.remove(s) {
                    m.out.insert(*s, p);
                    expect.insert(*s);
                }
            }
            m.maybe_out.clear();
        }
        assert_eq!(
            seqs,
            expect.iter().copied().collect::<Vec<_>>(),
            "outbound seqs of {peer}"
        );
        for (seq, p) in &m.out {
            let msg = store
                .outbound_message(peer, *seq)
                .expect("pending message readable");
            assert_eq!(repr(&msg), &p[..], "payload {peer}/{seq}");
        }
        let next = store.outbound_pending(peer).map_or(1, |p| p.1);
        assert_eq!(next, m.next_out.max(1), "next seq of {peer}");
        assert_eq!(
            store.inbound_consumed(peer),
            m.consumed,
            "consumed of {peer}"
        );
        assert_eq!(
            store.inbound_seqs(peer),
            m.inbound.keys().copied().collect::<Vec<_>>(),
            "inbound of {peer}"
        );
        for (seq, p) in &m.inbound {
            assert_eq!(
                repr(&store.inbound_message(peer, *seq).expect("inbound")),
                &p[..]
            );
        }
        assert_eq!(store.peer_epoch(peer), m.epoch);
    }
}

fn run(ops: Vec<Op>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        durability,
        capacity_bytes: 256 << 10,
        ..StoreConfig::new(9)
    };
    let mut store = Store::open(dir.path(), &cfg).unwrap();
    let mut model: BTreeMap<u32, PeerModel> = BTreeMap::new();
    let mut tag = 0u64;
    let mut clock = std::time::Instant::now();
    for op in ops {
        tag += 1;
        match op {
            Op::Send { peer, len } => {
                let p = payload(tag, len);
                match store.producer().send(peer, &p) {
                    Ok(seq) => {
                        let m = model.entry(peer).or_default();
                        assert_eq!(seq, m.next_out.max(1));
                        m.next_out = seq + 1;
                        m.out.insert(seq, p);
                    }
                    Err(StoreError::Full { .. }) => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            Op::ReserveDrop { peer, len } => match store.reserve(peer, len) {
                Ok(mut r) => {
                    r.payload_mut().fill(0xee);
                    model.entry(peer).or_default();
                }
                Err(StoreError::Full { .. }) => {}
                Err(e) => panic!("reserve: {e}"),
            },
            Op::Discard { peer, pick } => {
                let Some(m) = model.get_mut(&peer) else {
                    continue;
                };
                let Some(&seq) = m.out.keys().nth(pick % m.out.len().max(1)) else {
                    continue;
                };
                let range = match store.discard_outbound(peer, seq) {
                    Ok(r) => r,
                    Err(StoreError::Full { .. }) => continue,
                    Err(e) => panic!("discard: {e}"),
                };
                let first = *m.out.keys().next().unwrap();
                let last = m
                    .out
                    .range(..=seq)
                    .filter_map(|(_, v)| marker_last(v))
                    .fold(seq, u64::max);
                assert_eq!(range, Some(first..=last));
                m.out = m.out.split_off(&(seq + 1));
                m.out.insert(first, marker(last));
            }
            Op::ReleaseThrough { peer, pick } => {
                let Some(m) = model.get_mut(&peer) else {
                    continue;
                };
                if m.next_out <= 1 {
                    continue;
                }
                let seq = 1 + (pick as u64 % (m.next_out - 1));
                let n = store.release_outbound_through(peer, seq).unwrap();
                if seq > m.acked {
                    let mut keep = m.out.split_off(&(seq + 1));
                    // A gap marker goes only once the ack covers its whole range.
                    let partly: Vec<(u64, Vec<u8>)> = m
                        .out
                        .iter()
                        .filter(|(_, v)| marker_last(v).is_some_and(|l| l > seq))
                        .map(|(k, v)| (*k, v.clone()))
                        .collect();
                    assert_eq!(n, m.out.len() - partly.len());
                    keep.extend(partly);
                    m.out = keep;
                    m.maybe_out = m.maybe_out.split_off(&(seq + 1));
                    m.acked = seq;
                } else {
                    assert_eq!(n, 0);
                }
            }
            Op::PutInbound { peer, ahead, len } => {
                let m = model.entry(peer).or_default();
                let seq = m.consumed + ahead;
                let p = payload(tag, len);
                let r = store.put_inbound(peer, seq, &p);
                match m.inbound.entry(seq) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert!(matches!(r, Err(StoreError::BadSeq { .. })), "{r:?}");
                    }
                    std::collections::btree_map::Entry::Vacant(v) => match r {
                        Ok(()) => {
                            v.insert(p);
                        }
                        Err(StoreError::Full { .. }) => {}
                        Err(e) => panic!("put_inbound: {e}"),
                    },
                }
            }
            Op::PartialInbound { peer, ahead } => {
                let m = model.entry(peer).or_default();
                let seq = m.consumed + ahead;
                if m.inbound.contains_key(&seq) {
                    continue;
                }
                if let Ok(slot) = store.begin_inbound(peer, seq, 10, 1234, 0) {
                    store.write_inbound(&slot, 0, b"part").unwrap();
                    store.abort_inbound(slot);
                }
            }
            Op::Consume { peer } => {
                let m = model.entry(peer).or_default();
                let seq = m.consumed + 1;
                let r = store.consume_inbound(peer, seq);
                if m.inbound.remove(&seq).is_some() {
                    r.unwrap();
                    m.consumed = seq;
                } else {
                    assert!(matches!(r, Err(StoreError::BadSeq { .. })));
                }
            }
            Op::SkipInbound { peer, ahead } => {
                let m = model.entry(peer).or_default();
                let through = m.consumed + ahead;
                store.skip_inbound_through(peer, through).unwrap();
                m.consumed = m.consumed.max(through);
                m.inbound = m.inbound.split_off(&(through + 1));
                assert_eq!(store.peer_count(), store.peers().len());
            }
            Op::SetEpoch { peer, epoch } => {
                store.set_peer_epoch(peer, epoch).unwrap();
                model.entry(peer).or_default().epoch = Some(epoch);
            }
            Op::Reset { peer, drop_out } => {
                let how = if drop_out {
                    OutboundOnReset::Drop
                } else {
                    OutboundOnReset::Keep
                };
                let rep = store.reset_peer(peer, 1000 + tag, how).unwrap();
                let m = model.entry(peer).or_default();
                assert_eq!(rep.inbound_dropped, m.inbound.len());
                m.inbound.clear();
                m.consumed = 0;
                m.epoch = Some(1000 + tag);
                if drop_out {
                    assert_eq!(rep.outbound_dropped, m.out.len());
                    m.out.clear();
                    m.maybe_out.clear();
                    m.next_out = 1;
                    m.acked = 0;
                }
            }
            Op::Maintain => {
                // Past the idle delay: every segment empty since the last Maintain goes.
                clock += std::time::Duration::from_secs(10);
                store.maintain_at(clock);
            }
            Op::Sync => {
                store.sync().unwrap();
                for m in model.values_mut() {
                    m.maybe_out.clear();
                }
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path(), &cfg).unwrap();
                check(&store, &mut model, true);
                // Recovery is idempotent: a second reopen sees the same state.
                drop(store);
                store = Store::open(dir.path(), &cfg).unwrap();
                check(&store, &mut model, false);
            }
        }
        check(&store, &mut model, false);
    }
    drop(store);
    let store = Store::open(dir.path(), &cfg).unwrap();
    check(&store, &mut model, true);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// After every operation, and after every reopen (crash), the store equals the model's
    /// committed state: same pending outbound seqs and bytes, next seq, inbound messages,
    /// consumed cursor and peer epoch. (Process mode.)
    #[test]
    fn store_matches_model_process(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, Durability::Process);
    }

    /// Same in Sync mode, where releases free slots only at the next sync; a crash before it may
    /// bring back selectively released messages (harmless resends), nothing else.
    #[test]
    fn store_matches_model_sync(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, Durability::Sync);
    }
}
