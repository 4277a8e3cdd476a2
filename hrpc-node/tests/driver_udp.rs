//! The UDP layer on loopback: GSO sends, GRO receives, the non-GSO fallback, sizes, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hrpc_node::driver::udp::MAX_UDP_PAYLOAD;
use hrpc_node::driver::{UdpConfig, UdpIo, wait_fds};

const DEADLINE: Duration = Duration::from_secs(5);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Receives until `want` datagrams arrived or the deadline passed; returns them in order.
fn recv_n(io: &mut UdpIo, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let n = io
            .recv_batch(|from, d| got.push((from, d.to_vec())))
            .unwrap();
        if n == 0 {
            wait_fds(io.fd(), false, None, Some(Duration::from_millis(50))).unwrap();
        }
    }
    got
}

/// Sends `contents` completely, retrying on a full socket buffer, within the deadline.
fn send_all(io: &mut UdpIo, dst: SocketAddr, contents: &[u8], seg: Option<usize>) {
    let deadline = Instant::now() + DEADLINE;
    let mut done = 0;
    while done < contents.len().max(1) && Instant::now() < deadline {
        match io.send(dst, &contents[done..], seg) {
            Ok(n) => {
                done += n;
                if contents.is_empty() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_fds(io.fd(), true, None, Some(Duration::from_millis(10))).unwrap();
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
    assert!(
        done >= contents.len(),
        "send did not finish before the deadline"
    );
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn run_segments(cfg: &UdpConfig) -> (UdpIo, UdpIo) {
    let mut a = UdpIo::bind(local(), cfg).unwrap();
    let mut b = UdpIo::bind(local(), cfg).unwrap();
    let seg = cfg.mtu;
    let segs = a.caps().max_transmit_segments.min(44);
    // All full segments but the last, which is shorter.
    let total = seg * (segs - 1) + 100;
    let data = pattern(total, 7);
    send_all(&mut a, b.local_addr(), &data, Some(seg));
    let got = recv_n(&mut b, segs);
    assert_eq!(got.len(), segs, "every segment arrives as its own datagram");
    for (i, (from, d)) in got.iter().enumerate() {
        assert_eq!(*from, a.local_addr());
        let want = &data[i * seg..((i + 1) * seg).min(total)];
        assert_eq!(d.as_slice(), want, "segment {i} intact and in order");
    }
    (a, b)
}

/// One segmented send arrives as separate datagrams, in order and intact; with GSO available it
/// is a single syscall, and the GSO+GRO path is actually in use on this kernel.
#[test]
fn gso_send_arrives_as_separate_datagrams() {
    let cfg = UdpConfig::default();
    let (a, b) = run_segments(&cfg);
    let caps = a.caps();
    assert!(caps.max_transmit_segments >= 1);
    assert!(caps.max_transmit_segments * cfg.mtu <= MAX_UDP_PAYLOAD);
    if caps.gso_segments > 1 {
        assert_eq!(
            a.stats().send_calls,
            1,
            "GSO: one sendmsg for the whole run"
        );
    }
    if b.caps().gro_segments > 1 {
        assert!(
            b.stats().recv_calls < b.stats().datagrams_received,
            "GRO: fewer receives than datagrams ({:?})",
            b.stats()
        );
    }
    eprintln!("caps: {caps:?}");
}

/// With GSO and GRO switched off the same run still arrives intact, through sendmmsg batches of
/// at most 64 datagrams (one syscall per batch, not per datagram).
#[test]
fn fallback_without_gso_gro_is_intact() {
    let cfg = UdpConfig {
        gso: false,
        gro: false,
        ..UdpConfig::default()
    };
    let (a, b) = run_segments(&cfg);
    assert_eq!(a.caps().gso_segments, 1);
    assert_eq!(b.caps().gro_segments, 1);
    let s = a.stats();
    assert!(s.send_calls <= s.datagrams_sent.div_ceil(64) + 1, "{s:?}");
    assert_eq!(b.stats().datagrams_received, s.datagrams_sent);
}

/// Edge sizes survive: empty datagrams and the largest UDP payload, with and without GRO.
#[test]
fn empty_and_max_size_datagrams() {
    for gro in [true, false] {
        let cfg = UdpConfig {
            mtu: MAX_UDP_PAYLOAD,
            gro,
            ..UdpConfig::default()
        };
        let mut a = UdpIo::bind(local(), &cfg).unwrap();
        let mut b = UdpIo::bind(local(), &cfg).unwrap();
        let big = pattern(MAX_UDP_PAYLOAD, 3);
        send_all(&mut a, b.local_addr(), &[], None);
        send_all(&mut a, b.local_addr(), &big, None);
        send_all(&mut a, b.local_addr(), b"x", None);
        let got = recv_n(&mut b, 3);
        let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
        assert_eq!(lens, vec![0, MAX_UDP_PAYLOAD, 1]);
        assert_eq!(got[1].1, big);
    }
}

/// A taken port is a clean `AddrInUse` error, and an MTU outside the datagram limits is
/// `InvalidInput`, never a panic.
#[test]
fn bind_errors_are_typed() {
    let a = UdpIo::bind(local(), &UdpConfig::default()).unwrap();
    let err = UdpIo::bind(a.local_addr(), &UdpConfig::default()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    for mtu in [0, 10, MAX_UDP_PAYLOAD + 1] {
        let cfg = UdpConfig {
            mtu,
            ..UdpConfig::default()
        };
        let err = UdpIo::bind(local(), &cfg).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

/// Socket buffers are raised: at least the kernel default cap (the force variants, when
/// allowed, get the full request).
#[test]
fn socket_buffers_are_raised() {
    let cfg = UdpConfig::default();
    let a = UdpIo::bind(local(), &cfg).unwrap();
    let caps = a.caps();
    if caps.buffers_forced {
        assert!(caps.recv_buffer >= cfg.recv_buffer, "{caps:?}");
        assert!(caps.send_buffer >= cfg.send_buffer, "{caps:?}");
    } else {
        assert!(caps.recv_buffer >= 200_000, "{caps:?}");
    }
}

/// Many datagrams from a burst are all received through the batch ring (several per
/// recvmmsg), none lost on loopback with the large buffers.
#[test]
fn burst_is_received_in_batches() {
    let cfg = UdpConfig {
        gso: false,
        gro: false,
        ..UdpConfig::default()
    };
    let mut a = UdpIo::bind(local(), &cfg).unwrap();
    let mut b = UdpIo::bind(local(), &cfg).unwrap();
    let n = 2000;
    let data = pattern(n * 100, 9);
    send_all(&mut a, b.local_addr(), &data, Some(100));
    let got = recv_n(&mut b, n);
    assert_eq!(got.len(), n);
    let joined: Vec<u8> = got.into_iter().flat_map(|(_, d)| d).collect();
    assert_eq!(joined, data);
    assert!(b.stats().recv_calls < n as u64 / 4, "{:?}", b.stats());
}
