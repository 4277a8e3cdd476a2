//! Plans and steps: what a subcommand will do, as a list of external commands.
//!
//! A [`Plan`] is built before anything runs; each [`Step`] is one command run from the
//! workspace root, and [`Step::display`] is exactly what a user would type in a shell.

use std::fmt::Write as _;
use std::path::PathBuf;

/// What a subcommand will do: notes printed first, the steps, and lines printed after the
/// summary.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) notes: Vec<String>,
    pub(crate) steps: Vec<Step>,
    pub(crate) epilogue: Vec<String>,
}

/// One external command, run from the workspace root.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Short name for the header and the summary.
    pub(crate) name: String,
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// Directories created (relative to the root) just before the command runs.
    pub(crate) mkdirs: Vec<PathBuf>,
    /// Remember the last stderr line containing this text and repeat it at the very end
    /// (used for the test runner's summary line, so the run's closing line is the test count).
    pub(crate) keep_line: Option<&'static str>,
    /// Skip (and count as failed) if an earlier step failed.
    pub(crate) after_ok: bool,
}

impl Step {
    pub(crate) fn new(name: impl Into<String>, program: &str, args: &[&str]) -> Self {
        Step {
            name: name.into(),
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            mkdirs: Vec::new(),
            keep_line: None,
            after_ok: false,
        }
    }

    pub(crate) fn cargo(name: impl Into<String>, args: &[&str]) -> Self {
        Step::new(name, "cargo", args)
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn mkdir(mut self, dir: PathBuf) -> Self {
        self.mkdirs.push(dir);
        self
    }

    pub(crate) fn keep_line(mut self, needle: &'static str) -> Self {
        self.keep_line = Some(needle);
        self
    }

    pub(crate) fn after_ok(mut self) -> Self {
        self.after_ok = true;
        self
    }

    /// The command as a user would type it in a shell.
    pub(crate) fn display(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            let _ = write!(out, "{k}={} ", shell_quote(v));
        }
        out.push_str(&self.program);
        for a in &self.args {
            out.push(' ');
            out.push_str(&shell_quote(a));
        }
        out
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./,:+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn commands_display_as_typed() {
        let step = Step::cargo("x", &["test", "--test", "loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", "2");
        assert_eq!(
            step.display(),
            "RUSTFLAGS='--cfg loom' LOOM_MAX_PREEMPTIONS=2 cargo test --test loom"
        );
    }
}
