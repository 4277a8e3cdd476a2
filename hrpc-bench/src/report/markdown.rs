//! The Markdown report: the throughput table, the soak and latency figures and the C seed
//! benchmark, and how rates are written (`1.00 M`, `12.3 k`).

use std::fmt::Write as _;

use super::SOAK_LOSS;
use super::rows::Report;
use crate::c_seed;

pub(super) fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "failed".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1} k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair::PairResult;
    use crate::report::chart::chart;
    use crate::report::rows::{Row, RowSpec};
    use crate::soak::SoakResult;

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
