//! `hrpc-bench soak`: two nodes exchange numbered messages through a chaos
//! [`relay`](crate::relay) while
//! the soak SIGKILLs one or the other at random moments and restarts it on the same store;
//! at the end every delivery is checked against what was sent.
//!
//! # Who sends what
//!
//! Two child processes (`soak-side`), node 1 ("A") and node 2 ("B"), each one node with its
//! own store. Of `--msgs N`, A sends `ceil(N/2)` messages to B and B sends `floor(N/2)` to A,
//! both at once, so both directions carry traffic and every kill hits a sender and a receiver.
//! Message `k` of a side is a [`payload`] message numbered `k` (sender id, `k`, filler,
//! crc32c), sent as the `k`-th message to that peer, so its hrpc seq is `k` too.
//!
//! # The link
//!
//! A [`Relay::link`] joins the two: each side binds a fixed loopback port (reserved by the
//! soak before the first start and bound again after every restart) and knows its peer only
//! by the relay's address for it. The relay drops, duplicates and reorders datagrams with
//! probability `--loss`%, corrupts one in five of that, and cuts the link in both directions
//! for 50–300 ms windows drawn from the seed ([`partition_schedule`], one per
//! `--partition-every` seconds on average). It lives as long as the soak and never restarts.
//!
//! # Kills and restarts
//!
//! `--kills K` thresholds are drawn uniformly from `0..N` (seeded). Whenever the deliveries
//! logged so far pass the next threshold and both sides are up (they have printed `READY`),
//! the soak waits 0–20 ms more (so the kill lands anywhere in the send/poll/deliver loop),
//! then SIGKILLs a side chosen at random, reaps it and starts it again with the same
//! arguments: same node id, same store directory, same port, same delivery log. Kills left
//! once everything is delivered still happen (restarts with nothing to do). A restarted side
//! resumes sending at `Node::next_outbound_seq(peer)`: everything below it was committed and
//! survives in the store, so nothing is sent twice and nothing is skipped.
//!
//! # The delivery log
//!
//! Each side appends one 16-byte record per delivery to its log, with one `write(2)` inside
//! the handler, before it returns (so before hrpc counts the message consumed): hrpc seq
//! (u64), payload length (u32), a 32-bit FNV-1a [`digest`] of the payload, little-endian. A write that
//! returned is in the page cache and survives SIGKILL; with `--durable` the nodes run
//! [`Durability::Sync`](hrpc_node::Durability::Sync) and the log is `fdatasync`ed after
//! every poll that delivered, before the next group commit persists the consumption, so an OS
//! crash could only add redeliveries. Each start appends a marker record; a record cut short by a kill (never seen
//! so far) is cut off at the next start and a "torn" marker written in its place.
//!
//! # The check
//!
//! After all kills, once both sides report that everything they sent is acknowledged and
//! everything their peer sent is delivered, the soak stops them and reads the logs
//! ([`check_log`]): each record's digest must match the message the sender made for that
//! seq (else corrupt), seqs must come 1, 2, 3, … (a new seq below the highest seen is
//! reordered; one never seen is lost), and a seq seen before is duplicated. The only
//! duplicate the delivery contract allows is the handler-crash kind: the first record after a
//! restart repeating the last record before it (the process died after the handler ran but
//! before the consumption was recorded) — at most one per kill of that receiver. Any other
//! duplicate is counted as unexplained and fails the run.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::CoreConfig;
use hrpc_node::driver::{Node, NodeError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::procs::{self, ChildProc, io_err};
use crate::relay::{Relay, RelayConfig, partition_schedule};
use crate::{pair, payload};

/// Bytes of one delivery-log record.
pub const RECORD: usize = 16;
/// The seq of the marker record a side writes each time it starts.
pub const START_MARK: u64 = u64::MAX;
/// The seq of the marker record written where a torn record was cut off.
pub const TORN_MARK: u64 = u64::MAX - 1;
/// Node ids of the two sides.
pub const IDS: [u32; 2] = [1, 2];
/// Longest a side may take to start (open its store, bind its port).
const STARTUP: Duration = Duration::from_secs(30);
/// Messages a side commits per loop before it polls.
const BURST: usize = 256;
/// Most extra delay between a kill threshold and the kill.
const KILL_JITTER_MS: u64 = 20;
/// How long the relay cuts the link in a partition window.
const PARTITION_LEN: std::ops::Range<Duration> =
    Duration::from_millis(50)..Duration::from_millis(300);

/// Options of `hrpc-bench soak`.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    /// Messages in all, both directions together (A sends the odd one).
    pub msgs: u64,
    /// SIGKILLs to deliver.
    pub kills: u32,
    /// Relay drop/duplicate/reorder probability in percent (corruption: a fifth of it).
    pub loss: f64,
    /// Nodes in [`Durability::Sync`](hrpc_node::Durability::Sync), logs `fdatasync`ed after
    /// each delivering poll.
    pub durable: bool,
    /// Message size in bytes (at least [`payload::MIN_SIZE`]).
    pub size: usize,
    /// Seed of the kill schedule and the relay.
    pub seed: u64,
    /// Mean seconds between partition windows (0: none).
    pub partition_every: f64,
    /// Hard limit on the whole soak; the run fails if it is reached.
    pub max_secs: u64,
}

