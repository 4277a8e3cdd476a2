//! Measurements as child processes: each runs `current_exe()` with a deadline and answers
//! with the JSON object on its last stdout line, so a hung or crashed measurement fails its
//! row and the matrix goes on.

use std::io::{self, BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pair::EXIT_UNCLEAN;
use crate::procs::io_err;

/// Environment variable set on the report's children: they ask to die with their parent.
pub const CHILD_ENV: &str = "HRPC_BENCH_CHILD";

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

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    v: io::Result<serde_json::Value>,
) -> io::Result<T> {
    serde_json::from_value(v?).map_err(io_err)
}
