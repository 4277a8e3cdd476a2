//! `hrpc-bench latency`: ping-pong round trips on loopback, hrpc and raw UDP in the same run.
//!
//! hrpc: two nodes in two threads of this process; the client sends a `size`-byte request,
//! the server's handler replies with a `size`-byte message, and the round trip ends when the
//! client's handler gets the reply. Raw UDP: blocking `send`/`recv` on two std sockets, the
//! echo thread sending each datagram back. Round trips go into an HDR histogram (µs); the
//! first [`WARMUP`] of each are not recorded. Every loop is bounded by `count` and by
//! [`LIMIT`].

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hrpc_node::driver::NodeConfig;
use serde::{Deserialize, Serialize};

use crate::procs::{LOOPBACK, io_err};

/// Round trips run before recording.
pub const WARMUP: u64 = 20;
/// Longest one side (hrpc or raw) may run.
pub const LIMIT: Duration = Duration::from_secs(60);
/// Longest one round trip may take before the run counts it as failed.
const RTT_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of `latency` (µs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyResult {
    /// hrpc round trip, median.
    pub hrpc_p50_us: f64,
    /// hrpc round trip, 99th percentile.
    pub hrpc_p99_us: f64,
    /// Raw UDP round trip, median.
    pub raw_p50_us: f64,
    /// Raw UDP round trip, 99th percentile.
    pub raw_p99_us: f64,
}

fn histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(io_err)
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros().max(1) as u64
}

/// hrpc round trips: `count` recorded ones.
pub fn hrpc(size: usize, count: u64) -> io::Result<Histogram<u64>> {
    let size = size.max(1);
    let tmp = tempfile::Builder::new().prefix("hrpc-latency-").tempdir()?;
    let mut server = NodeConfig::new(tmp.path().join("server"), 1)
        .bind(LOOPBACK)
        .open()
        .map_err(io_err)?;
    let mut client = NodeConfig::new(tmp.path().join("client"), 2)
        .bind(LOOPBACK)
        .peer(1, server.local_addr())
        .open()
        .map_err(io_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_srv = stop.clone();
    let reply = vec![0x42u8; size];
    let echo = std::thread::Builder::new()
        .name("latency-hrpc-server".to_owned())
        .spawn(move || -> io::Result<()> {
            while !stop_srv.load(Ordering::Acquire) {
                let r = server
                    .poll(&mut |s, d| {
                        let _ = s.send(d.peer, &reply);
                    })
                    .map_err(io_err)?;
                if !r.more && r.received == 0 && r.delivered == 0 {
                    server
                        .wait(Some(Duration::from_millis(20)))
                        .map_err(io_err)?;
                }
            }
            server.close(Duration::from_millis(50)).map_err(io_err)
        })?;

    let request = vec![0x17u8; size];
    let mut hist = histogram()?;
    let end = Instant::now() + LIMIT;
    let mut result = Ok(());
    for i in 0..count + WARMUP {
        if Instant::now() >= end {
            result = Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "hrpc latency run took too long",
            ));
            break;
        }
        let t0 = Instant::now();
        if let Err(e) = client.send(1, &request) {
            result = Err(io_err(e));
            break;
        }
        let mut got = false;
        while !got && t0.elapsed() < RTT_TIMEOUT {
            let r = client.poll(&mut |_, _| got = true).map_err(io_err)?;
            if !got && !r.more && r.received == 0 {
                client
                    .wait(Some(Duration::from_millis(20)))
                    .map_err(io_err)?;
            }
        }
        if !got {
            result = Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "an hrpc reply did not come",
            ));
            break;
        }
        if i >= WARMUP {
            hist.record(micros(t0)).map_err(io_err)?;
        }
    }
    stop.store(true, Ordering::Release);
    let _ = client.close(Duration::from_millis(50));
    echo.join()
        .map_err(|_| io::Error::other("hrpc echo thread panicked"))??;
    result.map(|()| hist)
}

/// Raw UDP round trips with blocking sockets: `count` recorded ones.
pub fn raw(size: usize, count: u64) -> io::Result<Histogram<u64>> {
    let size = size.clamp(1, 65_507);
    let server = UdpSocket::bind(LOOPBACK)?;
    let client = UdpSocket::bind(LOOPBACK)?;
    server.set_read_timeout(Some(Duration::from_millis(20)))?;
    client.set_read_timeout(Some(RTT_TIMEOUT))?;
    client.connect(server.local_addr()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_srv = stop.clone();
    let echo = std::thread::Builder::new()
        .name("latency-raw-server".to_owned())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop_srv.load(Ordering::Acquire) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..n], from);
                }
            }
        })?;
    let request = vec![0x17u8; size];
    let mut buf = vec![0u8; 65_536];
    let mut hist = histogram()?;
    let end = Instant::now() + LIMIT;
    let mut result = Ok(());
    for i in 0..count + WARMUP {
        if Instant::now() >= end {
            result = Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "raw latency run took too long",
            ));
            break;
        }
        let t0 = Instant::now();
        if let Err(e) = client.send(&request).and_then(|_| client.recv(&mut buf)) {
            result = Err(e);
            break;
        }
        if i >= WARMUP {
            hist.record(micros(t0)).map_err(io_err)?;
        }
    }
    stop.store(true, Ordering::Release);
    let _ = echo.join();
    result.map(|()| hist)
}

/// Both, hrpc first.
pub fn run(size: usize, count: u64) -> io::Result<LatencyResult> {
    let h = hrpc(size, count)?;
    let r = raw(size, count)?;
    Ok(LatencyResult {
        hrpc_p50_us: h.value_at_quantile(0.5) as f64,
        hrpc_p99_us: h.value_at_quantile(0.99) as f64,
        raw_p50_us: r.value_at_quantile(0.5) as f64,
        raw_p99_us: r.value_at_quantile(0.99) as f64,
    })
}