impl SoakOpts {
    /// `msgs` messages and `kills` kills, 64-byte messages, no loss, seed 1, a partition
    /// every 2 s on average, at most 30 minutes.
    pub fn new(msgs: u64, kills: u32) -> Self {
        SoakOpts {
            msgs,
            kills,
            loss: 0.0,
            durable: false,
            size: 64,
            seed: 1,
            partition_every: 2.0,
            max_secs: 1800,
        }
    }

    /// Messages side `i` (0 = A, 1 = B) sends to the other.
    pub fn quota(&self, i: usize) -> u64 {
        if i == 0 {
            self.msgs.div_ceil(2)
        } else {
            self.msgs / 2
        }
    }
}

/// The result of a soak; the contract fields come first, and with `--json` it is the last
/// line of stdout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakResult {
    /// Messages committed by both senders.
    pub sent: u64,
    /// Distinct intact messages delivered.
    pub delivered: u64,
    /// Committed but never delivered.
    pub lost: u64,
    /// Deliveries of a message already delivered.
    pub duplicated: u64,
    /// New messages delivered after a higher-numbered one.
    pub reordered: u64,
    /// Deliveries that do not match the message sent with that seq (and torn log records).
    pub corrupt: u64,
    /// SIGKILLs delivered.
    pub kills: u32,
    /// Kills of side A and side B.
    pub kills_per_side: [u32; 2],
    /// Duplicates not of the handler-crash kind (see the module docs).
    pub unexplained_duplicates: u64,
    /// Both sides finished (all sent, acknowledged, delivered) before the deadline.
    pub complete: bool,
    /// Partition windows the relay began during the run.
    pub partitions: u32,
    /// Wall time in seconds.
    pub secs: f64,
}

impl SoakResult {
    /// Complete, nothing lost, reordered or corrupt, and only handler-crash duplicates, at
    /// most one per kill.
    pub fn clean(&self) -> bool {
        self.complete
            && self.lost == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.unexplained_duplicates == 0
            && self.duplicated <= u64::from(self.kills)
    }
}

/// What [`check_log`] finds in one receiver's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// Distinct intact messages.
    pub delivered: u64,
    /// Sent (1..=sent) but absent.
    pub lost: u64,
    /// Intact repeats.
    pub duplicated: u64,
    /// Repeats that are not the first record after a restart repeating the last one before.
    pub unexplained_duplicates: u64,
    /// New messages below the highest seq seen.
    pub reordered: u64,
    /// Records that match no message sent (wrong digest, length, seq 0 or above `sent`), and
    /// torn records.
    pub corrupt: u64,
    /// Start markers (1 + restarts).
    pub starts: u64,
}

/// One log record for a delivery of `payload` with hrpc seq `seq`.
pub fn record(seq: u64, payload: &[u8]) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    r[12..].copy_from_slice(&digest(payload).to_le_bytes());
    r
}

