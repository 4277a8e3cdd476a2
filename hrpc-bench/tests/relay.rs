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

/// Sends `n` numbered datagrams each way between two sockets joined by a link relay (a to
/// `a_to_b`, b to `b_to_a`); returns what each side received.
fn link_round(
    a: &UdpSocket,
    b: &UdpSocket,
    a_to_b: std::net::SocketAddr,
    b_to_a: std::net::SocketAddr,
    base: u32,
    n: u32,
) -> (Vec<u32>, Vec<u32>) {
    let mut buf = [0u8; 64];
    for i in base..base + n {
        a.send_to(&i.to_be_bytes(), a_to_b).expect("send a");
        b.send_to(&i.to_be_bytes(), b_to_a).expect("send b");
    }
    let read = |s: &UdpSocket, buf: &mut [u8]| {
        let mut got = Vec::new();
        while let Ok((4, _)) = s.recv_from(buf) {
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
        got
    };
    let at_b = read(b, &mut buf);
    let at_a = read(a, &mut buf);
    (at_a, at_b)
}

/// A link relay joins two fixed endpoints: either may send first, each sees the other at
/// the relay's address for it, and a partition window cuts both directions, then the link
/// comes back.
#[test]
fn link_forwards_both_ways_and_partitions_cut_both() {
    let a = socket();
    let b = socket();
    let mut cfg = RelayConfig::new(42);
    cfg.partitions = vec![Duration::from_millis(400)..Duration::from_millis(1400)];
    let relay =
        Relay::link(cfg, a.local_addr().expect("a"), b.local_addr().expect("b")).expect("relay");
    let b_to_a = relay.front_addr();
    let a_to_b = relay.link_addr().expect("link address");
    let started = Instant::now();

    // Before the partition: a sends first, then b; everything arrives in order.
    let (at_a, at_b) = link_round(&a, &b, a_to_b, b_to_a, 0, N);
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(at_b, all);
    assert_eq!(at_a, all);
    let mut buf = [0u8; 8];
    a.send_to(b"x", a_to_b).expect("send");
    let (_, from) = b.recv_from(&mut buf).expect("recv at b");
    assert_eq!(from, b_to_a, "b sees a at the address it sends to");
    b.send_to(b"y", b_to_a).expect("send");
    let (_, from) = a.recv_from(&mut buf).expect("recv at a");
    assert_eq!(from, a_to_b, "a sees b at the address it sends to");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "too slow to test"
    );

    // Inside the partition: nothing either way.
    std::thread::sleep(Duration::from_millis(600).saturating_sub(started.elapsed()));
    let (at_a, at_b) = link_round(&a, &b, a_to_b, b_to_a, N, N);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "too slow to test"
    );
    assert!(at_a.is_empty() && at_b.is_empty(), "{at_a:?} {at_b:?}");

    // After it: the link is back.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let (at_a, at_b) = link_round(&a, &b, a_to_b, b_to_a, 2 * N, N);
    let later: Vec<u32> = (2 * N..3 * N).collect();
    assert_eq!(at_b, later);
    assert_eq!(at_a, later);
    let stats = relay.stop();
    assert!(stats.dropped >= u64::from(2 * N), "{stats:?}");
}
