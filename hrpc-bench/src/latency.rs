//! `hrpc-bench latency`: ping-pong round trips on loopback, hrpc and raw UDP in the same run.
//!
//! hrpc: two nodes in two threads of this process; the client sends a `size`-byte request,
//! the server's handler replies with a `size`-byte message, and the round trip ends when the
//! client's handler gets the reply. Raw UDP: blocking `send`/`recv` on two std sockets, the
//! echo thread sending each datagram back. The two take turns in [`BLOCKS`] blocks each, so
//! both see the same stretches of a shared machine (run one after the other, a noisy second
//! could land on either and swing their ratio), while each block stays a steady ping-pong of
//! one kind (turns of single round trips would keep the other side's CPU awake and measure
//! something else). Round trips go into an HDR histogram (µs); the first [`WARMUP`] of each
//! are not recorded. The loop is bounded by `count` and by [`LIMIT`].

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
/// Blocks of round trips each side runs, taking turns.
pub const BLOCKS: u64 = 10;
/// Longest the whole run may take.
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

/// The CPUs the two ends of every ping-pong run on: the measuring thread on the first, the
/// echo threads on the second (the first two this process may use; `None` with only one).
/// Left to the scheduler, a woken thread sometimes lands on its peer's CPU (a round trip of
/// a few µs, no wake-up of an idle CPU) and sometimes not (tens of µs on a VM): raw UDP read
/// 5 µs in one layout and 88 µs in another, which made the ratio a draw. Pinned, both
/// transports cross between the same two CPUs.
fn cpu_pair() -> Option<(usize, usize)> {
    use nix::sched::sched_getaffinity;
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut cpus = (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it where it was).
fn pin(cpu: Option<usize>) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// The hrpc side: a client node here, an echo node on its own thread.
struct HrpcPair {
    client: hrpc_node::driver::Node,
    request: Vec<u8>,
    stop: Arc<AtomicBool>,
    echo: Option<std::thread::JoinHandle<io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl HrpcPair {
    fn start(size: usize, echo_cpu: Option<usize>) -> io::Result<Self> {
        let size = size.max(1);
        let dir = tempfile::Builder::new().prefix("hrpc-latency-").tempdir()?;
        let mut server = NodeConfig::new(dir.path().join("server"), 1)
            .bind(LOOPBACK)
            .open()
            .map_err(io_err)?;
        let client = NodeConfig::new(dir.path().join("client"), 2)
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
                pin(echo_cpu);
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
        Ok(HrpcPair {
            client,
            request: vec![0x17u8; size],
            stop,
            echo: Some(echo),
            _dir: dir,
        })
    }

    fn finish(mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.close(Duration::from_millis(50));
        match self.echo.take() {
            Some(echo) => echo
                .join()
                .map_err(|_| io::Error::other("hrpc echo thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// The raw UDP side: blocking sockets, an echo thread.
struct RawPair {
    client: UdpSocket,
    request: Vec<u8>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
    echo: Option<std::thread::JoinHandle<()>>,
}

impl RawPair {
    fn start(size: usize, echo_cpu: Option<usize>) -> io::Result<Self> {
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
                pin(echo_cpu);
                let mut buf = vec![0u8; 65_536];
                while !stop_srv.load(Ordering::Acquire) {
                    if let Ok((n, from)) = server.recv_from(&mut buf) {
                        let _ = server.send_to(&buf[..n], from);
                    }
                }
            })?;
        Ok(RawPair {
            client,
            request: vec![0x17u8; size],
            buf: vec![0u8; 65_536],
            stop,
            echo: Some(echo),
        })
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros().max(1) as u64
}

/// One side's round trip, in µs.
trait RoundTrip {
    fn round_trip(&mut self) -> io::Result<u64>;
}

impl RoundTrip for HrpcPair {
    fn round_trip(&mut self) -> io::Result<u64> {
        let t0 = Instant::now();
        self.client.send(1, &self.request).map_err(io_err)?;
        let mut got = false;
        while !got && t0.elapsed() < RTT_TIMEOUT {
            let r = self.client.poll(&mut |_, _| got = true).map_err(io_err)?;
            if !got && !r.more && r.received == 0 {
                self.client
                    .wait(Some(Duration::from_millis(20)))
                    .map_err(io_err)?;
            }
        }
        if !got {
            return Err(timed_out("an hrpc reply did not come"));
        }
        Ok(micros(t0))
    }
}

impl RoundTrip for RawPair {
    fn round_trip(&mut self) -> io::Result<u64> {
        let t0 = Instant::now();
        self.client.send(&self.request)?;
        self.client.recv(&mut self.buf)?;
        Ok(micros(t0))
    }
}

/// `warmup` round trips of `side`, then `n` recorded in `hist`; an error past `end`.
fn record_block(
    side: &mut dyn RoundTrip,
    hist: &mut Histogram<u64>,
    warmup: u64,
    n: u64,
    end: Instant,
) -> io::Result<()> {
    for i in 0..warmup + n {
        if Instant::now() >= end {
            return Err(timed_out("latency run took too long"));
        }
        let us = side.round_trip()?;
        if i >= warmup {
            hist.record(us).map_err(io_err)?;
        }
    }
    Ok(())
}

/// `count` recorded round trips of each, in [`BLOCKS`] alternating blocks, measured from
/// one CPU against echo threads on another (the first two this process may use): (hrpc, raw UDP)
/// histograms in µs.
pub fn both(size: usize, count: u64) -> io::Result<(Histogram<u64>, Histogram<u64>)> {
    let cpus = cpu_pair();
    let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    pin(cpus.map(|c| c.0));
    let r = pinned_run(size, count, cpus.map(|c| c.1));
    if let Some(set) = before {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
    r
}

fn pinned_run(
    size: usize,
    count: u64,
    echo_cpu: Option<usize>,
) -> io::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut hrpc = HrpcPair::start(size, echo_cpu)?;
    let mut raw = match RawPair::start(size, echo_cpu) {
        Ok(r) => r,
        Err(e) => {
            let _ = hrpc.finish();
            return Err(e);
        }
    };
    let (mut h, mut r) = (histogram()?, histogram()?);
    let end = Instant::now() + LIMIT;
    let block = count.div_ceil(BLOCKS).max(1);
    let mut result = Ok(());
    let mut done = 0;
    while done < count && result.is_ok() {
        let n = block.min(count - done);
        let warmup = if done == 0 { WARMUP } else { 0 };
        // A block of each, hrpc first: each block is a steady ping-pong of one kind.
        result = record_block(&mut hrpc, &mut h, warmup, n, end)
            .and_then(|()| record_block(&mut raw, &mut r, warmup, n, end));
        done += n;
    }
    raw.finish();
    let closed = hrpc.finish();
    result.and(closed).map(|()| (h, r))
}

/// Both, in alternating blocks.
pub fn run(size: usize, count: u64) -> io::Result<LatencyResult> {
    let (h, r) = both(size, count)?;
    Ok(LatencyResult {
        hrpc_p50_us: h.value_at_quantile(0.5) as f64,
        hrpc_p99_us: h.value_at_quantile(0.99) as f64,
        raw_p50_us: r.value_at_quantile(0.5) as f64,
        raw_p99_us: r.value_at_quantile(0.99) as f64,
    })
}
