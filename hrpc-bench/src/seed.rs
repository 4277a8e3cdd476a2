//! `hrpc-bench server` / `hrpc-bench client`: the original C library's README benchmark on
//! hrpc nodes, run by hand in two terminals.
//!
//! The client sends `--size`-byte messages to the server as fast as the protocol lets it (on
//! backpressure it polls and, if nothing else is to be done, waits for the node), the server
//! counts and checks what it receives. Each prints once a second `N op/s, K kb/s`: messages
//! committed (client) or delivered (server) in that second, and their payload KiB. Both exit
//! with status 0 on SIGINT or SIGTERM, or after `--max-secs`. Only loopback addresses are
//! accepted.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hrpc_node::driver::NodeConfig;

use crate::pair::{Sending, wait_any};
use crate::payload::{self, Tally};
use crate::procs::{self, io_err};

/// Options shared by `server` and `client`.
#[derive(Debug, Clone)]
pub struct SeedOpts {
    /// Store directory.
    pub store: PathBuf,
    /// This node's id.
    pub node: u32,
    /// Bind address (server: a fixed port; client: 127.0.0.1 with an ephemeral port).
    pub bind: Option<SocketAddr>,
    /// Peers known in advance: the client's server.
    pub peers: Vec<(u32, SocketAddr)>,
    /// Message size (client).
    pub size: usize,
    /// Hard limit on the run.
    pub max_secs: u64,
}

/// Once-a-second `N op/s, K kb/s` line.
#[derive(Debug)]
struct Meter {
    since: Instant,
    ops: u64,
    bytes: u64,
}

impl Meter {
    fn new() -> Self {
        Meter {
            since: Instant::now(),
            ops: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, ops: u64, bytes: u64) {
        self.ops += ops;
        self.bytes += bytes;
    }

    fn tick(&mut self) {
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let ms = (elapsed.as_millis() as u64).max(1);
        println!(
            "{} op/s, {} kb/s",
            self.ops * 1000 / ms,
            self.bytes * 1000 / ms / 1024
        );
        let _ = io::stdout().flush();
        *self = Meter::new();
    }
}

/// The benchmark only ever talks to this machine: every address must be loopback.
fn check_loopback(opts: &SeedOpts) -> io::Result<()> {
    let addrs = opts.bind.iter().chain(opts.peers.iter().map(|(_, a)| a));
    match addrs.into_iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{a} is not a loopback address; the benchmark stays on 127.0.0.1"),
        )),
        None => Ok(()),
    }
}

/// `hrpc-bench server`: receives, checks and counts until a signal arrives.
pub fn server(opts: &SeedOpts) -> io::Result<()> {
    check_loopback(opts)?;
    let stop = procs::signal_flag()?;
    let hard = Instant::now() + Duration::from_secs(opts.max_secs);
    let mut cfg = NodeConfig::new(&opts.store, opts.node).peers(opts.peers.iter().copied());
    if let Some(b) = opts.bind {
        cfg = cfg.bind(b);
    }
    let mut node = cfg.open().map_err(io_err)?;
    eprintln!("server: node {} on {}", opts.node, node.local_addr());
    let mut meter = Meter::new();
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard {
        let report = node
            .poll(&mut |_, d| {
                tally.record(d.peer, d.payload);
                meter.add(1, d.payload.len() as u64);
            })
            .map_err(io_err)?;
        meter.tick();
        if !report.more && report.received == 0 && report.delivered == 0 {
            node.wait(Some(Duration::from_millis(100)))
                .map_err(io_err)?;
        }
    }
    eprintln!(
        "server: delivered {}, duplicated {}, reordered {}, corrupt {}",
        tally.delivered(),
        tally.duplicated(),
        tally.reordered(),
        tally.corrupt
    );
    node.close(Duration::from_millis(200)).map_err(io_err)
}

/// `hrpc-bench client`: sends to the first `--peer` as fast as the protocol allows until a
/// signal arrives.
pub fn client(opts: &SeedOpts) -> io::Result<()> {
    payload::check_size(opts.size)?;
    check_loopback(opts)?;
    let Some(&(to, _)) = opts.peers.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "client needs --peer ID=ADDR",
        ));
    };
    let stop = procs::signal_flag()?;
    let hard = Instant::now() + Duration::from_secs(opts.max_secs);
    let mut cfg = NodeConfig::new(&opts.store, opts.node).peers(opts.peers.iter().copied());
    if let Some(b) = opts.bind {
        cfg = cfg.bind(b);
    }
    let node = cfg.open().map_err(io_err)?;
    // A restarted client continues its numbering where the store left it.
    let sent = node.next_outbound_seq(to).saturating_sub(1);
    let mut nodes = [Sending { node, sent }];
    let mut meter = Meter::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard {
        let [s] = &mut nodes;
        let (n, _) = s.burst(to, opts.size, 256)?;
        meter.add(n as u64, (n * opts.size) as u64);
        let report = s.node.poll(&mut |_, _| {}).map_err(io_err)?;
        meter.tick();
        if n == 0 && !report.more && report.received == 0 {
            wait_any(&mut nodes, Duration::from_millis(100))?;
        }
    }
    let [s] = nodes;
    s.node.close(Duration::from_millis(200)).map_err(io_err)
}
