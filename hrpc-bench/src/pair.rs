//! `hrpc-bench pair`: a receiving node and one or more sending nodes in two child processes
//! on loopback, every delivered message checked.
//!
//! The parent starts the receiver (`pair-server`, node 1), reads its address, optionally puts
//! a [`relay`](crate::relay) in front of it, and starts the sender process (`pair-client`,
//! nodes 2..=K+1, one thread looping over all of them). The sender sends for the given
//! seconds, then waits (at most [`DRAIN`]) until every message it got `Ok` for is
//! acknowledged and reports how many it sent. The parent passes that count to the receiver,
//! which keeps delivering until it has them all or [`DRAIN`] passes, and reports its
//! [`crate::payload::Tally`]. Children die with the parent (`PR_SET_PDEATHSIG`) and are
//! killed at a deadline.

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::CoreConfig;
use hrpc_store::Durability;
use serde::{Deserialize, Serialize};

use crate::payload::{self, Tally};
use crate::procs::{self, ChildProc, io_err};
use crate::relay::{Relay, RelayConfig};

/// Longest the sender waits for acknowledgements, and the receiver for deliveries, after the
/// send phase.
pub const DRAIN: Duration = Duration::from_secs(10);
/// Longest a child may take to start (opening a thousand stores takes a while).
const STARTUP: Duration = Duration::from_secs(60);
/// Exit status of `pair` (and `report`) when a run completed but was not clean: something
/// was lost, duplicated or corrupted, or left unacknowledged. (Usage errors exit 2, other
/// failures 1.)
pub const EXIT_UNCLEAN: u8 = 3;
/// Most sending nodes.
pub const MAX_PEERS: u32 = 1000;
/// The receiver's peer table: strangers (nodes it does not know in advance) may fill three
/// quarters of it, which must hold [`MAX_PEERS`].
const SERVER_PEER_TABLE: u32 = 2048;
/// Messages one of several sending nodes tries per turn before the loop moves on.
const BURST: usize = 256;
/// Messages a lone sending node commits between two polls: in Sync mode each poll is one
/// group commit, so this is the most one flush covers on the sending side.
const BURST_ALONE: usize = 4096;

/// Options of `hrpc-bench pair`.
#[derive(Debug, Clone)]
pub struct PairOpts {
    /// Message size in bytes (at least [`payload::MIN_SIZE`]).
    pub size: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// UDP MTU of both nodes.
    pub mtu: usize,
    /// Relay loss/duplication/reordering in percent; 0 = no relay.
    pub loss: f64,
    /// Open both nodes with [`Durability::Sync`].
    pub durable: bool,
    /// Sending nodes in the client process.
    pub peers: u32,
    /// Relay seed.
    pub seed: u64,
}

/// The result of one `pair` run; with `--json` it is the last line of stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PairResult {
    /// Messages delivered per second, from the first send to the last delivery.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) delivered per second, same interval.
    pub mb_per_sec: f64,
    /// Messages the senders got `Ok` for.
    pub sent: u64,
    /// Distinct intact messages delivered.
    pub delivered: u64,
    /// Sent but not delivered by the end of the drain period.
    pub lost: u64,
    /// Delivered more than once.
    pub duplicated: u64,
    /// Delivered after a higher-numbered message of the same sender.
    pub reordered: u64,
    /// Delivered damaged or attributed to the wrong sender.
    pub corrupt: u64,
    /// Larger of the two children's peak RSS, KiB.
    pub rss_max_kb: u64,
    /// Messages the senders transmitted again.
    pub retransmitted: u64,
    /// Retransmission timeouts that fired at the senders.
    pub timeouts: u64,
    /// Datagrams the senders sent.
    pub datagrams_sent: u64,
    /// Send syscalls the senders made.
    pub send_calls: u64,
    /// Whether the sender saw every message acknowledged before the drain ended (not part of
    /// the JSON; a run where it did not fails).
    #[serde(skip)]
    pub acked_all: bool,
}

impl PairResult {
    /// Every message sent was delivered once, in order, intact, and acknowledged.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.acked_all
    }
}