/// FNV-1a (32 bits) of `bytes`: the log's fingerprint of a payload. Not crc32c: a message
/// ends with its own crc32c, and the crc32c of any such message is one constant.
pub fn digest(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn marker(seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r
}

fn parse_record(r: &[u8]) -> Option<(u64, u32, u32)> {
    let seq = u64::from_le_bytes(r.get(..8)?.try_into().ok()?);
    let len = u32::from_le_bytes(r.get(8..12)?.try_into().ok()?);
    let crc = u32::from_le_bytes(r.get(12..16)?.try_into().ok()?);
    Some((seq, len, crc))
}

/// Checks the log of a receiver whose peer `sender` committed messages 1..=`sent` of `size`
/// bytes each (see the module docs for the rules).
pub fn check_log(log: &[u8], sender: u32, size: usize, sent: u64) -> LogCheck {
    let mut c = LogCheck::default();
    let mut seen = vec![0u64; (sent as usize / 64) + 1];
    let mut msg = vec![0u8; size];
    let mut max = 0u64;
    let mut last = 0u64; // seq of the last intact record
    let mut after_start = false;
    for r in log.chunks(RECORD) {
        let Some((seq, len, crc)) = parse_record(r) else {
            c.corrupt += 1; // a partial record at the end
            break;
        };
        match seq {
            START_MARK => {
                c.starts += 1;
                after_start = true;
                continue;
            }
            TORN_MARK => {
                c.corrupt += 1;
                continue;
            }
            _ => {}
        }
        let first_after_start = std::mem::replace(&mut after_start, false);
        let intact = seq >= 1 && seq <= sent && len as usize == size && {
            payload::fill(&mut msg, sender, seq);
            digest(&msg) == crc
        };
        if !intact {
            c.corrupt += 1;
            continue;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let Some(w) = seen.get_mut(word) else {
            c.corrupt += 1;
            continue;
        };
        if *w & bit != 0 {
            c.duplicated += 1;
            if !(first_after_start && seq == last) {
                c.unexplained_duplicates += 1;
            }
        } else {
            *w |= bit;
            c.delivered += 1;
            if seq < max {
                c.reordered += 1;
            }
            max = max.max(seq);
        }
        last = seq;
    }
    c.lost = sent.saturating_sub(c.delivered);
    c
}

/// A free loopback port: bound, read and released (the side binds it a moment later).
fn reserve_port() -> io::Result<SocketAddr> {
    UdpSocket::bind(procs::LOOPBACK)?.local_addr()
}

fn log_records(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() / RECORD as u64)
}

/// What a side prints when it has sent, had acknowledged and delivered everything
/// (`DONE`), and when it stops on request (`BYE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideReport {
    /// Messages committed to the peer (`next_outbound_seq - 1`).
    pub sent: u64,
    /// Highest seq the peer acknowledged.
    pub acked: u64,
    /// Highest seq delivered from the peer (by the log).
    pub delivered: u64,
    /// Messages retransmitted since this start.
    pub retransmitted: u64,
}

struct Side {
    args: Vec<String>,
    log: PathBuf,
    proc: Option<ChildProc>,
    ready: bool,
    done: bool,
    kills: u32,
}

impl Side {
    fn name(i: usize) -> &'static str {
        if i == 0 { "soak-a" } else { "soak-b" }
    }

    fn start(&mut self, i: usize) -> io::Result<()> {
        self.proc = Some(ChildProc::spawn(Side::name(i), &self.args)?);
        self.ready = false;
        self.done = false;
        Ok(())
    }
}

