//! `hrpc-bench`: whole-node benchmarks of hrpc over loopback UDP. See `hrpc-bench --help` and
//! the crate README.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hrpc_bench::{inspect, latency, pair, payload, peer, raw, report, seed, soak};

#[derive(Debug, Parser)]
#[command(
    name = "hrpc-bench",
    version,
    about = "Whole-node benchmarks of hrpc over loopback UDP",
    long_about = "Whole-node benchmarks of hrpc over loopback UDP.\n\n\
        `server`/`client` are the original C library's README benchmark, run by hand. \
        `pair` runs both sides as child processes and checks every message; `raw-udp`, \
        `latency` and `peer` give the figures to compare with; `soak` kills and restarts \
        two nodes while they exchange messages through a chaos relay and checks every \
        delivery; `report` runs a matrix of all of them and writes a Markdown table and an \
        SVG chart. `inspect` reports on a store directory without opening it."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `ID=ADDR`.
fn parse_peer(s: &str) -> Result<(u32, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=ADDR, got `{s}`"))?;
    let id = id.parse().map_err(|e| format!("bad node id `{id}`: {e}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address `{addr}`: {e}"))?;
    Ok((id, addr))
}

/// Seconds: finite, above 0, at most an hour (every load loop is bounded).
fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("bad number `{s}`: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= 3600.0 {
        Ok(v)
    } else {
        Err(format!("seconds must be in (0, 3600], got {s}"))
    }
}

