//! `hrpc-bench report`: the benchmark matrix behind `cargo xtask bench`.
//!
//! Every measurement runs as a child process of this binary (`pair … --json`, `raw-udp …`,
//! `peer …`, `latency …`) with a deadline, so a hung or crashed row is shown as failed and the
//! matrix goes on. Raw UDP and the peer libraries depend only on the message size, so they
//! run once per size and appear in every row of that size. A line is printed as each
//! measurement finishes; at the end the table is printed and written with an SVG chart:
//!
//! - `OUT/report.md`: configuration, hrpc msg/s and MB/s, raw UDP, quinn and renet msg/s,
//!   lost/duplicated/corrupt, peak RSS; then the kill-and-restart soak ([`SOAK_QUICK`] or
//!   [`SOAK_FULL`] messages and kills through a 5% lossy relay) and the latency figures;
//! - `OUT/throughput.svg`: msg/s per configuration, hrpc, raw UDP, quinn and renet side by side
//!   (log scale);
//! - `OUT/report.json`: the same numbers.
//!
//! The run fails (returns `false`) if an hrpc row failed, reported lost, duplicated or
//! corrupt messages, or ended its drain with messages unacknowledged, or if the soak failed
//! or was not clean.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::c_seed::{self, CSeedResult};
use crate::latency::LatencyResult;
use crate::pair::{EXIT_UNCLEAN, PairResult};
use crate::peer::PeerResult;
use crate::procs::io_err;
use crate::soak::SoakResult;

/// The soak row of the quick matrix: (messages, kills), 5% loss.
pub const SOAK_QUICK: (u64, u32) = (50_000, 30);
/// The soak row with `--full`.
pub const SOAK_FULL: (u64, u32) = (1_000_000, 500);
/// Relay loss of the soak row, percent.
pub const SOAK_LOSS: f64 = 5.0;

/// Environment variable set on the report's children: they ask to die with their parent.
pub const CHILD_ENV: &str = "HRPC_BENCH_CHILD";

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

/// One hrpc configuration of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowSpec {
    /// Message size.
    pub size: usize,
    /// UDP MTU.
    pub mtu: usize,
    /// Sync durability.
    pub durable: bool,
    /// Relay loss percentage.
    pub loss: f64,
    /// Sending nodes.
    pub peers: u32,
}

impl RowSpec {
    const fn new(size: usize) -> Self {
        RowSpec {
            size,
            mtu: 1472,
            durable: false,
            loss: 0.0,
            peers: 1,
        }
    }

    /// `100 B, MTU 1472, Process, 0% loss, 1 peer`.
    pub fn label(&self) -> String {
        format!(
            "{} B, MTU {}, {}, {}% loss, {} peer{}",
            self.size,
            self.mtu,
            if self.durable { "Sync" } else { "Process" },
            self.loss,
            self.peers,
            if self.peers == 1 { "" } else { "s" }
        )
    }

    fn args(&self, secs: f64) -> Vec<String> {
        let mut a = vec![
            "pair".to_owned(),
            "--json".to_owned(),
            "--size".to_owned(),
            self.size.to_string(),
            "--secs".to_owned(),
            secs.to_string(),
            "--mtu".to_owned(),
            self.mtu.to_string(),
            "--peers".to_owned(),
            self.peers.to_string(),
            "--loss".to_owned(),
            self.loss.to_string(),
        ];
        if self.durable {
            a.push("--durable".to_owned());
        }
        a
    }
}

/// The matrix: sizes 16/100/1000/64000 B, MTU 1472 and 65000, Process and Sync durability,
/// 0% and 5% loss, 1 and 1000 peers — a sensible list of rows, not every combination.
pub fn matrix() -> Vec<RowSpec> {
    let base = RowSpec::new(100);
    vec![
        base.clone(),
        RowSpec::new(16),
        RowSpec::new(1000),
        RowSpec::new(64_000),
        RowSpec {
            mtu: 65_000,
            ..base.clone()
        },
        RowSpec {
            mtu: 65_000,
            ..RowSpec::new(64_000)
        },
        RowSpec {
            durable: true,
            ..base.clone()
        },
        RowSpec {
            durable: true,
            ..RowSpec::new(64_000)
        },
        RowSpec {
            loss: 5.0,
            ..base.clone()
        },
        RowSpec {
            loss: 5.0,
            ..RowSpec::new(1000)
        },
        RowSpec {
            peers: 1000,
            ..base.clone()
        },
        RowSpec {
            peers: 1000,
            durable: true,
            ..base
        },
    ]
}

