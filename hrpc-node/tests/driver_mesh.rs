//! Several real nodes on loopback, every one sending to every other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig};

const NODES: u32 = 4;
const PER_PAIR: u32 = 300;

/// Invariant: with four nodes each sending `PER_PAIR` messages of mixed sizes
/// to each other node (all sockets on 127.0.0.1, bounded in time), every
/// message arrives exactly once, in order per sender, intact — so per-peer
/// state, address learning and batching to several destinations hold up.
#[test]
fn four_nodes_all_to_all() {
    let dir = tempfile::tempdir().unwrap();
    // Ports are known only once every node is bound: resolve through a table
    // filled after opening (the `get_addr` style of resolver).
    let table: Arc<Mutex<HashMap<u32, SocketAddr>>> = Arc::default();
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|id| {
            let table = table.clone();
            NodeConfig::new(dir.path().join(id.to_string()), id)
                .bind("127.0.0.1:0".parse().unwrap())
                .resolver(move |peer| table.lock().unwrap().get(&peer).copied())
                .open()
                .unwrap()
        })
        .collect();
    table
        .lock()
        .unwrap()
        .extend(nodes.iter().map(|n| (n.node_id(), n.local_addr())));

    let body = |src: u32, dst: u32, i: u32| -> Vec<u8> {
        let len = [8usize, 100, 1400, 3000][(i % 4) as usize];
        let mut m = vec![(src * 31 + dst * 7 + i) as u8; len];
        m[..4].copy_from_slice(&i.to_le_bytes());
        m
    };
    let mut next: HashMap<(u32, u32), u32> = HashMap::new();
    let mut got: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = NODES * (NODES - 1) * PER_PAIR;
    let mut received = 0;
    while received < total {
        assert!(
            Instant::now() < deadline,
            "only {received} of {total} arrived"
        );
        for n in nodes.iter_mut() {
            let src = n.node_id();
            for dst in 1..=NODES {
                if dst == src {
                    continue;
                }
                let i = next.entry((src, dst)).or_insert(0);
                while *i < PER_PAIR {
                    match n.send(dst, &body(src, dst, *i)) {
                        Ok(_) => *i += 1,
                        Err(e) if e.is_backpressure() => break,
                        Err(e) => panic!("send: {e}"),
                    }
                }
            }
            let me = n.node_id();
            n.poll(&mut |_, d| {
                let i = u32::from_le_bytes(d.payload[..4].try_into().unwrap());
                assert_eq!(d.payload, body(d.peer, me, i).as_slice(), "intact");
                got.entry((d.peer, me)).or_default().push(i);
                received += 1;
            })
            .unwrap();
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
