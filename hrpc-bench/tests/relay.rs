//! The relay over real loopback sockets, both directions, with a fixed seed: probability 0
//! forwards every datagram once and in order (and replies find their way back), drop
//! probability 1 forwards nothing, duplicate probability 1 forwards everything twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hrpc_bench::relay::{Relay, RelayConfig};

const N: u32 = 100;

/// A loopback socket with a short read timeout and a buffer that holds every datagram of a
/// test (replies are read only at the end).
fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(30)))
        .expect("timeout");
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(2 << 20))
        .expect("SO_RCVBUF");
    s
}

/// Sends N numbered datagrams client → relay → server, and each back server → relay →
/// client; returns what the server and the client received, in arrival order.
fn exchange(cfg: RelayConfig) -> (Vec<u32>, Vec<u32>) {
    let server = socket();
    let client = socket();
    let relay = Relay::start(cfg, server.local_addr().expect("addr")).expect("relay");
    let front = relay.front_addr();
    let mut at_server = Vec::new();
    let mut at_client = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..N {
        client.send_to(&i.to_be_bytes(), front).expect("send");
        // One at a time, so "in order" is the relay's doing, not the kernel's.
        if let Ok((4, from)) = server.recv_from(&mut buf) {
            at_server.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            server.send_to(&buf[..4], from).expect("reply");
        }
        assert!(Instant::now() < deadline);
    }
    // Collect stragglers (duplicates) on both sides.
    while let Ok((4, from)) = server.recv_from(&mut buf) {
        at_server.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        server.send_to(&buf[..4], from).expect("reply");
        assert!(Instant::now() < deadline);
    }
    while let Ok((4, _)) = client.recv_from(&mut buf) {
        at_client.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        assert!(Instant::now() < deadline);
    }
    let stats = relay.stop();
    assert_eq!(stats.send_failed, 0, "{stats:?}");
    (at_server, at_client)
}

#[test]
fn relay_forwards_in_order_without_impairment() {
    let (s, c) = exchange(RelayConfig::new(42));
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(s, all);
    assert_eq!(c, all);
}

#[test]
fn relay_drops_everything_at_probability_one() {
    let mut cfg = RelayConfig::new(42);
    cfg.drop = 1.0;
    let (s, c) = exchange(cfg);
    assert!(s.is_empty() && c.is_empty());
}

#[test]
fn relay_duplicates_everything_at_probability_one() {
    let mut cfg = RelayConfig::new(42);
    cfg.duplicate = 1.0;
    let (mut s, c) = exchange(cfg);
    s.sort_unstable();
    let twice: Vec<u32> = (0..N).flat_map(|i| [i, i]).collect();
    assert_eq!(s, twice);
    // Each of the 2N datagrams the server got was echoed once and duplicated again.
    assert_eq!(c.len() as u32, 4 * N);
}
