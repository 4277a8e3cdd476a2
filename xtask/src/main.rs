//! `cargo xtask`: the project's task runner.
//!
//! One binary with subcommands (`bench`, `soak`, `test`, `ci`, `fuzz`, `loom`, `sim`). Each subcommand turns its
//! options into a plan — a list of [`Step`]s, each one external command — then runs the plan,
//! printing a timestamped header and the exact command line before each step. Every step runs
//! even if an earlier one failed; a summary closes the run and the exit code is non-zero if any
//! step failed. A step can be marked to run only if every step before it succeeded (the
//! benchmark matrix never runs a stale binary after a failed build).
//!
//! `ci` is the single definition of what continuous integration checks: `.ci/run` only installs
//! the tools a fresh machine lacks and then calls `cargo xtask ci`.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

/// Quick criterion settings used by `cargo xtask bench --micro` unless `--full` is given.
const CRITERION_QUICK: &[&str] = &["--warm-up-time", "1", "--measurement-time", "3"];
/// Seconds each fuzz target runs for in `cargo xtask fuzz` (default) and in `ci`.
const FUZZ_SECS_DEFAULT: u64 = 30;
/// loom preemption bound: the short run (`ci`, `cargo xtask loom`) and `--long`.
const LOOM_PREEMPTIONS_SHORT: u32 = 2;
const LOOM_PREEMPTIONS_LONG: u32 = 3;
/// `cargo xtask soak` defaults: messages (both directions together), kills, relay loss %.
const SOAK_MSGS: u64 = 2_000_000;
const SOAK_KILLS: u32 = 1000;
const SOAK_LOSS: f64 = 5.0;
/// Crates whose `tests/loom.rs` the loom step runs.
const LOOM_CRATES: &[&str] = &["hrpc-store", "hrpc-node"];

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "hrpc development tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the whole-node benchmark matrix (`hrpc-bench report`, under 3 minutes) and write
    /// target/hrpc-report/{report.md,throughput.svg}.
    Bench {
        /// Criterion micro-benchmarks only (hrpc-bench/benches/*.rs), instead of the matrix.
        #[arg(long)]
        micro: bool,
        /// Longer runs: 10 s matrix rows, then the criterion benches with criterion's default
        /// times (with --micro: only the latter).
        #[arg(long)]
        full: bool,
    },
    /// Run the long kill-and-restart soak (`hrpc-bench soak`, release build): two nodes
    /// exchange messages through a lossy, partitioning relay while being SIGKILLed and
    /// restarted; prints the checked result as JSON and fails if anything was lost,
    /// reordered or corrupted.
    Soak {
        /// Messages in all, both directions together.
        #[arg(long, default_value_t = SOAK_MSGS)]
        msgs: u64,
        /// SIGKILLs.
        #[arg(long, default_value_t = SOAK_KILLS)]
        kills: u32,
        /// Relay drop/duplicate/reorder probability in percent.
        #[arg(long, default_value_t = SOAK_LOSS)]
        loss: f64,
        /// Seed of the kill schedule and the relay.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Nodes in Durability::Sync, delivery logs fdatasync'ed.
        #[arg(long)]
        durable: bool,
    },
    /// Run the tests: cargo-nextest (installed if missing) plus doctests, or `cargo test` if
    /// nextest cannot be installed.
    Test,
    /// Run every check CI runs: fmt, clippy, tests, doctests, loom, fuzz smoke.
    Ci,
    /// Run fuzz targets (needs cargo-fuzz and a nightly toolchain; installs nothing).
    Fuzz {
        /// One target from fuzz/Cargo.toml; all targets if omitted.
        target: Option<String>,
        /// Seconds per target (libFuzzer -max_total_time).
        #[arg(long, default_value_t = FUZZ_SECS_DEFAULT)]
        secs: u64,
    },
    /// Run the loom model-checking tests (release, own target dir).
    Loom {
        /// Explore more interleavings (LOOM_MAX_PREEMPTIONS=3 instead of 2).
        #[arg(long)]
        long: bool,
    },
    /// Run the hrpc-node deterministic simulation test.
    Sim {
        /// Number of seeds (HRPC_SIM_SEEDS); the test's own default if omitted.
        #[arg(long)]
        seeds: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    if let Task::Test = cli.task {
        return if run_tests(&root) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let plan = match build_plan(&cli.task, &root) {
        Ok(plan) => plan,
        Err(msg) => {
            eprintln!("xtask: error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let mut runner = Runner::new(&root);
    for note in &plan.notes {
        println!("xtask: {note}");
    }
    for step in &plan.steps {
        runner.run(step);
    }
    let ok = runner.summary(&plan.epilogue);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// What a subcommand will do: notes printed first, the steps, and lines printed after the
/// summary.
#[derive(Debug, Default)]
struct Plan {
    notes: Vec<String>,
    steps: Vec<Step>,
    epilogue: Vec<String>,
}

/// One external command, run from the workspace root.
#[derive(Debug, Clone)]
struct Step {
    /// Short name for the header and the summary.
    name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Directories created (relative to the root) just before the command runs.
    mkdirs: Vec<PathBuf>,
    /// Remember the last stderr line containing this text and repeat it at the very end
    /// (used for the test runner's summary line, so the run's closing line is the test count).
    keep_line: Option<&'static str>,
    /// Skip (and count as failed) if an earlier step failed.
    after_ok: bool,
}

impl Step {
    fn new(name: impl Into<String>, program: &str, args: &[&str]) -> Self {
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

    fn cargo(name: impl Into<String>, args: &[&str]) -> Self {
        Step::new(name, "cargo", args)
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    fn mkdir(mut self, dir: PathBuf) -> Self {
        self.mkdirs.push(dir);
        self
    }

    fn keep_line(mut self, needle: &'static str) -> Self {
        self.keep_line = Some(needle);
        self
    }

    fn after_ok(mut self) -> Self {
        self.after_ok = true;
        self
    }

    /// The command as a user would type it in a shell.
    fn display(&self) -> String {
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

fn build_plan(task: &Task, root: &Path) -> Result<Plan, String> {
    match task {
        Task::Bench { micro, full } => bench_plan(root, *micro, *full),
        Task::Soak {
            msgs,
            kills,
            loss,
            seed,
            durable,
        } => Ok(soak_plan(root, *msgs, *kills, *loss, *seed, *durable)),
        Task::Test => Err("`test` is run by run_tests".to_owned()),
        Task::Ci => ci_plan(root),
        Task::Fuzz { target, secs } => {
            check_fuzz_tools()?;
            let targets = fuzz_targets(root)?;
            let selected = match target {
                Some(t) if targets.contains(t) => vec![t.clone()],
                Some(t) => {
                    return Err(format!(
                        "unknown fuzz target `{t}`; fuzz/Cargo.toml lists: {}",
                        targets.join(", ")
                    ));
                }
                None => targets,
            };
            Ok(Plan {
                steps: fuzz_run_steps(root, &selected, *secs),
                ..Plan::default()
            })
        }
        Task::Loom { long } => Ok(Plan {
            steps: loom_steps(*long),
            ..Plan::default()
        }),
        Task::Sim { seeds } => {
            let mut step = Step::cargo(
                "sim",
                &["test", "--release", "-p", "hrpc-node", "--test", "sim"],
            );
            if let Some(n) = seeds {
                step = step.env("HRPC_SIM_SEEDS", n.to_string());
            }
            Ok(Plan {
                steps: vec![step],
                ..Plan::default()
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bench

/// The steps that build the seed README's C benchmark against hrpc-capi (the library in
/// release mode, then `cc` on `hrpc-capi/examples/seed_bench.c`), and the program's path;
/// `None` if there is no C compiler.
fn c_seed_steps(root: &Path) -> Option<(Vec<Step>, PathBuf)> {
    let has_cc = Command::new("cc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cc {
        return None;
    }
    let release = target_dir(root).join("release");
    let exe = release.join("hrpc-seed-c");
    let capi = root.join("hrpc-capi");
    let build = Step::cargo(
        "build hrpc-capi",
        &["build", "--release", "-p", "hrpc-capi", "--lib"],
    )
    .after_ok();
    let compile = Step::new(
        "compile the C seed benchmark",
        "cc",
        &["-O2", "-std=gnu99", "-I"],
    )
    .arg(capi.join("include").display().to_string())
    .arg("-I")
    .arg(capi.join("examples").display().to_string())
    .arg(capi.join("examples/seed_bench.c").display().to_string())
    .arg(release.join("libhrpc_capi.a").display().to_string())
    .args(&["-lpthread", "-ldl", "-lm", "-lrt", "-o"])
    .arg(exe.display().to_string())
    .after_ok();
    Some((vec![build, compile], exe))
}

/// `cargo xtask soak`: build `hrpc-bench` in release, then `hrpc-bench soak … --json` (its
/// last line is the JSON result; it exits non-zero unless the run was clean).
fn soak_plan(root: &Path, msgs: u64, kills: u32, loss: f64, seed: u64, durable: bool) -> Plan {
    let exe = target_dir(root).join("release/hrpc-bench");
    let build = Step::cargo(
        "build hrpc-bench",
        &[
            "build",
            "--release",
            "-p",
            "hrpc-bench",
            "--bin",
            "hrpc-bench",
        ],
    );
    let mut soak = Step::new("soak", &exe.display().to_string(), &["soak", "--json"])
        .args(&[
            "--msgs".to_owned(),
            msgs.to_string(),
            "--kills".to_owned(),
            kills.to_string(),
            "--loss".to_owned(),
            loss.to_string(),
            "--seed".to_owned(),
            seed.to_string(),
        ])
        .after_ok();
    if durable {
        soak = soak.arg("--durable");
    }
    Plan {
        steps: vec![build, soak],
        ..Plan::default()
    }
}

/// `cargo xtask bench`: by default the whole-node matrix: build `hrpc-bench` in release once,
/// then `hrpc-bench report` (its rows print as they finish; it writes
/// `target/hrpc-report/{report.md,throughput.svg,report.json}` and fails if a row failed or
/// lost, duplicated or corrupted a message). `--micro`: the criterion benches instead.
/// `--full`: 10 s rows, then the criterion benches with criterion's default times.
fn bench_plan(root: &Path, micro: bool, full: bool) -> Result<Plan, String> {
    let mut plan = Plan::default();
    if !micro {
        let report_dir = target_dir(root).join("hrpc-report");
        let exe = target_dir(root).join("release/hrpc-bench");
        plan.steps.push(Step::cargo(
            "build hrpc-bench",
            &[
                "build",
                "--release",
                "-p",
                "hrpc-bench",
                "--bin",
                "hrpc-bench",
            ],
        ));
        let mut matrix = Step::new(
            "benchmark matrix",
            &exe.display().to_string(),
            &["report", "--out"],
        )
        .arg(report_dir.display().to_string())
        .after_ok();
        if full {
            matrix = matrix.arg("--full");
        }
        match c_seed_steps(root) {
            Some((steps, seed_exe)) => {
                plan.steps.extend(steps);
                matrix = matrix.arg("--c-seed").arg(seed_exe.display().to_string());
            }
            None => plan
                .notes
                .push("no C compiler (cc): the C seed benchmark row is left out".to_owned()),
        }
        plan.steps.push(matrix);
        let shown = report_dir
            .strip_prefix(root)
            .unwrap_or(&report_dir)
            .display()
            .to_string();
        plan.epilogue.push(format!(
            "benchmark report: {shown}/report.md, chart: {shown}/throughput.svg"
        ));
        if !full {
            return Ok(plan);
        }
    }
    let benches = criterion_benches(root)?;
    if benches.is_empty() {
        return Err("no benchmarks found in hrpc-bench/benches/".to_owned());
    }
    for bench in &benches {
        let mut step = Step::cargo(
            format!("criterion {bench}"),
            &["bench", "-p", "hrpc-bench", "--bench", bench],
        );
        if !full {
            step = step.arg("--").args(CRITERION_QUICK);
        }
        plan.steps.push(step);
    }
    let criterion_dir = target_dir(root).join("criterion");
    let shown = criterion_dir
        .strip_prefix(root)
        .unwrap_or(&criterion_dir)
        .display()
        .to_string();
    plan.epilogue.push(format!(
        "criterion reports: {shown}/<group>/<bench>/ (estimates as JSON)"
    ));
    let html = criterion_dir.join("report/index.html");
    plan.epilogue.push(format!(
        "criterion HTML report: {shown}/report/index.html (written only when criterion's \
             `html_reports` feature is on{})",
        if html.is_file() {
            "; present"
        } else {
            "; not present"
        }
    ));
    if !full {
        plan.epilogue.push(format!(
            "quick criterion settings ({}); use --full for criterion's defaults",
            CRITERION_QUICK.join(" ")
        ));
    }
    Ok(plan)
}

/// Bench targets discovered from `hrpc-bench/benches/`: `NAME.rs` and `NAME/main.rs`, sorted.
fn criterion_benches(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("hrpc-bench/benches");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let is_bench = if path.is_dir() {
            path.join("main.rs").is_file()
        } else {
            path.extension().is_some_and(|ext| ext == "rs")
        };
        let stem = if path.is_dir() {
            path.file_name()
        } else {
            path.file_stem()
        };
        if let (true, Some(name)) = (is_bench, stem.and_then(|s| s.to_str())) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(PathBuf::from(dir)),
        None => root.join("target"),
    }
}

// ---------------------------------------------------------------------------------------------
// ci

/// The test command `cargo xtask test` and CI run. Keep README.md ("Development") in sync.
const TEST_ARGS: &[&str] = &["nextest", "run", "--workspace", "--release"];
/// The doctests (nextest does not run them).
const DOCTEST_ARGS: &[&str] = &["test", "--workspace", "--release", "--doc"];
/// What `cargo xtask test` runs when cargo-nextest cannot be installed.
const FALLBACK_TEST_ARGS: &[&str] = &["test", "--workspace", "--release"];

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo xtask test`: installs cargo-nextest if it is missing, then runs the tests with it
/// plus the doctests; if the install fails, falls back to `cargo test` (which runs the
/// doctests too).
fn run_tests(root: &Path) -> bool {
    let mut runner = Runner::new(root);
    if !has_nextest() {
        runner.run(&Step::cargo(
            "install cargo-nextest",
            &["install", "cargo-nextest", "--locked"],
        ));
        if runner.outcomes.last().is_some_and(|o| !o.ok) {
            // Not a test failure: the fallback below still tests everything.
            runner.outcomes.pop();
            println!("xtask: cargo-nextest could not be installed; using `cargo test`");
        }
    }
    if has_nextest() {
        runner.run(&Step::cargo("tests", TEST_ARGS).keep_line("tests run:"));
        runner.run(&Step::cargo("doctests", DOCTEST_ARGS));
    } else {
        runner.run(&Step::cargo("tests (cargo test)", FALLBACK_TEST_ARGS));
    }
    runner.summary(&[])
}

/// The whole CI: `.ci/run` installs tools, then runs this.
fn ci_plan(root: &Path) -> Result<Plan, String> {
    let mut plan = Plan::default();
    plan.steps
        .push(Step::cargo("fmt", &["fmt", "--all", "--", "--check"]));
    plan.steps.push(Step::cargo(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ],
    ));
    // nextest prints its summary ("N tests run: N passed, ...") on stderr; it is repeated as
    // the run's closing line so the test count is what a reader of the log sees last.
    plan.steps
        .push(Step::cargo("tests", TEST_ARGS).keep_line("tests run:"));
    plan.steps.push(Step::cargo("doctests", DOCTEST_ARGS));
    plan.steps.extend(loom_steps(false));
    check_fuzz_tools()?;
    let targets = fuzz_targets(root)?;
    plan.steps
        .push(Step::cargo("fuzz build", &["+nightly", "fuzz", "build"]));
    plan.steps
        .extend(fuzz_run_steps(root, &targets, FUZZ_SECS_DEFAULT));
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// loom

fn loom_steps(long: bool) -> Vec<Step> {
    let preemptions = if long {
        LOOM_PREEMPTIONS_LONG
    } else {
        LOOM_PREEMPTIONS_SHORT
    };
    LOOM_CRATES
        .iter()
        .map(|&krate| {
            Step::cargo(
                format!("loom {krate}"),
                &["test", "--release", "-p", krate, "--test", "loom"],
            )
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", preemptions.to_string())
            .env("CARGO_TARGET_DIR", "target/loom")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// fuzz

/// cargo-fuzz and a nightly toolchain must both be present; nothing is installed here.
fn check_fuzz_tools() -> Result<(), String> {
    let works = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        return Err("fuzzing needs a nightly toolchain (`cargo +nightly` failed)".to_owned());
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        return Err(
            "fuzzing needs cargo-fuzz: `cargo install cargo-fuzz --locked` (not installed)"
                .to_owned(),
        );
    }
    Ok(())
}

/// The `name`s of the `[[bin]]` sections of fuzz/Cargo.toml, in file order.
fn fuzz_targets(root: &Path) -> Result<Vec<String>, String> {
    let path = root.join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let targets = parse_bin_names(&text);
    if targets.is_empty() {
        return Err(format!("no [[bin]] targets in {}", path.display()));
    }
    Ok(targets)
}

fn parse_bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            let value = value.trim().trim_matches('"').trim_matches('\'');
            if !value.is_empty() {
                names.push(value.to_owned());
            }
        }
    }
    names
}

/// One `cargo +nightly fuzz run` per target. The corpus is `fuzz/corpus/<target>` (created if
/// missing, where libFuzzer writes new inputs); `fuzz/regressions/<target>/`, if present, is
/// passed as a second corpus directory, which libFuzzer only reads: kept crash inputs are replayed
/// first and never modified.
fn fuzz_run_steps(root: &Path, targets: &[String], secs: u64) -> Vec<Step> {
    targets
        .iter()
        .map(|target| {
            let corpus = format!("fuzz/corpus/{target}");
            let regressions = format!("fuzz/regressions/{target}");
            let mut step = Step::cargo(format!("fuzz {target}"), &["+nightly", "fuzz", "run"])
                .arg(target.as_str())
                .arg(corpus.as_str())
                .mkdir(PathBuf::from(&corpus));
            if root.join(&regressions).is_dir() {
                step = step.arg(regressions);
            }
            step.arg("--").arg(format!("-max_total_time={secs}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// running

#[derive(Debug)]
struct Outcome {
    name: String,
    took: Duration,
    ok: bool,
}

#[derive(Debug)]
struct Runner<'a> {
    root: &'a Path,
    start: Instant,
    outcomes: Vec<Outcome>,
    kept_lines: Vec<String>,
}

impl<'a> Runner<'a> {
    fn new(root: &'a Path) -> Self {
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

    fn run(&mut self, step: &Step) {
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
    fn summary(&self, epilogue: &[String]) -> bool {
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

    #[test]
    fn bin_names_from_fuzz_manifest() {
        let manifest = r#"
[package]
name = "hrpc-fuzz"

[dependencies]
name = "not-a-bin"

[[bin]]
name = "wire_decode"
path = "fuzz_targets/wire_decode.rs"

[[bin]]
name = 'store_open' # comment
path = "fuzz_targets/store_open.rs"
"#;
        assert_eq!(parse_bin_names(manifest), ["wire_decode", "store_open"]);
    }

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
    fn commands_display_as_typed() {
        let step = Step::cargo("x", &["test", "--test", "loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", "2");
        assert_eq!(
            step.display(),
            "RUSTFLAGS='--cfg loom' LOOM_MAX_PREEMPTIONS=2 cargo test --test loom"
        );
    }

    #[test]
    fn bench_builds_once_then_runs_the_matrix_only_if_the_build_passed() {
        let root = workspace_root();
        let plan = bench_plan(&root, false, false).unwrap();
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        // With a C compiler, the seed README's C benchmark is built (after hrpc-bench) and
        // handed to the matrix.
        let with_c = [
            "build hrpc-bench",
            "build hrpc-capi",
            "compile the C seed benchmark",
            "benchmark matrix",
        ];
        assert!(
            names == ["build hrpc-bench", "benchmark matrix"] || names == with_c,
            "{names:?}"
        );
        let matrix = plan.steps.last().unwrap();
        assert!(matrix.after_ok && matrix.args[0] == "report");
        assert_eq!(
            matrix.args.contains(&"--c-seed".to_owned()),
            names.len() == with_c.len()
        );
        assert!(plan.steps.iter().skip(1).all(|s| s.after_ok));
        let micro = bench_plan(&root, true, false).unwrap();
        assert!(micro.steps.iter().all(|s| s.name.starts_with("criterion")));
        let full = bench_plan(&root, false, true).unwrap();
        let full_matrix = full.steps.iter().find(|s| s.name == "benchmark matrix");
        assert!(full_matrix.unwrap().args.contains(&"--full".to_owned()));
        assert!(full.steps.len() > names.len());
    }

    #[test]
    fn soak_builds_then_runs_long_by_default() {
        let root = workspace_root();
        let plan = soak_plan(&root, SOAK_MSGS, SOAK_KILLS, SOAK_LOSS, 1, false);
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build hrpc-bench", "soak"]);
        let soak = &plan.steps[1];
        assert!(soak.after_ok && soak.args[..2] == ["soak", "--json"]);
        let value = |flag: &str| {
            let i = soak.args.iter().position(|a| a == flag).unwrap();
            soak.args[i + 1].parse::<f64>().unwrap()
        };
        assert!(value("--msgs") >= 1e6 && value("--kills") >= 500.0);
        assert!(!soak.args.contains(&"--durable".to_owned()));
        let plan = soak_plan(&root, 10, 2, 0.0, 3, true);
        assert!(plan.steps[1].args.contains(&"--durable".to_owned()));
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
