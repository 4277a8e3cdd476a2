//! The original C library's README benchmark, compiled unchanged against hrpc-capi
//! (`hrpc-capi/examples/seed_bench.c`), run as the README runs it: a server and a client
//! process, each in its own directory (the program keeps its store in `./fmap.bin.*` and
//! uses port 5670), stopped with SIGINT. The server prints `N op/s, K kb/s` once a second;
//! the steady seconds (all but the first, which includes the start) are the figure.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// What the original C library does on the machines it is measured on, op/s (the README's
/// figure for this benchmark here: it is not built by this project).
pub const ORIGINAL_OPS_PER_SEC: (f64, f64) = (110_000.0, 180_000.0);

/// The C benchmark's result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CSeedResult {
    /// The server's steady once-a-second figures, op/s.
    pub seconds: Vec<f64>,
    /// Their median.
    pub median_ops_per_sec: f64,
}

fn spawn(exe: &Path, mode: &str, dir: &Path) -> io::Result<Child> {
    std::fs::create_dir_all(dir)?;
    Command::new(exe)
        .arg(mode)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

/// SIGINT, then up to 5 s to exit, then SIGKILL. Returns stdout.
fn stop(mut child: Child) -> io::Result<String> {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let _ = child.wait();
    Ok(out)
}

/// Runs the compiled benchmark `exe` for about `secs` seconds after a second of start-up.
pub fn run(exe: &Path, secs: f64) -> io::Result<CSeedResult> {
    let dir = tempfile::tempdir()?;
    let server = spawn(exe, "server", &dir.path().join("server"))?;
    std::thread::sleep(Duration::from_millis(200));
    let client = match spawn(exe, "client", &dir.path().join("client")) {
        Ok(c) => c,
        Err(e) => {
            let _ = stop(server);
            return Err(e);
        }
    };
    std::thread::sleep(Duration::from_secs_f64(secs.max(2.0) + 1.0));
    let _ = stop(client)?;
    let out = stop(server)?;
    let rates: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_suffix(" kb/s")?.split_once(" op/s")?.0.parse().ok())
        .skip_while(|&r| r == 0.0)
        .collect();
    // The first nonzero second includes the start; the last may be cut by the SIGINT.
    let mut seconds: Vec<f64> = rates.iter().copied().skip(1).collect();
    if seconds.len() > 2 {
        seconds.pop();
    }
    if seconds.is_empty() {
        return Err(io::Error::other(format!(
            "no steady second in the server's output: {out:?}"
        )));
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ops_per_sec = sorted[sorted.len() / 2];
    Ok(CSeedResult {
        seconds,
        median_ops_per_sec,
    })
}