/// One finished row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The configuration.
    pub spec: RowSpec,
    /// hrpc's result; `None` if the run failed.
    pub hrpc: Option<PairResult>,
    /// Raw UDP msg/s at this size.
    pub raw_udp: Option<f64>,
    /// quinn and renet at this size.
    pub peer: Option<PeerResult>,
}

/// Everything the report holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Seconds per measurement.
    pub secs: f64,
    /// The rows.
    pub rows: Vec<Row>,
    /// Round trips, 100-byte messages.
    pub latency: Option<LatencyResult>,
    /// The kill-and-restart soak (`Err` text if it failed to run).
    #[serde(default)]
    pub soak: Option<Result<SoakResult, String>>,
    /// The seed README's C benchmark on hrpc-capi, if it was run (`Err` text if it failed).
    #[serde(default)]
    pub c_seed: Option<Result<CSeedResult, String>>,
    /// Wall time of the whole matrix, seconds.
    pub wall_secs: f64,
}

/// Runs `current_exe() args`, returns the JSON object on its last stdout line. The child is
/// killed after `limit`. A child that exits with [`EXIT_UNCLEAN`] (a `pair` run that was not
/// clean) still returns its object, with `"exit_code"` added.
pub fn run_json(args: &[String], limit: Duration) -> io::Result<serde_json::Value> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no stderr"))?;
    let out =
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).last());
    let err = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let last = out.join().ok().flatten();
    let errs = err.join().unwrap_or_default();
    let tail = errs
        .iter()
        .rev()
        .take(3)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ");
    let Some(status) = status else {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("killed after {} s; stderr: {tail}", limit.as_secs()),
        ));
    };
    let value = last
        .as_deref()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object);
    match value {
        Some(v) if status.success() => Ok(v),
        // `pair` exits EXIT_UNCLEAN when the run was not clean: the JSON still counts, marked so the
        // report can judge it.
        Some(mut v) if status.code() == Some(i32::from(EXIT_UNCLEAN)) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("exit_code".to_owned(), EXIT_UNCLEAN.into());
            }
            Ok(v)
        }
        _ => Err(io::Error::other(format!("{status}; stderr: {tail}"))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: io::Result<serde_json::Value>) -> io::Result<T> {
    serde_json::from_value(v?).map_err(io_err)
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "failed".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
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

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# hrpc benchmark report\n\nOne-way throughput on loopback, {} s per measurement, \
         sender and receiver in separate processes (`hrpc-bench pair`); raw UDP \
         (`hrpc-bench raw-udp`), quinn and renet (`hrpc-bench peer`) at the same message size. \
         Matrix wall time {:.0} s.\n",
        r.secs, r.wall_secs
    );
    let _ = writeln!(
        s,
        "| configuration | hrpc msg/s | hrpc MB/s | raw UDP msg/s | quinn msg/s | renet msg/s | lost/dup/corrupt | peak RSS MiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---:|");
    for row in &r.rows {
        let (rate, mb, bad, rss) = match &row.hrpc {
            Some(h) => (
                fmt_rate(Some(h.msgs_per_sec)),
                format!("{:.1}", h.mb_per_sec),
                format!(
                    "{}/{}/{}{}",
                    h.lost,
                    h.duplicated,
                    h.corrupt,
                    if h.acked_all { "" } else { " (unacked)" }
                ),
                format!("{:.0}", h.rss_max_kb as f64 / 1024.0),
            ),
            None => ("failed".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {rate} | {mb} | {} | {} | {} | {bad} | {rss} |",
            row.spec.label(),
            fmt_rate(row.raw_udp),
            fmt_rate(row.peer.as_ref().and_then(|p| p.quinn_msgs_per_sec)),
            fmt_rate(row.peer.as_ref().and_then(|p| p.renet_msgs_per_sec)),
        );
    }
    if let Some(soak) = &r.soak {
        let _ = writeln!(
            s,
            "\nKill-and-restart soak (`hrpc-bench soak`): two nodes exchange messages both \
             ways through a relay with {SOAK_LOSS}% loss, duplication and reordering and \
             partition windows, while one or the other is SIGKILLed and restarted on its \
             store; every delivery is checked from the receivers' logs.\n\n\
             | messages | kills | delivered | lost | duplicated | reordered | corrupt | seconds |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let _ = match soak {
            Ok(k) => writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.1}{} |",
                k.sent,
                k.kills,
                k.delivered,
                k.lost,
                k.duplicated,
                k.reordered,
                k.corrupt,
                k.secs,
                if k.complete { "" } else { " (incomplete)" }
            ),
            Err(e) => writeln!(s, "| failed ({e}) | – | – | – | – | – | – | – |"),
        };
    }
    let _ = writeln!(
        s,
        "\nRound trips, 100-byte messages (`hrpc-bench latency`):\n"
    );
    match &r.latency {
        Some(l) => {
            let _ = writeln!(
                s,
                "| transport | p50 µs | p99 µs |\n|---|---:|---:|\n| hrpc | {} | {} |\n| raw UDP | {} | {} |",
                l.hrpc_p50_us, l.hrpc_p99_us, l.raw_p50_us, l.raw_p99_us
            );
        }
        None => {
            let _ = writeln!(s, "latency: failed");
        }
    }
    if let Some(c) = &r.c_seed {
        let (lo, hi) = c_seed::ORIGINAL_OPS_PER_SEC;
        let _ = writeln!(
            s,
            "\nThe original C library's README benchmark, compiled unchanged against hrpc-capi \
             (`hrpc-capi/examples/seed_bench.c`; server and client processes, 100-byte \
             messages):\n\n| program | op/s (median steady second) | seconds | original C library |\n|---|---:|---|---:|"
        );
        let original = format!("{}–{} op/s", fmt_rate(Some(lo)), fmt_rate(Some(hi)));
        let _ = match c {
            Ok(c) => writeln!(
                s,
                "| seed_bench.c on hrpc-capi | {} ({:.1}–{:.1}× the original) | {} | {original} |",
                fmt_rate(Some(c.median_ops_per_sec)),
                c.median_ops_per_sec / hi,
                c.median_ops_per_sec / lo,
                c.seconds
                    .iter()
                    .map(|v| fmt_rate(Some(*v)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(e) => writeln!(
                s,
                "| seed_bench.c on hrpc-capi | failed ({e}) | – | {original} |"
            ),
        };
    }
    s
}

/// Grouped bars, log scale: hrpc, raw UDP, quinn, renet msg/s per configuration.
pub fn chart(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let n = r.rows.len().max(1);
    let series: [(&str, RGBColor); 4] = [
        ("hrpc", RGBColor(0x1f, 0x77, 0xb4)),
        ("raw UDP", RGBColor(0x7f, 0x7f, 0x7f)),
        ("quinn", RGBColor(0xff, 0x7f, 0x0e)),
        ("renet", RGBColor(0x2c, 0xa0, 0x2c)),
    ];
    let values = |row: &Row| -> [Option<f64>; 4] {
        [
            row.hrpc.as_ref().map(|h| h.msgs_per_sec),
            row.raw_udp,
            row.peer.as_ref().and_then(|p| p.quinn_msgs_per_sec),
            row.peer.as_ref().and_then(|p| p.renet_msgs_per_sec),
        ]
    };
    let max = r
        .rows
        .iter()
        .flat_map(|row| values(row).into_iter().flatten())
        .fold(10.0f64, f64::max);

    let root = SVGBackend::new(path, (1400, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, labels) = root.split_vertically(500);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!("hrpc one-way throughput on loopback ({} s per row)", r.secs),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, (100f64..max * 20.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("messages per second")
        .y_label_formatter(&|v| fmt_rate(Some(*v)))
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (k, (name, color)) in series.iter().enumerate() {
        let bars = r.rows.iter().enumerate().filter_map(move |(i, row)| {
            let v = values(row)[k]?;
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 100.0), (x0 + width * 0.92, v.max(100.0))],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    // Configuration names under their groups, rotated.
    let style = TextStyle::from(("sans-serif", 13).into_font())
        .transform(FontTransform::Rotate90)
        .color(&BLACK);
    for (i, row) in r.rows.iter().enumerate() {
        let (px, _) = chart.backend_coord(&(i as f64 + 0.5, 100.0));
        let mut label = row.spec.label();
        if row.hrpc.is_none() {
            label.push_str(" (hrpc FAILED)");
        }
        labels.draw(&Text::new(label, (px - 6, 6), style.clone()))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix covers every dimension the report promises.
    #[test]
    fn matrix_covers_the_dimensions() {
        let m = matrix();
        let sizes: std::collections::BTreeSet<usize> = m.iter().map(|r| r.size).collect();
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [16, 100, 1000, 64_000]
        );
        assert!(m.iter().any(|r| r.mtu == 1472) && m.iter().any(|r| r.mtu == 65_000));
        assert!(m.iter().any(|r| r.durable) && m.iter().any(|r| !r.durable));
        assert!(m.iter().any(|r| r.loss == 5.0) && m.iter().any(|r| r.loss == 0.0));
        assert!(m.iter().any(|r| r.peers == 1000) && m.iter().any(|r| r.peers == 1));
    }

    /// A failed row reads "failed", an unclean one shows its counts, and both make the chart
    /// without error.
    #[test]
    fn failed_and_unclean_rows_are_shown() {
        let ok = PairResult {
            msgs_per_sec: 1e6,
            sent: 10,
            delivered: 10,
            acked_all: true,
            ..PairResult::default()
        };
        let lossy = PairResult {
            lost: 3,
            delivered: 7,
            ..ok.clone()
        };
        let row = |hrpc| Row {
            spec: RowSpec::new(100),
            hrpc,
            raw_udp: Some(2e6),
            peer: None,
        };
        let report = Report {
            secs: 1.0,
            rows: vec![row(Some(ok.clone())), row(None), row(Some(lossy))],
            latency: None,
            soak: Some(Ok(SoakResult {
                sent: 50_000,
                delivered: 50_000,
                duplicated: 2,
                kills: 30,
                complete: true,
                secs: 1.5,
                ..SoakResult::default()
            })),
            c_seed: Some(Err("no compiler".to_owned())),
            wall_secs: 1.0,
        };
        let md = markdown(&report);
        assert!(
            md.contains("| 1.00 M | 0.0 | 2.00 M | failed | failed | 0/0/0 |"),
            "{md}"
        );
        assert!(md.contains("| failed | – |"), "{md}");
        assert!(md.contains("3/0/0"), "{md}");
        assert!(md.contains("latency: failed"), "{md}");
        assert!(
            md.contains("| 50000 | 30 | 50000 | 0 | 2 | 0 | 0 | 1.5 |"),
            "{md}"
        );
        let failed_soak = Report {
            soak: Some(Err("timed out".to_owned())),
            ..report.clone()
        };
        assert!(markdown(&failed_soak).contains("| failed (timed out) |"));
        assert!(
            md.contains("seed_bench.c on hrpc-capi | failed (no compiler)"),
            "{md}"
        );
        assert!(ok.clean() && !report.rows[2].hrpc.as_ref().is_some_and(PairResult::clean));
        let dir = tempfile::tempdir().unwrap();
        chart(&report, &dir.path().join("c.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("c.svg")).unwrap();
        assert!(svg.contains("hrpc FAILED"));
    }
}
