//! Running the matrix: the comparison figures once per size, every hrpc row, the soak and
//! the latency figures, then writing `report.md`, `report.json` and the chart, and judging
//! whether the run passed.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::{parse, run_json};
use super::markdown::fmt_rate;
use super::rows::{Report, Row, matrix};
use super::{SOAK_FULL, SOAK_LOSS, SOAK_QUICK, chart, markdown};
use crate::c_seed;
use crate::latency::LatencyResult;
use crate::pair::PairResult;
use crate::peer::PeerResult;
use crate::procs::io_err;
use crate::soak::SoakResult;

/// Options of `report`.
#[derive(Debug, Clone)]
pub struct ReportOpts {
    /// Output directory.
    pub out: PathBuf,
    /// Longer rows (10 s) and more latency round trips.
    pub full: bool,
    /// Seconds per row, overriding the default (2 s quick, 10 s full).
    pub secs: Option<f64>,
    /// The seed README's C benchmark compiled against hrpc-capi, to run as one more row.
    pub c_seed: Option<PathBuf>,
}

/// Runs the matrix and writes the report; returns whether every hrpc row was clean.
pub fn run(opts: &ReportOpts) -> io::Result<bool> {
    let started = Instant::now();
    let secs = opts.secs.unwrap_or(if opts.full { 10.0 } else { 2.0 });
    let latency_count: u64 = if opts.full { 100_000 } else { 10_000 };
    let limit = Duration::from_secs_f64(secs) + Duration::from_secs(90);
    let specs = matrix();
    let sizes: std::collections::BTreeSet<usize> = specs.iter().map(|s| s.size).collect();
    // raw UDP and peer per size, one pair per row, the soak, latency.
    let total = sizes.len() * 2 + specs.len() + 2;
    let mut step = 0;
    let mut progress = |what: &str, result: &str| {
        step += 1;
        println!(
            "[{step:>2}/{total} +{:>5.1}s] {what}: {result}",
            started.elapsed().as_secs_f64()
        );
    };

    // Comparison figures, once per size.
    let mut raw: BTreeMap<usize, Option<f64>> = BTreeMap::new();
    let mut peers: BTreeMap<usize, Option<PeerResult>> = BTreeMap::new();
    for spec in &specs {
        if raw.contains_key(&spec.size) {
            continue;
        }
        let s = spec.size.to_string();
        let args = |cmd: &str| {
            vec![
                cmd.to_owned(),
                "--json".to_owned(),
                "--size".to_owned(),
                s.clone(),
                "--secs".to_owned(),
                secs.to_string(),
            ]
        };
        let r: io::Result<serde_json::Value> = run_json(&args("raw-udp"), limit);
        let r = r.and_then(|v| {
            v.get("msgs_per_sec")
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| io::Error::other("no msgs_per_sec"))
        });
        progress(
            &format!("raw UDP {} B", spec.size),
            &match &r {
                Ok(v) => format!("{} msg/s", fmt_rate(Some(*v))),
                Err(e) => format!("FAILED ({e})"),
            },
        );
        raw.insert(spec.size, r.ok());
        let p: io::Result<PeerResult> = parse(run_json(&args("peer"), limit * 2));
        progress(
            &format!("quinn/renet {} B", spec.size),
            &match &p {
                Ok(p) => format!(
                    "quinn {} msg/s, renet {} msg/s",
                    fmt_rate(p.quinn_msgs_per_sec),
                    fmt_rate(p.renet_msgs_per_sec)
                ),
                Err(e) => format!("FAILED ({e})"),
            },
        );
        peers.insert(spec.size, p.ok());
    }

    let mut rows = Vec::new();
    for spec in specs {
        let r: io::Result<PairResult> = run_json(&spec.args(secs), limit).and_then(|v| {
            let unclean = v.get("exit_code").is_some();
            let mut r: PairResult = parse(Ok(v))?;
            // Counts all zero but EXIT_UNCLEAN: the drain ended with messages unacknowledged.
            r.acked_all = !unclean;
            Ok(r)
        });
        progress(
            &format!("hrpc {}", spec.label()),
            &match &r {
                Ok(r) => format!(
                    "{} msg/s, {:.1} MB/s, lost {} duplicated {} corrupt {}{}",
                    fmt_rate(Some(r.msgs_per_sec)),
                    r.mb_per_sec,
                    r.lost,
                    r.duplicated,
                    r.corrupt,
                    if r.acked_all {
                        ""
                    } else {
                        ", NOT all acknowledged"
                    }
                ),
                Err(e) => format!("FAILED ({e})"),
            },
        );
        rows.push(Row {
            raw_udp: raw.get(&spec.size).copied().flatten(),
            peer: peers.get(&spec.size).cloned().flatten(),
            hrpc: r.ok(),
            spec,
        });
    }

    let (soak_msgs, soak_kills) = if opts.full { SOAK_FULL } else { SOAK_QUICK };
    let soak_args: Vec<String> = [
        "soak",
        "--json",
        "--msgs",
        &soak_msgs.to_string(),
        "--kills",
        &soak_kills.to_string(),
        "--loss",
        &SOAK_LOSS.to_string(),
        "--max-secs",
        &limit.as_secs().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let soak: io::Result<SoakResult> = parse(run_json(&soak_args, limit + Duration::from_secs(30)));
    progress(
        &format!("soak {soak_msgs} msgs, {soak_kills} kills, {SOAK_LOSS}% loss"),
        &match &soak {
            Ok(s) => format!(
                "delivered {} of {}, lost {}, duplicated {}, reordered {}, corrupt {}, {} kills in {:.1} s{}",
                s.delivered,
                s.sent,
                s.lost,
                s.duplicated,
                s.reordered,
                s.corrupt,
                s.kills,
                s.secs,
                if s.clean() { "" } else { ", NOT clean" }
            ),
            Err(e) => format!("FAILED ({e})"),
        },
    );
    let soak = Some(soak.map_err(|e| e.to_string()));

    let lat_args = vec![
        "latency".to_owned(),
        "--json".to_owned(),
        "--size".to_owned(),
        "100".to_owned(),
        "--count".to_owned(),
        latency_count.to_string(),
    ];
    let latency: io::Result<LatencyResult> = parse(run_json(&lat_args, limit));
    progress(
        "latency 100 B",
        &match &latency {
            Ok(l) => format!(
                "hrpc p50 {} us p99 {} us; raw UDP p50 {} us p99 {} us",
                l.hrpc_p50_us, l.hrpc_p99_us, l.raw_p50_us, l.raw_p99_us
            ),
            Err(e) => format!("FAILED ({e})"),
        },
    );

    let c_seed = opts.c_seed.as_deref().map(|exe| {
        let r = c_seed::run(exe, secs).map_err(|e| e.to_string());
        println!(
            "[ C ] seed benchmark in C on hrpc-capi: {}",
            match &r {
                Ok(r) => format!(
                    "{} op/s (median second)",
                    fmt_rate(Some(r.median_ops_per_sec))
                ),
                Err(e) => format!("FAILED ({e})"),
            }
        );
        r
    });

    let report = Report {
        secs,
        rows,
        latency: latency.ok(),
        soak,
        c_seed,
        wall_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    std::fs::create_dir_all(&opts.out)?;
    let md = markdown(&report);
    println!("\n{md}");
    std::fs::write(opts.out.join("report.md"), &md)?;
    std::fs::write(
        opts.out.join("report.json"),
        serde_json::to_string_pretty(&report).map_err(io_err)?,
    )?;
    let svg = opts.out.join("throughput.svg");
    if let Err(e) = chart(&report, &svg) {
        eprintln!("report: chart failed: {e}");
    }
    println!(
        "report: {} and {} written in {:.0} s",
        opts.out.join("report.md").display(),
        svg.display(),
        report.wall_secs
    );

    let mut ok = true;
    for row in &report.rows {
        match &row.hrpc {
            None => {
                eprintln!("report: FAILED row: {}", row.spec.label());
                ok = false;
            }
            Some(r) if !r.clean() => {
                eprintln!(
                    "report: row {} lost {}, duplicated {}, corrupt {}{}",
                    row.spec.label(),
                    r.lost,
                    r.duplicated,
                    r.corrupt,
                    if r.acked_all {
                        ""
                    } else {
                        ", not all acknowledged by the end of the drain"
                    }
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    if report.latency.is_none() {
        eprintln!("report: FAILED: latency");
        ok = false;
    }
    match &report.soak {
        Some(Ok(s)) if !s.clean() => {
            eprintln!(
                "report: soak not clean: lost {}, duplicated {}, reordered {}, corrupt {}, complete {}",
                s.lost, s.duplicated, s.reordered, s.corrupt, s.complete
            );
            ok = false;
        }
        Some(Err(e)) => {
            eprintln!("report: FAILED: soak: {e}");
            ok = false;
        }
        _ => {}
    }
    if let Some(Err(e)) = &report.c_seed {
        eprintln!("report: FAILED: the C seed benchmark: {e}");
        ok = false;
    }
    Ok(ok)
}
