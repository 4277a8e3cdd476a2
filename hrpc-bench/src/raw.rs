//! `hrpc-bench raw-udp`: the ceiling. Plain UDP one way on loopback through the same socket
//! type hrpc's driver uses ([`UdpIo`]: GSO sends of up to 64 datagrams, `recvmmsg` with GRO),
//! with no store, no acknowledgements and no retransmission. A sender thread sends
//! `size`-byte datagrams for the given seconds, waiting for buffer space when the socket is
//! full; a receiver thread counts what arrives. What the kernel drops is simply not counted.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::driver::{UdpConfig, UdpIo, wait_fds};
use serde::{Deserialize, Serialize};

use crate::procs::LOOPBACK;

/// The result of `raw-udp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawResult {
    /// `size`-byte datagrams received per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) received per second.
    pub mb_per_sec: f64,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
}

/// Runs the sender and receiver threads for `secs` seconds.
pub fn run(size: usize, secs: f64) -> io::Result<RawResult> {
    if size == 0 || size > hrpc_node::driver::udp::MAX_UDP_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--size must be 1..=65507",
        ));
    }
    let cfg = UdpConfig::default();
    let mut rx = UdpIo::bind(LOOPBACK, &cfg)?;
    let mut tx = UdpIo::bind(LOOPBACK, &cfg)?;
    let dst = rx.local_addr();
    let per_send = (tx.caps().gso_segments.max(1))
        .min(hrpc_node::driver::udp::MAX_UDP_PAYLOAD / size)
        .max(1);
    let buf = vec![0x5au8; size * per_send];
    let duration = Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));

    let stop_rx = stop.clone();
    let receiver = std::thread::Builder::new()
        .name("raw-udp-rx".to_owned())
        .spawn(move || -> io::Result<(u64, u64)> {
            let (mut n, mut bytes) = (0u64, 0u64);
            while !stop_rx.load(Ordering::Acquire) {
                let got = rx.recv_batch(|_, d| bytes += d.len() as u64)?;
                n += got as u64;
                if got == 0 {
                    wait_fds(rx.fd(), false, None, Some(Duration::from_millis(10)))?;
                }
            }
            Ok((n, bytes))
        })?;

    let start = Instant::now();
    let end = start + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        match tx.send(dst, &buf, Some(size)) {
            Ok(taken) => sent += (taken / size) as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_fds(tx.fd(), true, None, Some(Duration::from_millis(10)))?;
            }
            Err(e) => return Err(e),
        }
    }
    let elapsed = start.elapsed();
    // Let the receiver empty its socket buffer, then stop it.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let (received, bytes) = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))??;
    let secs = elapsed.as_secs_f64();
    Ok(RawResult {
        msgs_per_sec: (received as f64 / secs).round(),
        mb_per_sec: (bytes as f64 / secs / 1e6 * 100.0).round() / 100.0,
        sent,
        received,
    })
}
