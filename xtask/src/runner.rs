//! The runner: executes a plan's steps one after another and prints the summary.
//!
//! Every step runs even if an earlier one failed, unless it is marked `after_ok`; each gets a
//! timestamped header and its exact command line. The summary lists every outcome and the run
//! succeeds only if every step did.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::plan::Step;

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) took: Duration,
    pub(crate) ok: bool,
}

#[derive(Debug)]
pub(crate) struct Runner<'a> {
    root: &'a Path,
    start: Instant,
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) kept_lines: Vec<String>,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(root: &'a Path) -> Self {
        Runner {
            root,
            start: Instant::now(),
            outcomes: Vec::new(),
            kept_lines: Vec::new(),
        }
    }

    fn header(&self, text: &str) {
        println!(
            "\n==> [{} UTC, +{}] {text}",
            utc_clock(),
            fmt_duration(self.start.elapsed())
        );
        let _ = std::io::stdout().flush();
    }

    pub(crate) fn run(&mut self, step: &Step) {
        if step.after_ok && self.outcomes.iter().any(|o| !o.ok) {
            println!("\n--> {} SKIPPED: an earlier step failed", step.name);
            self.outcomes.push(Outcome {
                name: format!("{} (skipped)", step.name),
                took: Duration::ZERO,
                ok: false,
            });
            return;
        }
        self.header(&step.name);
        println!("$ {}", step.display());
        let _ = std::io::stdout().flush();
        let started = Instant::now();
        let ok = match self.execute(step) {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("xtask: cannot run `{}`: {e}", step.program);
                false
            }
        };
        let took = started.elapsed();
        println!(
            "--> {} {} in {}",
            step.name,
            if ok { "ok" } else { "FAILED" },
            fmt_duration(took)
        );
        self.outcomes.push(Outcome {
            name: step.name.clone(),
            took,
            ok,
        });
    }

    fn execute(&mut self, step: &Step) -> std::io::Result<bool> {
        for dir in &step.mkdirs {
            std::fs::create_dir_all(self.root.join(dir))?;
        }
        let mut cmd = Command::new(&step.program);
        cmd.args(&step.args)
            .current_dir(self.root)
            .stdin(Stdio::null());
        for (k, v) in &step.env {
            cmd.env(k, OsString::from(v));
        }
        let Some(needle) = step.keep_line else {
            return Ok(cmd.status()?.success());
        };
        // Pass stderr through line by line, remembering the last line that contains `needle`.
        let mut child = cmd.stderr(Stdio::piped()).spawn()?;
        let mut kept = None;
        if let Some(stderr) = child.stderr.take() {
            let mut err = std::io::stderr();
            for line in BufReader::new(stderr).lines() {
                let line = line?;
                let _ = writeln!(err, "{line}");
                if line.contains(needle) {
                    kept = Some(line.trim().to_owned());
                }
            }
        }
        let status = child.wait()?;
        self.kept_lines.extend(kept);
        Ok(status.success())
    }

    /// Prints the summary; returns whether every step succeeded.
    pub(crate) fn summary(&self, epilogue: &[String]) -> bool {
        if self.outcomes.is_empty() {
            println!("xtask: nothing to run");
            return true;
        }
        self.header("summary");
        for o in &self.outcomes {
            println!(
                "  {:<7} {:>8}  {}",
                if o.ok { "ok" } else { "FAILED" },
                fmt_duration(o.took),
                o.name
            );
        }
        let failed = self.outcomes.iter().filter(|o| !o.ok).count();
        for line in epilogue {
            println!("{line}");
        }
        if failed == 0 {
            println!("all {} steps ok", self.outcomes.len());
        } else {
            println!("{failed} of {} steps FAILED", self.outcomes.len());
        }
        for line in &self.kept_lines {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
        failed == 0
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Wall-clock time of day, UTC, as HH:MM:SS (no date library needed for a log header).
fn utc_clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, (day % 3600) / 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    #[test]
    fn keeps_the_test_summary_line_and_reports_failure() {
        let root = workspace_root();
        let mut runner = Runner::new(&root);
        let script = "echo 'kept-marker 1' >&2; echo 'kept-marker 2' >&2; echo other >&2";
        runner.run(&Step::new("ok", "sh", &["-c", script]).keep_line("kept-marker"));
        runner.run(&Step::new("bad", "sh", &["-c", "exit 3"]));
        assert_eq!(runner.kept_lines, ["kept-marker 2"]);
        assert!(runner.outcomes[0].ok);
        assert!(!runner.outcomes[1].ok);
        assert!(!runner.summary(&[]));
    }

    #[test]
    fn a_step_after_a_failure_is_skipped_when_marked() {
        let root = workspace_root();
        let mut runner = Runner::new(&root);
        runner.run(&Step::new("bad", "sh", &["-c", "exit 1"]));
        runner.run(&Step::new("marker", "sh", &["-c", "exit 0"]).after_ok());
        assert_eq!(runner.outcomes.len(), 2);
        assert!(!runner.outcomes[1].ok && runner.outcomes[1].name.contains("skipped"));
    }
}