/// Runs the soak and returns the checked result. Errors are setup failures and a side that
/// exits by itself; a deadline reached gives a result with `complete: false`.
pub fn run(opts: &SoakOpts) -> io::Result<SoakResult> {
    payload::check_size(opts.size)?;
    let started = Instant::now();
    let hard = started + Duration::from_secs(opts.max_secs);
    let tmp = tempfile::Builder::new().prefix("hrpc-soak-").tempdir()?;
    let addrs = [reserve_port()?, reserve_port()?];

    let p = (opts.loss / 100.0).clamp(0.0, 1.0);
    let mut cfg = RelayConfig::lossy(opts.loss, opts.seed);
    cfg.corrupt = p / 5.0;
    cfg.lifetime = Duration::from_secs(opts.max_secs) + STARTUP;
    let partitions = if opts.partition_every > 0.0 {
        (cfg.lifetime.as_secs_f64() / opts.partition_every) as u32
    } else {
        0
    };
    cfg.partitions = partition_schedule(opts.seed, cfg.lifetime, partitions, PARTITION_LEN);
    let windows = cfg.partitions.clone();
    let relay = Relay::link(cfg, addrs[0], addrs[1])?;
    // A reaches B through the link address, B reaches A through the front.
    let peer_addrs = [
        relay
            .link_addr()
            .ok_or_else(|| io::Error::other("relay has no link address"))?,
        relay.front_addr(),
    ];

    let mut sides: Vec<Side> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(Side::name(i));
            let log = dir.join("deliveries.log");
            let mut args = vec![
                "soak-side".to_owned(),
                "--id".to_owned(),
                IDS[i].to_string(),
                "--peer".to_owned(),
                IDS[1 - i].to_string(),
                "--bind".to_owned(),
                addrs[i].to_string(),
                "--peer-addr".to_owned(),
                peer_addrs[i].to_string(),
                "--store".to_owned(),
                dir.join("store").display().to_string(),
                "--log".to_owned(),
                log.display().to_string(),
                "--send".to_owned(),
                opts.quota(i).to_string(),
                "--expect".to_owned(),
                opts.quota(1 - i).to_string(),
                "--size".to_owned(),
                opts.size.to_string(),
                "--max-secs".to_owned(),
                (opts.max_secs + 10).to_string(),
            ];
            if opts.durable {
                args.push("--durable".to_owned());
            }
            Side {
                args,
                log,
                proc: None,
                ready: false,
                done: false,
                kills: 0,
            }
        })
        .collect();
    for (i, s) in sides.iter_mut().enumerate() {
        std::fs::create_dir_all(tmp.path().join(Side::name(i)))?;
        s.start(i)?;
    }

    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x6b69_6c6c);
    let mut thresholds: Vec<u64> = (0..opts.kills)
        .map(|_| rng.random_range(0..opts.msgs.max(1)))
        .collect();
    thresholds.sort_unstable();
    let mut kills = 0u32;
    let mut pending: Option<(Instant, usize)> = None;
    let mut complete = false;
    while Instant::now() < hard {
        for (i, s) in sides.iter_mut().enumerate() {
            let Some(p) = s.proc.as_mut() else { continue };
            while let Some(line) = p.try_line() {
                if line.starts_with("READY ") {
                    s.ready = true;
                } else if line.starts_with("DONE ") {
                    s.done = true;
                } else {
                    eprintln!("[{}] {line}", Side::name(i));
                }
            }
            if p.has_exited() {
                return Err(io::Error::other(format!(
                    "{} exited by itself (after {kills} kills)",
                    Side::name(i)
                )));
            }
        }
        let now = Instant::now();
        let progress: u64 = sides.iter().map(|s| log_records(&s.log)).sum();
        if pending.is_none()
            && sides.iter().all(|s| s.ready)
            && thresholds
                .get(kills as usize)
                .is_some_and(|&t| progress >= t)
        {
            let at = now + Duration::from_millis(rng.random_range(0..=KILL_JITTER_MS));
            pending = Some((at, rng.random_range(0..2)));
        }
        if let Some((at, i)) = pending
            && now >= at
        {
            pending = None;
            let s = &mut sides[i];
            if let Some(p) = s.proc.take() {
                p.kill()?;
            }
            kills += 1;
            s.kills += 1;
            s.start(i)?;
        }
        if kills == opts.kills && sides.iter().all(|s| s.done) {
            complete = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    // Stop both sides and take their final counts.
    let mut reports = [None, None];
    for s in &mut sides {
        if let Some(p) = s.proc.as_mut() {
            let _ = p.send_line("EXIT");
        }
    }
    for (i, s) in sides.iter_mut().enumerate() {
        if let Some(mut p) = s.proc.take() {
            let bye = p.expect_line("BYE", Instant::now() + Duration::from_secs(10));
            reports[i] = bye
                .ok()
                .and_then(|l| serde_json::from_str::<SideReport>(&l).ok());
            let _ = p.finish(Duration::from_secs(5));
        }
    }
    let elapsed = started.elapsed();
    let relay_stats = relay.stop();
    eprintln!("soak: relay {relay_stats:?}");

    let mut r = SoakResult {
        kills,
        kills_per_side: [sides[0].kills, sides[1].kills],
        complete,
        partitions: windows.iter().filter(|w| w.start < elapsed).count() as u32,
        ..SoakResult::default()
    };
    for (i, side) in sides.iter().enumerate() {
        // Side i's log holds what the other side sent.
        let from = 1 - i;
        let sent = match &reports[from] {
            Some(rep) => rep.sent,
            None => {
                r.complete = false;
                opts.quota(from)
            }
        };
        let log = std::fs::read(&side.log)?;
        let c = check_log(&log, IDS[from], opts.size, sent);
        r.sent += sent;
        r.delivered += c.delivered;
        r.lost += c.lost;
        r.duplicated += c.duplicated;
        r.reordered += c.reordered;
        r.corrupt += c.corrupt;
        r.unexplained_duplicates += c.unexplained_duplicates;
    }
    r.secs = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok(r)
}

/// The human summary `soak` prints before the JSON line.
pub fn summary(opts: &SoakOpts, r: &SoakResult) -> String {
    format!(
        "soak: {} msgs of {} B ({} A->B, {} B->A), {} kills (A {}, B {}), {}% loss, {} partitions{}, \
         seed {}: sent {}, delivered {}, lost {}, duplicated {} ({} unexplained), reordered {}, \
         corrupt {}; {} in {:.1} s",
        opts.msgs,
        opts.size,
        opts.quota(0),
        opts.quota(1),
        r.kills,
        r.kills_per_side[0],
        r.kills_per_side[1],
        opts.loss,
        r.partitions,
        if opts.durable { ", Sync" } else { "" },
        opts.seed,
        r.sent,
        r.delivered,
        r.lost,
        r.duplicated,
        r.unexplained_duplicates,
        r.reordered,
        r.corrupt,
        if r.complete { "complete" } else { "INCOMPLETE" },
        r.secs
    )
}

/// Options of the hidden `soak-side` child.
#[derive(Debug, Clone, clap::Args)]
pub struct SideOpts {
    /// This node's id.
    #[arg(long)]
    pub id: u32,
    /// The peer's id.
    #[arg(long)]
    pub peer: u32,
    /// The fixed loopback address to bind.
    #[arg(long)]
    pub bind: SocketAddr,
    /// Where the peer is reached (the relay).
    #[arg(long)]
    pub peer_addr: SocketAddr,
    /// Store directory.
    #[arg(long)]
    pub store: PathBuf,
    /// Delivery log.
    #[arg(long)]
    pub log: PathBuf,
    /// Messages to send to the peer in all (across restarts).
    #[arg(long)]
    pub send: u64,
    /// Messages the peer sends.
    #[arg(long)]
    pub expect: u64,
    /// Message size.
    #[arg(long)]
    pub size: usize,
    /// Sync durability and fdatasync of the log.
    #[arg(long)]
    pub durable: bool,
    /// Hard limit on the process's life.
    #[arg(long)]
    pub max_secs: u64,
}

/// Opens the log for appending: cuts off a torn tail (writing a torn marker), finds the
/// highest seq delivered so far, and writes a start marker.
fn open_log(path: &Path) -> io::Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let whole = len - len % RECORD as u64;
    if whole != len {
        f.set_len(whole)?;
        f.write_all(&marker(TORN_MARK))?;
    }
    // The last delivery record, scanning back over markers a chunk at a time.
    let mut last = 0;
    let mut end = whole;
    let mut buf = vec![0u8; 4096 * RECORD];
    'scan: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = buf
            .get_mut(..(end - start) as usize)
            .ok_or_else(|| io::Error::other("log chunk"))?;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for r in chunk.chunks(RECORD).rev() {
            if let Some((seq, _, _)) = parse_record(r)
                && seq < TORN_MARK
            {
                last = seq;
                break 'scan;
            }
        }
        end = start;
    }
    f.write_all(&marker(START_MARK))?;
    Ok((f, last))
}

