//! Several real nodes on loopback, every one sending to every other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::nodes::Mesh;

const NODES: u32 = 4;
const PER_PAIR: u32 = 300;

/// Invariant: with four nodes each sending `PER_PAIR` messages of mixed sizes
/// to each other node (all sockets on 127.0.0.1, bounded in time), every
/// message arrives exactly once, in order per sender, intact — so per-peer
/// state, address learning and batching to several destinations hold up.
#[test]
fn four_nodes_all_to_all() {
    let dir = tempfile::tempdir().unwrap();
    // Ports are known only once every node is bound: the mesh resolves through a
    // table filled after opening (the `get_addr` style of resolver).
    let mut mesh = Mesh::open(dir.path(), 1..=NODES, |c| c);

    let body = |src: u32, dst: u32, i: u32| -> Vec<u8> {
        let len = [8usize, 100, 1400, 3000][(i % 4) as usize];
        let mut m = vec![(src * 31 + dst * 7 + i) as u8; len];
        m[..4].copy_from_slice(&i.to_le_bytes());
        m
    };
    let mut next: HashMap<(u32, u32), u32> = HashMap::new();
    let total = (NODES * (NODES - 1) * PER_PAIR) as usize;
    let received = |m: &Mesh| m.got.values().map(Vec::len).sum::<usize>();
    let done = mesh.run_until(
        |m| {
            for (&src, n) in m.nodes.iter_mut() {
                for dst in (1..=NODES).filter(|&d| d != src) {
                    let i = next.entry((src, dst)).or_insert(0);
                    while *i < PER_PAIR {
                        match n.send(dst, &body(src, dst, *i)) {
                            Ok(_) => *i += 1,
                            Err(e) if e.is_backpressure() => break,
                            Err(e) => panic!("send: {e}"),
                        }
                    }
                }
            }
            received(m) >= total
        },
        Duration::ZERO,
        Duration::from_secs(60),
    );
    assert!(done, "only {} of {total} arrived", received(&mesh));
    let mut got: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for (&me, list) in &mesh.got {
        for (peer, _, payload) in list {
            let i = u32::from_le_bytes(payload[..4].try_into().unwrap());
            assert_eq!(payload, &body(*peer, me, i), "intact");
            got.entry((*peer, me)).or_default().push(i);
        }
    }
    for src in 1..=NODES {
        for dst in (1..=NODES).filter(|&d| d != src) {
            assert_eq!(
                got[&(src, dst)],
                (0..PER_PAIR).collect::<Vec<_>>(),
                "{src} -> {dst}"
            );
        }
    }
}
