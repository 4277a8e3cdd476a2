//! The hidden `soak-side` child: one node that sends its numbered messages to the peer,
//! resuming where the store says after every restart, and logs each delivery before the
//! handler returns.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hrpc_node::CoreConfig;
use hrpc_node::driver::{Node, NodeError};
use serde::{Deserialize, Serialize};

use super::STARTUP;
use super::log::{open_log, record};
use crate::procs::{self, io_err};
use crate::{pair, payload};

/// Messages a side commits per loop before it polls.
const BURST: usize = 256;

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
