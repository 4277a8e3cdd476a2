//! `cargo xtask`: the project's task runner.
//!
//! One binary with subcommands (`bench`, `soak`, `test`, `ci`, `fuzz`, `loom`, `sim`, `msrv`,
//! `deny`, `semver`). Each subcommand turns its options into a plan — a list of [`Step`]s, each
//! one external command — then runs the plan, printing a timestamped header and the exact
//! command line before each step. Every step runs
//! even if an earlier one failed; a summary closes the run and the exit code is non-zero if any
//! step failed. A step can be marked to run only if every step before it succeeded (the
//! benchmark matrix never runs a stale binary after a failed build).
//!
//! `ci` is the single definition of what continuous integration checks: `.ci/run` only installs
//! the tools a fresh machine lacks and then calls `cargo xtask ci`.
//!
//! This file holds the command line and the dispatch from a subcommand to its plan; plans and
//! steps are in `plan`, running them in `runner`, and each subcommand's plan in a module named
//! after it (`bench`, `soak`, `ci` for `test` and `ci`, `loom`, `fuzz`, `release` for `msrv`,
//! `deny` and `semver`).

#![forbid(unsafe_code)]

mod bench;
mod ci;
mod fuzz;
mod loom;
mod plan;
mod release;
mod runner;
mod soak;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench::bench_plan;
use crate::ci::{ci_plan, run_tests};
use crate::fuzz::{FUZZ_SECS_DEFAULT, check_fuzz_tools, fuzz_run_steps, fuzz_targets};
use crate::loom::loom_steps;
use crate::plan::{Plan, Step};
use crate::release::{check_deny_tool, deny_all_step, msrv_step, semver_plan};
use crate::runner::Runner;
use crate::soak::{SOAK_KILLS, SOAK_LOSS, SOAK_MSGS, soak_plan};

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
    /// Run every check CI runs: fmt, cargo-deny (licenses, bans, sources), clippy, rustdoc,
    /// the MSRV build, tests, doctests, loom, fuzz smoke.
    Ci,
    /// Check the workspace with the minimum supported Rust version (`rust-version` in
    /// Cargo.toml; the toolchain must be installed).
    Msrv,
    /// Run every cargo-deny check of deny.toml, the RustSec advisories included (needs
    /// cargo-deny and network access to GitHub).
    Deny,
    /// Check the published crates' API against the last release (`v<version>` tag) with
    /// cargo-semver-checks; nothing to do before the first release.
    Semver {
        /// Compare with this git revision instead of the newest release tag.
        #[arg(long)]
        baseline: Option<String>,
    },
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
        Task::Msrv => Ok(Plan {
            steps: vec![msrv_step(root)?],
            ..Plan::default()
        }),
        Task::Deny => {
            check_deny_tool()?;
            Ok(Plan {
                steps: vec![deny_all_step()],
                ..Plan::default()
            })
        }
        Task::Semver { baseline } => semver_plan(root, baseline.as_deref()),
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

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(PathBuf::from(dir)),
        None => root.join("target"),
    }
}