fn open_node(o: &SideOpts, hard: Instant) -> io::Result<Node> {
    // Restarts are frequent: notice them and resume quickly.
    let mut core = CoreConfig::default();
    core.max_rto = Duration::from_millis(200);
    core.heartbeat_interval = Duration::from_millis(100);
    core.unreachable_after = Duration::from_secs(1);
    let give_up = (Instant::now() + STARTUP).min(hard);
    loop {
        let cfg = pair::node_config(&o.store, o.id, o.durable)
            .bind(o.bind)
            .peer(o.peer, o.peer_addr)
            .store_capacity(256 << 20)
            .core_config(core.clone());
        match cfg.open() {
            Ok(n) => return Ok(n),
            // The killed predecessor's port or lock may take a moment to go.
            Err(NodeError::AddrInUse { .. } | NodeError::StoreLocked { .. })
                if Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// The side child: one node sending `send` numbered messages to its peer (resuming at
/// `next_outbound_seq`) and logging every delivery; prints `READY addr` once open, `DONE
/// {json}` once everything is sent, acknowledged and delivered, and `BYE {json}` when `EXIT`
/// arrives on stdin (then closes).
pub fn side_child(o: &SideOpts) -> io::Result<()> {
    procs::child_setup();
    let stop = procs::signal_flag()?;
    let hard = Instant::now() + Duration::from_secs(o.max_secs);
    let (mut log, mut delivered) = open_log(&o.log)?;
    let mut node = open_node(o, hard)?;
    println!("READY {}", node.local_addr());
    let exit = Arc::new(AtomicBool::new(false));
    {
        let exit = exit.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "EXIT" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            exit.store(true, Ordering::Release);
        });
    }
    let peer = o.peer;
    let mut done = false;
    let mut write_err: Option<io::Error> = None;
    while !stop.load(Ordering::Relaxed) && !exit.load(Ordering::Acquire) && Instant::now() < hard {
        let mut committed = 0;
        // Each commit takes the next seq (checked below), so the store is asked once a burst.
        let mut k = node.next_outbound_seq(peer);
        for _ in 0..BURST {
            if k > o.send {
                break;
            }
            match node.send_with(peer, o.size, |b| payload::fill(b, o.id, k)) {
                Ok(seq) if seq == k => {
                    committed += 1;
                    k += 1;
                }
                Ok(seq) => {
                    return Err(io::Error::other(format!(
                        "message {k} got seq {seq}: the numbering moved"
                    )));
                }
                Err(e) if e.is_backpressure() => break,
                Err(e) => return Err(io_err(e)),
            }
        }
        let report = node
            .poll(&mut |_, d| {
                // One write(2) per delivery, before the handler returns.
                if let Err(e) = log.write_all(&record(d.seq, d.payload)) {
                    write_err.get_or_insert(e);
                }
                delivered = delivered.max(d.seq);
            })
            .map_err(io_err)?;
        if let Some(e) = write_err.take() {
            return Err(e);
        }
        if o.durable && report.delivered > 0 {
            log.sync_data()?;
        }
        if !done
            && node.next_outbound_seq(peer) > o.send
            && node.acked_through(peer) >= o.send
            && delivered >= o.expect
        {
            done = true;
            println!("DONE {}", side_report(&node, peer, delivered)?);
        }
        if committed == 0 && !report.more && report.received == 0 && report.delivered == 0 {
            node.wait(Some(Duration::from_millis(20))).map_err(io_err)?;
        }
    }
    println!("BYE {}", side_report(&node, peer, delivered)?);
    node.close(Duration::from_millis(100)).map_err(io_err)
}

fn side_report(node: &Node, peer: u32, delivered: u64) -> io::Result<String> {
    let r = SideReport {
        sent: node.next_outbound_seq(peer) - 1,
        acked: node.acked_through(peer),
        delivered,
        retransmitted: node.stats().core.messages_retransmitted,
    };
    serde_json::to_string(&r).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 32;

    fn msg(sender: u32, seq: u64) -> Vec<u8> {
        let mut b = vec![0; SIZE];
        payload::fill(&mut b, sender, seq);
        b
    }

    /// A log from records: `Some(seq)` a delivery of message `seq` from node 2, `None` a start.
    fn log(entries: &[Option<u64>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            match e {
                Some(seq) => out.extend_from_slice(&record(*seq, &msg(2, *seq))),
                None => out.extend_from_slice(&marker(START_MARK)),
            }
        }
        out
    }

    #[test]
    fn a_clean_log_with_restarts_passes() {
        let l = log(&[None, Some(1), Some(2), None, Some(3), Some(4), None]);
        let c = check_log(&l, 2, SIZE, 4);
        assert_eq!(
            c,
            LogCheck {
                delivered: 4,
                starts: 3,
                ..LogCheck::default()
            }
        );
    }

    #[test]
    fn a_gap_is_lost_and_a_late_fill_is_reordered() {
        let c = check_log(&log(&[None, Some(1), Some(3)]), 2, SIZE, 3);
        assert_eq!((c.delivered, c.lost, c.reordered), (2, 1, 0));
        let c = check_log(&log(&[None, Some(1), Some(3), Some(2)]), 2, SIZE, 3);
        assert_eq!((c.delivered, c.lost, c.reordered), (3, 0, 1));
        // Messages never delivered at the end are lost too.
        let c = check_log(&log(&[None, Some(1)]), 2, SIZE, 5);
        assert_eq!(c.lost, 4);
    }

    #[test]
    fn only_a_repeat_right_after_a_restart_is_a_handler_crash_duplicate() {
        // The last message before the kill, delivered again first after the restart.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!(
            (c.delivered, c.duplicated, c.unexplained_duplicates),
            (3, 1, 0)
        );
        // A repeat without a restart.
        let c = check_log(
            &log(&[None, Some(1), Some(2), Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (1, 1));
        // A repeat after a restart of an older message than the last.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(1), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (1, 1));
        // Two repeats after one restart: the second is unexplained.
        let c = check_log(
            &log(&[None, Some(1), Some(2), None, Some(2), Some(2), Some(3)]),
            2,
            SIZE,
            3,
        );
        assert_eq!((c.duplicated, c.unexplained_duplicates), (2, 1));
    }

    #[test]
    fn damaged_or_foreign_records_are_corrupt() {
        // Every intact message ends with its own crc32c; the digest still tells them apart.
        assert_ne!(digest(&msg(2, 1)), digest(&msg(2, 2)));
        assert_ne!(digest(&msg(2, 1)), digest(&msg(3, 1)));
        let mut l = log(&[None, Some(1), Some(2)]);
        // Flip a bit of the digest of message 2.
        let last = l.len() - 1;
        l[last] ^= 1;
        let c = check_log(&l, 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.lost), (1, 1, 1));
        // A message from another sender, one of the wrong size, one never sent, a damaged one,
        // a torn marker and a torn tail.
        let mut l = log(&[None, Some(1)]);
        l.extend_from_slice(&record(2, &msg(3, 2)));
        l.extend_from_slice(&record(2, &msg(2, 2)[..SIZE - 1]));
        l.extend_from_slice(&record(9, &msg(2, 9)));
        // A payload with one byte changed (its own trailing crc32c left as it was).
        let mut bad = msg(2, 2);
        bad[20] ^= 4;
        l.extend_from_slice(&record(2, &bad));
        l.extend_from_slice(&marker(TORN_MARK));
        l.extend_from_slice(&[0; 5]);
        let c = check_log(&l, 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.lost), (1, 6, 1));
    }

    #[test]
    fn a_clean_result_needs_every_count_right() {
        let ok = SoakResult {
            sent: 10,
            delivered: 10,
            duplicated: 2,
            kills: 3,
            complete: true,
            ..SoakResult::default()
        };
        assert!(ok.clean());
        for bad in [
            SoakResult {
                lost: 1,
                ..ok.clone()
            },
            SoakResult {
                reordered: 1,
                ..ok.clone()
            },
            SoakResult {
                corrupt: 1,
                ..ok.clone()
            },
            SoakResult {
                duplicated: 4,
                ..ok.clone()
            },
            SoakResult {
                unexplained_duplicates: 1,
                ..ok.clone()
            },
            SoakResult {
                complete: false,
                ..ok.clone()
            },
        ] {
            assert!(!bad.clean(), "{bad:?}");
        }
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.starts_with(
            r#"{"sent":10,"delivered":10,"lost":0,"duplicated":2,"reordered":0,"corrupt":0,"kills":3,"#
        ), "{json}");
    }

    #[test]
    fn the_log_reopens_after_its_last_delivery_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut f, last) = open_log(&path).unwrap();
        assert_eq!(last, 0);
        f.write_all(&record(1, &msg(2, 1))).unwrap();
        f.write_all(&record(2, &msg(2, 2))).unwrap();
        f.write_all(&[7; 3]).unwrap(); // torn
        drop(f);
        let (f, last) = open_log(&path).unwrap();
        drop(f);
        assert_eq!(last, 2);
        let (f, last) = open_log(&path).unwrap();
        drop(f);
        assert_eq!(last, 2, "markers are skipped");
        let c = check_log(&std::fs::read(&path).unwrap(), 2, SIZE, 2);
        assert_eq!((c.delivered, c.corrupt, c.starts), (2, 1, 3));
    }
}