/// What the sender process reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientDone {
    /// Messages committed (send returned `Ok`).
    pub sent: u64,
    /// Whether every one of them was acknowledged before the drain ended.
    pub acked_all: bool,
    /// [`procs::mono_ns`] of the first send.
    pub start_ns: u64,
    /// Peak RSS in KiB.
    pub rss_kb: u64,
    /// Messages sent again (timeouts, fast retransmits, probes), all sending nodes.
    pub retransmitted: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    /// Datagrams the sending nodes sent, and the send syscalls that carried them.
    pub datagrams_sent: u64,
    /// Send syscalls (`sendmmsg`/GSO) of the sending nodes.
    pub send_calls: u64,
}

/// What the receiver process reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerDone {
    /// Distinct intact messages.
    pub delivered: u64,
    /// Duplicates.
    pub duplicated: u64,
    /// Reordered.
    pub reordered: u64,
    /// Corrupt.
    pub corrupt: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Distinct senders heard from.
    pub senders: u64,
    /// [`procs::mono_ns`] of the last new delivery.
    pub last_ns: u64,
    /// Peak RSS in KiB.
    pub rss_kb: u64,
}

/// Node `id` with its store in `dir`, in [`Durability::Sync`] if `durable`: the start of
/// every node the `pair` and `soak` children open.
pub(crate) fn node_config(dir: &Path, id: u32, durable: bool) -> NodeConfig {
    let cfg = NodeConfig::new(dir, id);
    if durable {
        cfg.durability(Durability::Sync)
    } else {
        cfg
    }
}

/// Runs `pair`: both children, the optional relay, and returns the checked result.
pub fn run(opts: &PairOpts) -> io::Result<PairResult> {
    payload::check_size(opts.size)?;
    if opts.peers == 0 || opts.peers > MAX_PEERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--peers must be 1..={MAX_PEERS}"),
        ));
    }
    let tmp = tempfile::Builder::new().prefix("hrpc-pair-").tempdir()?;
    let limit = STARTUP + Duration::from_secs_f64(opts.secs) + DRAIN * 2;
    let mut common = vec![
        "--mtu".to_owned(),
        opts.mtu.to_string(),
        "--max-secs".to_owned(),
        limit.as_secs().to_string(),
    ];
    if opts.durable {
        common.push("--durable".to_owned());
    }
    let mut server_args = vec![
        "pair-server".to_owned(),
        "--store".to_owned(),
        tmp.path().join("server").display().to_string(),
    ];
    server_args.extend(common.iter().cloned());
    let mut server = ChildProc::spawn("pair-server", &server_args)?;
    let addr: SocketAddr = server
        .expect_line("READY", Instant::now() + STARTUP)?
        .trim()
        .parse()
        .map_err(io_err)?;

    let relay = if opts.loss > 0.0 {
        let mut cfg = RelayConfig::lossy(opts.loss, opts.seed);
        cfg.lifetime = limit;
        Some(Relay::start(cfg, addr)?)
    } else {
        None
    };
    let target = relay.as_ref().map_or(addr, Relay::front_addr);

    let mut client_args = vec![
        "pair-client".to_owned(),
        "--store".to_owned(),
        tmp.path().join("client").display().to_string(),
        "--server".to_owned(),
        target.to_string(),
        "--peers".to_owned(),
        opts.peers.to_string(),
        "--size".to_owned(),
        opts.size.to_string(),
        "--secs".to_owned(),
        opts.secs.to_string(),
    ];
    client_args.extend(common);
    let mut client = ChildProc::spawn("pair-client", &client_args)?;
    let client_done: ClientDone =
        serde_json::from_str(&client.expect_line("DONE", Instant::now() + limit)?)
            .map_err(io_err)?;
    server.send_line(&format!("EXPECT {}", client_done.sent))?;
    let server_done: ServerDone =
        serde_json::from_str(&server.expect_line("DONE", Instant::now() + DRAIN + STARTUP)?)
            .map_err(io_err)?;
    let client_ok = client.finish(Duration::from_secs(5));
    let server_ok = server.finish(Duration::from_secs(5));
    let relay_stats = relay.map(Relay::stop);
    if !client_ok || !server_ok {
        eprintln!(
            "pair: a child did not exit cleanly (client ok {client_ok}, server ok {server_ok})"
        );
    }
    if server_done.senders != u64::from(opts.peers) {
        eprintln!(
            "pair: the receiver heard from {} of {} sending nodes",
            server_done.senders, opts.peers
        );
    }
    if !client_done.acked_all {
        eprintln!("pair: the drain ended before every message was acknowledged");
    }
    if let Some(s) = relay_stats {
        eprintln!("pair: relay {s:?}");
    }
    let secs = server_done.last_ns.saturating_sub(client_done.start_ns) as f64 / 1e9;
    let secs = if secs > 0.0 { secs } else { f64::INFINITY };
    Ok(PairResult {
        msgs_per_sec: (server_done.delivered as f64 / secs).round(),
        mb_per_sec: (server_done.bytes as f64 / secs / 1e6 * 100.0).round() / 100.0,
        sent: client_done.sent,
        delivered: server_done.delivered,
        lost: client_done.sent.saturating_sub(server_done.delivered),
        duplicated: server_done.duplicated,
        reordered: server_done.reordered,
        corrupt: server_done.corrupt,
        rss_max_kb: client_done.rss_kb.max(server_done.rss_kb),
        retransmitted: client_done.retransmitted,
        timeouts: client_done.timeouts,
        datagrams_sent: client_done.datagrams_sent,
        send_calls: client_done.send_calls,
        acked_all: client_done.acked_all,
    })
}