/// A percentage in 0..=100.
fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("bad number `{s}`: {e}"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("percent must be in 0..=100, got {s}"))
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The C library's benchmark, receiving side: counts and checks messages, prints
    /// `N op/s, K kb/s` each second, exits 0 on SIGINT/SIGTERM.
    Server {
        /// Store directory (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// This node's id.
        #[arg(long, default_value_t = 1)]
        node: u32,
        /// Address to bind (loopback, e.g. 127.0.0.1:5670).
        #[arg(long, default_value = "127.0.0.1:5670")]
        bind: SocketAddr,
        /// Stop after this many seconds even without a signal.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// The C library's benchmark, sending side: sends `--size`-byte messages to the peer as
    /// fast as the protocol allows, prints messages committed per second as `N op/s, K kb/s`,
    /// exits 0 on SIGINT/SIGTERM.
    Client {
        /// Store directory (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// This node's id.
        #[arg(long, default_value_t = 2)]
        node: u32,
        /// The server: ID=ADDR, e.g. 1=127.0.0.1:5670.
        #[arg(long, value_parser = parse_peer)]
        peer: (u32, SocketAddr),
        /// Message size in bytes (at least 16: sender, number, checksum).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Stop after this many seconds even without a signal.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Receiver and sender(s) as two child processes on loopback with fresh temporary stores;
    /// every delivered message is checked. With --json the last stdout line is one JSON object.
    Pair {
        /// Message size in bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds of sending (then up to 10 s of drain).
        #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
        secs: f64,
        /// UDP MTU of both nodes (up to 65507 on loopback).
        #[arg(long, default_value_t = 1472)]
        mtu: usize,
        /// Route through a seeded relay that drops, duplicates and reorders datagrams, each
        /// with this probability in percent.
        #[arg(long, default_value_t = 0.0, value_parser = parse_percent)]
        loss: f64,
        /// Open both nodes with Durability::Sync (group commit to disk).
        #[arg(long)]
        durable: bool,
        /// Sending nodes, all in ONE client process and driven by ONE thread that loops over
        /// them; each has its own store and socket. The receiver counts per sender. 1..=1000.
        #[arg(long, default_value_t = 1)]
        peers: u32,
        /// Seed of the relay's decisions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// The ceiling: plain UDP one way on loopback with the same batching syscalls (GSO
    /// sendmsg/sendmmsg, recvmmsg with GRO), no persistence, no reliability.
    RawUdp {
        /// Datagram size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
        secs: f64,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Ping-pong round trips: hrpc (request, reply from the handler) and raw UDP (blocking
    /// send/recv), side by side.
    Latency {
        /// Message size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Round trips recorded per transport.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// The same one-way test with other Rust libraries: quinn (one stream, length-prefixed
    /// messages, 64 per write) and renet (ReliableOrdered channel over UDP).
    Peer {
        /// Message size in bytes (at least 16: sender, number and checksum, as in `pair`).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds per library.
        #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
        secs: f64,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Two nodes (A = node 1, B = node 2, separate processes) exchange N numbered messages
    /// through a seeded chaos relay, A sending ceil(N/2) to B and B floor(N/2) to A, while
    /// the soak SIGKILLs one side or the other K times at random moments and restarts it on
    /// the same store and port. Each side logs every delivery before its handler returns;
    /// at the end the logs are checked: every message delivered, in order, intact, and
    /// duplicates only of the handler-crash kind (at most one per kill). Exits 3 if not.
    Soak {
        /// Messages in all, both directions together.
        #[arg(long, default_value_t = 50_000)]
        msgs: u64,
        /// SIGKILLs (each restarts the killed side).
        #[arg(long, default_value_t = 30)]
        kills: u32,
        /// Relay drop, duplicate and reorder probability in percent (a fifth of it corrupts).
        #[arg(long, default_value_t = 0.0, value_parser = parse_percent)]
        loss: f64,
        /// Nodes with Durability::Sync, delivery logs fdatasync'ed after each delivering poll.
        #[arg(long)]
        durable: bool,
        /// Message size in bytes (at least 16).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seed of the kill schedule and the relay.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean seconds between relay partition windows (50-300 ms each, both directions
        /// cut); 0 = none.
        #[arg(long, default_value_t = 2.0)]
        partition_every: f64,
        /// Hard limit on the whole soak in seconds; reaching it fails the run.
        #[arg(long, default_value_t = 1800)]
        max_secs: u64,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Runs the benchmark matrix (what `cargo xtask bench` runs) and writes report.md and
    /// throughput.svg.
    Report {
        /// Output directory.
        #[arg(long, default_value = "target/hrpc-report")]
        out: PathBuf,
        /// Longer rows (10 s instead of 2 s).
        #[arg(long)]
        full: bool,
        /// Seconds per row (overrides the default of --full or quick).
        #[arg(long, value_parser = parse_secs)]
        secs: Option<f64>,
        /// The seed README's C benchmark compiled against hrpc-capi: also run it and report
        /// its throughput beside the original C library's.
        #[arg(long)]
        c_seed: Option<PathBuf>,
    },
    /// Reports on a store directory without opening it: node id, segment files and their use,
    /// per-peer sequence ranges and pending counts, whether a live process holds the lock, and
    /// every damaged record, header or slot with file and offset. Takes no lock and writes
    /// nothing: safe beside a live node. Exits 0 if healthy, 1 if damage was found, 2 if the
    /// store cannot be read at all.
    Inspect {
        /// The store directory.
        store_dir: PathBuf,
        /// Print one JSON object instead of the text report.
        #[arg(long)]
        json: bool,
        /// Judge the store as one used with Durability::Sync (torn slots and unrecorded
        /// commits after a power loss are then expected, not damage).
        #[arg(long)]
        sync: bool,
        /// Also print the store epoch and the peers' session tokens, which are secrets.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Child process of `pair`: the receiving node.
    #[command(hide = true)]
    PairServer(pair::ServerOpts),
    /// Child process of `soak`: one side.
    #[command(hide = true)]
    SoakSide(soak::SideOpts),
    /// Child process of `pair`: the sending nodes.
    #[command(hide = true)]
    PairClient(pair::ClientOpts),
}

/// Prints a command's human summary and, with `--json`, `value` as the last line.
fn print_result(
    summary: impl std::fmt::Display,
    json: bool,
    value: &impl serde::Serialize,
) -> io::Result<()> {
    println!("{summary}");
    if json {
        let s = serde_json::to_string(value).map_err(hrpc_bench::procs::io_err)?;
        println!("{s}");
    }
    Ok(())
}

fn run(cmd: Cmd) -> io::Result<bool> {
    match cmd {
        Cmd::Server {
            store,
            node,
            bind,
            max_secs,
        } => seed::server(&seed::SeedOpts {
            store,
            node,
            bind: Some(bind),
            peers: Vec::new(),
            size: 0,
            max_secs,
        })?,
        Cmd::Client {
            store,
            node,
            peer,
            size,
            max_secs,
        } => seed::client(&seed::SeedOpts {
            store,
            node,
            bind: Some(hrpc_bench::procs::LOOPBACK),
            peers: vec![peer],
            size,
            max_secs,
        })?,
        Cmd::Pair {
            size,
            secs,
            mtu,
            loss,
            durable,
            peers,
            seed,
            json,
        } => {
            let opts = pair::PairOpts {
                size,
                secs,
                mtu,
                loss,
                durable,
                peers: peers.max(1),
                seed,
            };
            let r = pair::run(&opts)?;
            print_result(pair::summary(&opts, &r), json, &r)?;
            // Exit status EXIT_UNCLEAN: the run completed but lost, duplicated or corrupted messages, or
            // left some unacknowledged.
            return Ok(r.clean());
        }
        Cmd::Soak {
            msgs,
            kills,
            loss,
            durable,
            size,
            seed,
            partition_every,
            max_secs,
            json,
        } => {
            let opts = soak::SoakOpts {
                msgs,
                kills,
                loss,
                durable,
                size,
                seed,
                partition_every: partition_every.max(0.0),
                max_secs,
            };
            let r = soak::run(&opts)?;
            print_result(soak::summary(&opts, &r), json, &r)?;
            return Ok(r.clean());
        }
        Cmd::SoakSide(o) => soak::side_child(&o)?,
        Cmd::RawUdp { size, secs, json } => {
            let r = raw::run(size, secs)?;
            print_result(
                format_args!(
                    "raw-udp: {size} B x {secs} s: {:.0} datagrams/s received ({:.2} MB/s), {} sent, {} received",
                    r.msgs_per_sec, r.mb_per_sec, r.sent, r.received
                ),
                json,
                &serde_json::json!({ "msgs_per_sec": r.msgs_per_sec }),
            )?;
        }
        Cmd::Latency { size, count, json } => {
            let r = latency::run(size, count)?;
            print_result(
                format_args!(
                    "latency: {size} B, {count} round trips each: hrpc p50 {} us, p99 {} us; raw UDP p50 {} us, p99 {} us",
                    r.hrpc_p50_us, r.hrpc_p99_us, r.raw_p50_us, r.raw_p99_us
                ),
                json,
                &r,
            )?;
        }
        Cmd::Peer { size, secs, json } => {
            // Every message carries what pair's do: at least payload::MIN_SIZE bytes.
            payload::check_size(size)?;
            let r = peer::run(size, secs);
            print_result(peer::summary(size, secs, &r), json, &r)?;
        }
        Cmd::Report {
            out,
            full,
            secs,
            c_seed,
        } => {
            return report::run(&report::ReportOpts {
                out,
                full,
                secs,
                c_seed,
            });
        }
        // Handled in `main`: it has exit statuses of its own.
        Cmd::Inspect { .. } => {}
        Cmd::PairServer(o) => pair::server_child(&o)?,
        Cmd::PairClient(o) => pair::client_child(&o)?,
    }
    Ok(true)
}

fn main() -> ExitCode {
    if std::env::var_os(report::CHILD_ENV).is_some() {
        // Started by `report`: die with it.
        hrpc_bench::procs::child_setup();
    }
    let cli = Cli::parse();
    if let Cmd::Inspect {
        store_dir,
        json,
        sync,
        show_secrets,
    } = &cli.cmd
    {
        let opts = inspect::InspectOpts {
            json: *json,
            sync: *sync,
            show_secrets: *show_secrets,
        };
        return inspect::run(store_dir, opts);
    }
    match run(cli.cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(pair::EXIT_UNCLEAN),
        Err(e) => {
            eprintln!("hrpc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
