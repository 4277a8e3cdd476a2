//! The owned send reservation ([`SendReservation`]): kept across polls and handler calls,
//! committed in order, dropped without a trace, counted toward the unacked limit, refused
//! after a close.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::nodes::pump;
use hrpc_node::driver::{Node, NodeConfig, SendError, SendReservation};

fn pair(dir: &std::path::Path) -> (Node, Node) {
    let server = NodeConfig::new(dir.join("server"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .open()
        .unwrap();
    let client = NodeConfig::new(dir.join("client"), 2)
        .peer(1, server.local_addr())
        .max_unacked_per_peer(4)
        .open()
        .unwrap();
    (server, client)
}

/// Polls both nodes until the server has `n` messages or 20 s pass.
fn drain(server: &mut Node, client: &mut Node, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut got = [Vec::new(), Vec::new()];
    pump(
        &mut [server, client],
        &mut got,
        Duration::from_millis(1),
        Duration::from_secs(20),
        |_, got| got[0].len() >= n,
    );
    let [at_server, _] = got;
    at_server.into_iter().map(|g| (g.1, g.2)).collect()
}

/// A reservation held in a struct across a poll is filled in place and committed later; a
/// dropped one sends nothing and gives its window place back; the peer sees the committed
/// messages in commit order with contiguous seqs.
#[test]
fn owned_reservation_outlives_the_call_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut client) = pair(dir.path());

    struct Held {
        pending: Option<SendReservation>,
    }
    let mut held = Held {
        pending: Some(client.reserve(1, 5).unwrap()),
    };
    // The node keeps working while the reservation is out.
    client.poll(&mut |_, _| {}).unwrap();
    let mut r = held.pending.take().unwrap();
    assert_eq!((r.peer(), r.len(), r.is_empty()), (1, 5, false));
    r.payload_mut().copy_from_slice(b"first");
    assert_eq!(client.commit(r).unwrap(), 1);

    // Four unacked allowed: three held reservations and one dropped count until dropped.
    let a = client.reserve(1, 1).unwrap();
    let b = client.reserve(1, 1).unwrap();
    let dropped = client.reserve(1, 1).unwrap();
    assert!(matches!(
        client.reserve(1, 1),
        Err(SendError::WindowFull { peer: 1, .. })
    ));
    drop(dropped);
    let mut c = client.reserve(1, 6).unwrap();
    // Committed out of reservation order: seqs follow commit order.
    c.payload_mut().copy_from_slice(b"second");
    assert_eq!(client.commit(c).unwrap(), 2);
    drop(a);
    drop(b);
    assert_eq!(client.next_outbound_seq(1), 3);

    let got = drain(&mut server, &mut client, 2);
    assert_eq!(
        got,
        vec![(1, b"first".to_vec()), (2, b"second".to_vec())],
        "exactly the committed messages, in order"
    );
}

/// A handler reserves through its reply handle, keeps the reservation past the handler, and
/// the poll thread commits it afterwards; a commit after close is refused.
#[test]
fn handler_reservation_is_committed_after_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut client) = pair(dir.path());
    client.send(1, b"ping").unwrap();
    let mut kept = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while kept.is_none() && Instant::now() < deadline {
        client.poll(&mut |_, _| {}).unwrap();
        server
            .poll(&mut |reply, d| {
                let mut r = reply.reserve(d.peer, 4).unwrap();
                r.payload_mut().copy_from_slice(b"pong");
                kept = Some(r);
            })
            .unwrap();
        server.wait(Some(Duration::from_millis(1))).unwrap();
    }
    let r = kept.expect("the server got the ping");
    assert_eq!(server.commit(r).unwrap(), 1);
    let got = drain(&mut client, &mut server, 1);
    assert_eq!(got, vec![(1, b"pong".to_vec())]);

    let late = client.reserve(1, 3).unwrap();
    client.close(Duration::from_millis(10)).unwrap();
    assert!(matches!(late.commit(), Err(SendError::Closed)));
}