/// Options of the hidden `pair-server` child.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpts {
    /// Store directory.
    #[arg(long)]
    pub store: PathBuf,
    /// UDP MTU.
    #[arg(long)]
    pub mtu: usize,
    /// Sync durability.
    #[arg(long)]
    pub durable: bool,
    /// Hard limit on the process's life.
    #[arg(long)]
    pub max_secs: u64,
}

/// The receiving child: node 1 on 127.0.0.1, prints `READY addr`, counts and checks every
/// delivery, and after `EXPECT n` on stdin delivers until it has `n` or [`DRAIN`] passes, then
/// prints `DONE {json}`.
pub fn server_child(opts: &ServerOpts) -> io::Result<()> {
    procs::child_setup();
    let stop = procs::signal_flag()?;
    let hard = Instant::now() + Duration::from_secs(opts.max_secs);
    // Room for every sender: nodes the server does not know in advance may take three
    // quarters of its peer table (the rest stays for configured peers).
    let mut core = CoreConfig::default();
    core.max_peers = SERVER_PEER_TABLE as usize;
    let mut node = node_config(&opts.store, 1, opts.durable)
        .core_config(core)
        .mtu(opts.mtu)
        .store_max_peers(SERVER_PEER_TABLE)
        .bind(procs::LOOPBACK)
        .open()
        .map_err(io_err)?;
    println!("READY {}", node.local_addr());
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    {
        let expected = expected.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("EXPECT ")
                    .and_then(|n| n.trim().parse().ok())
                {
                    expected.store(n, Ordering::Release);
                }
            }
        });
    }
    let mut tally = Tally::default();
    // Kept beside the tally: its own total sums over every sender, too much for each poll.
    let mut delivered = 0u64;
    let mut last_ns = 0;
    let mut drain_until: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard {
        let before = delivered;
        let report = node
            .poll(&mut |_, d| {
                if tally.record(d.peer, d.payload) {
                    delivered += 1;
                }
            })
            .map_err(io_err)?;
        if delivered != before {
            last_ns = procs::mono_ns();
        }
        let want = expected.load(Ordering::Acquire);
        if want != u64::MAX {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if delivered >= want || Instant::now() >= until {
                break;
            }
        }
        if !report.more && report.received == 0 && report.delivered == 0 {
            node.wait(Some(Duration::from_millis(20))).map_err(io_err)?;
        }
    }
    let done = ServerDone {
        delivered: tally.delivered(),
        duplicated: tally.duplicated(),
        reordered: tally.reordered(),
        corrupt: tally.corrupt,
        bytes: tally.bytes(),
        senders: tally.senders() as u64,
        last_ns,
        rss_kb: procs::peak_rss_kb(),
    };
    println!("DONE {}", serde_json::to_string(&done).map_err(io_err)?);
    node.close(Duration::from_millis(100)).map_err(io_err)
}

