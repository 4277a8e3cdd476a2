//! The soak process itself: starts both sides behind the relay, SIGKILLs and restarts them
//! at seeded thresholds, stops them and checks both delivery logs.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::check::check_log;
use super::child::SideReport;
use super::log::RECORD;
use super::{IDS, STARTUP, SoakOpts, SoakResult};
use crate::payload;
use crate::procs::{self, ChildProc};
use crate::relay::{Relay, RelayConfig, partition_schedule};

/// Most extra delay between a kill threshold and the kill.
const KILL_JITTER_MS: u64 = 20;
/// How long the relay cuts the link in a partition window.
const PARTITION_LEN: std::ops::Range<Duration> =
    Duration::from_millis(50)..Duration::from_millis(300);

/// A free loopback port: bound, read and released (the side binds it a moment later).
fn reserve_port() -> io::Result<SocketAddr> {
    UdpSocket::bind(procs::LOOPBACK)?.local_addr()
}

fn log_records(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() / RECORD as u64)
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
