//! Three cores all-to-all in the virtual-time cluster, through every fault its network
//! offers (duplicates, datagrams held back and released late, a rate-limited link with a
//! drop-tail queue, loss) and a crash and restart of one node on its store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::cluster::{Cluster, Verdict};

const PER_PAIR: u64 = 200;

/// Message `i` from `src` to `dst`: it names all three, so a mix-up shows.
fn body(src: u32, dst: u32, i: u64) -> Vec<u8> {
    let mut m = vec![(src * 31 + dst * 7 + i as u32) as u8; 16 + (i as usize * 37) % 3000];
    m[..4].copy_from_slice(&src.to_le_bytes());
    m[4..8].copy_from_slice(&dst.to_le_bytes());
    m[8..16].copy_from_slice(&i.to_le_bytes());
    m
}

/// Invariant: with every 5th datagram duplicated, every 7th held back for up to 10 rounds
/// (so reordered), every 11th lost, node 1's link to node 3 limited to 4 datagrams a round
/// with a queue of 16, and node 2 crashed and restarted on its store partway, every message
/// committed is delivered exactly once, in commit order per (sender, receiver), intact, with
/// consecutive seqs.
#[test]
fn all_to_all_through_every_fault_exactly_once_in_order() {
    let mut c = Cluster::new(1..=3);
    let mut n = 0u64;
    c.filter(move |_| {
        n += 1;
        match n {
            n if n.is_multiple_of(11) => Verdict::Drop,
            n if n.is_multiple_of(7) => Verdict::Hold,
            n if n.is_multiple_of(5) => Verdict::Duplicate,
            _ => Verdict::Pass,
        }
    });
    c.limit(1, 3, 4, 16);
    let mut next: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let total = (6 * PER_PAIR) as usize;
    let delivered = |c: &Cluster| (1..=3).map(|id| c.seen(id).got.len()).sum::<usize>();
    let rounds = c.run_until(
        |c| {
            for src in 1..=3u32 {
                if c.nodes[&src].core.is_none() {
                    continue;
                }
                for dst in (1..=3).filter(|&d| d != src) {
                    let i = next.entry((src, dst)).or_insert(0);
                    while *i < PER_PAIR
                        && c.core(src)
                            .producer()
                            .send(dst, &body(src, dst, *i))
                            .is_ok()
                    {
                        *i += 1;
                    }
                }
            }
            if c.rounds.is_multiple_of(10) {
                c.release_held();
            }
            if c.rounds == 40 {
                c.crash(2);
            }
            if c.rounds == 60 {
                c.open(2);
            }
            delivered(c) >= total
        },
        20_000,
    );
    assert!(
        rounds.is_some(),
        "{} of {total} delivered; dropped {}, held {}",
        delivered(&c),
        c.net.dropped,
        c.net.held.len()
    );
    assert!(
        c.net.dropped > 0 && c.net.sent > total as u64,
        "no faults hit"
    );
    assert!(rounds.unwrap() > 60, "done before node 2 came back");
    for dst in 1..=3u32 {
        let got = &c.seen(dst).got;
        for src in (1..=3).filter(|&s| s != dst) {
            let from: Vec<&(u32, u64, Vec<u8>)> = got.iter().filter(|g| g.0 == src).collect();
            let seqs: Vec<u64> = from.iter().map(|g| g.1).collect();
            assert_eq!(seqs, (1..=PER_PAIR).collect::<Vec<_>>(), "{src} -> {dst}");
            for (i, g) in from.iter().enumerate() {
                assert!(
                    g.2 == body(src, dst, i as u64),
                    "{src} -> {dst}: message {i}"
                );
            }
        }
    }
}