/// Options of the hidden `pair-client` child.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// Parent directory of the sending nodes' stores (`node-<id>` each).
    #[arg(long)]
    pub store: PathBuf,
    /// Where node 1 is (the relay's front address with `--loss`).
    #[arg(long)]
    pub server: SocketAddr,
    /// Number of sending nodes (ids 2..=peers+1).
    #[arg(long)]
    pub peers: u32,
    /// Message size.
    #[arg(long)]
    pub size: usize,
    /// Seconds of sending.
    #[arg(long)]
    pub secs: f64,
    /// UDP MTU.
    #[arg(long)]
    pub mtu: usize,
    /// Sync durability.
    #[arg(long)]
    pub durable: bool,
    /// Hard limit on the process's life.
    #[arg(long)]
    pub max_secs: u64,
}

/// One sending node and its own message counter.
#[derive(Debug)]
pub struct Sending {
    /// The node.
    pub node: Node,
    /// Messages committed so far (the next one is numbered `sent + 1`).
    pub sent: u64,
}

impl Sending {
    /// Sends up to `burst` messages of `size` bytes to node `to`; returns how many were
    /// committed and whether backpressure stopped the burst.
    pub fn burst(&mut self, to: u32, size: usize, burst: usize) -> io::Result<(usize, bool)> {
        let id = self.node.node_id();
        let mut done = 0;
        while done < burst {
            let base = self.sent + 1;
            let fill = |i: usize, b: &mut [u8]| payload::fill(b, id, base + i as u64);
            match self.node.send_batch_with(to, size, burst - done, fill) {
                Ok(seqs) => {
                    let n = (seqs.end - seqs.start) as usize;
                    self.sent += n as u64;
                    done += n;
                    if n == 0 {
                        break;
                    }
                }
                Err(e) if e.is_backpressure() => return Ok((done, true)),
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok((done, false))
    }

    /// Whether every committed message to `to` has been acknowledged.
    pub fn all_acked(&self, to: u32) -> bool {
        self.node
            .store()
            .outbound_pending(to)
            .is_none_or(|(lowest, next)| lowest >= next)
    }
}

/// Blocks until any node has input or a timer is due, at most `cap`. One node: its own
/// [`Node::wait`]; several: `poll(2)` over their epoll descriptors.
pub fn wait_any(nodes: &mut [Sending], cap: Duration) -> io::Result<()> {
    if let [one] = nodes {
        return one.node.wait(Some(cap)).map_err(io_err);
    }
    let now = Instant::now();
    let mut limit = cap;
    for s in nodes.iter() {
        if let Some(t) = s.node.poll_timeout() {
            limit = limit.min(t.saturating_duration_since(now));
        }
    }
    if limit.is_zero() {
        return Ok(());
    }
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = nodes
        .iter()
        .map(|s| PollFd::new(s.node.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms = u16::try_from(limit.as_millis().max(1)).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The sending child: nodes 2..=K+1, each with its own store and socket, driven round-robin
/// by this one thread; prints `DONE {json}` after the drain.
pub fn client_child(opts: &ClientOpts) -> io::Result<()> {
    procs::child_setup();
    let stop = procs::signal_flag()?;
    let hard = Instant::now() + Duration::from_secs(opts.max_secs);
    let mut nodes = Vec::with_capacity(opts.peers as usize);
    for id in 2..opts.peers.saturating_add(2) {
        let dir = opts.store.join(format!("node-{id}"));
        let mut cfg = node_config(&dir, id, opts.durable)
            .mtu(opts.mtu)
            .bind(procs::LOOPBACK)
            .peer(1, opts.server);
        if opts.peers > 1 {
            // Many nodes: smaller stores and windows so the whole set stays modest. With
            // 1,000 senders, 256 unacknowledged messages each is still 25 MB in flight
            // at 100 B; 4,096 each overflowed the receiver's socket buffer (a fifth of
            // all messages resent) and ran at half the rate. In Sync mode each node's
            // group commit is one msync per poll: there the larger window amortizes it.
            let window = if opts.durable { 4096 } else { 256 };
            cfg = cfg
                .store_capacity(64 << 20)
                .max_unacked_per_peer(window)
                .store_max_peers(4);
        }
        let node = cfg.open().map_err(io_err)?;
        nodes.push(Sending { node, sent: 0 });
    }
    let start_ns = procs::mono_ns();
    let send_end = Instant::now() + Duration::from_secs_f64(opts.secs);
    let burst = if nodes.len() == 1 { BURST_ALONE } else { BURST };
    while !stop.load(Ordering::Relaxed) && Instant::now() < send_end.min(hard) {
        let mut busy = false;
        for s in &mut nodes {
            let (n, _) = s.burst(1, opts.size, burst)?;
            let report = s.node.poll(&mut |_, _| {}).map_err(io_err)?;
            busy |= n > 0 || report.more || report.received > 0;
        }
        if !busy {
            let left = send_end.saturating_duration_since(Instant::now());
            wait_any(&mut nodes, left.min(Duration::from_millis(50)))?;
        }
    }
    let drain_end = (Instant::now() + DRAIN).min(hard);
    let mut acked_all = false;
    while !stop.load(Ordering::Relaxed) && Instant::now() < drain_end {
        let mut busy = false;
        for s in &mut nodes {
            let report = s.node.poll(&mut |_, _| {}).map_err(io_err)?;
            busy |= report.more || report.received > 0;
        }
        if nodes.iter().all(|s| s.all_acked(1)) {
            acked_all = true;
            break;
        }
        if !busy {
            wait_any(&mut nodes, Duration::from_millis(20))?;
        }
    }
    if !acked_all {
        for s in nodes.iter().filter(|s| !s.all_acked(1)) {
            eprintln!(
                "pair-client: node {} not drained: {:?}",
                s.node.node_id(),
                s.node.peer_info(1)
            );
        }
    }
    let stats: Vec<_> = nodes.iter().map(|s| s.node.stats()).collect();
    let done = ClientDone {
        sent: nodes.iter().map(|s| s.sent).sum(),
        acked_all,
        start_ns,
        rss_kb: procs::peak_rss_kb(),
        retransmitted: stats.iter().map(|s| s.core.messages_retransmitted).sum(),
        timeouts: stats.iter().map(|s| s.core.timeouts).sum(),
        datagrams_sent: stats.iter().map(|s| s.udp.datagrams_sent).sum(),
        send_calls: stats.iter().map(|s| s.udp.send_calls).sum(),
    };
    println!("DONE {}", serde_json::to_string(&done).map_err(io_err)?);
    for s in nodes {
        let _ = s.node.close(Duration::from_millis(20));
    }
    Ok(())
}

/// The human summary `pair` prints before the JSON line.
pub fn summary(opts: &PairOpts, r: &PairResult) -> String {
    format!(
        "pair: {} B x {} s, mtu {}, {}{} loss, {} sender(s): {:.0} msg/s, {:.2} MB/s; \
         sent {}, delivered {}, lost {}, duplicated {}, reordered {}, corrupt {}; peak RSS {} KiB; \
         sender: {} retransmitted, {} timeouts, {} datagrams in {} send calls",
        opts.size,
        opts.secs,
        opts.mtu,
        if opts.durable { "Sync, " } else { "" },
        format_args!("{}%", opts.loss),
        opts.peers,
        r.msgs_per_sec,
        r.mb_per_sec,
        r.sent,
        r.delivered,
        r.lost,
        r.duplicated,
        r.reordered,
        r.corrupt,
        r.rss_max_kb,
        r.retransmitted,
        r.timeouts,
        r.datagrams_sent,
        r.send_calls
    )
}
