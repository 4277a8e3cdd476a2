//! `cargo xtask test` and `cargo xtask ci`: the test command and the single definition of
//! what continuous integration checks.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::fuzz::{FUZZ_SECS_DEFAULT, check_fuzz_tools, fuzz_run_steps, fuzz_targets};
use crate::loom::loom_steps;
use crate::plan::{Plan, Step};
use crate::release::{check_deny_tool, deny_offline_step, doc_step, msrv_step};
use crate::runner::Runner;

/// Optional features the tests build with: hrpc-node's `metrics` and `tokio` (their tests,
/// `hrpc-node/tests/metrics.rs` and `async_node.rs`, require them). Every test command uses
/// the same set, so the workspace is built once. Keep README.md ("Development") in sync.
const FEATURES: &str = "--features=hrpc-node/metrics,hrpc-node/tokio";
/// The test command `cargo xtask test` and CI run. Keep README.md ("Development") in sync.
const TEST_ARGS: &[&str] = &["nextest", "run", "--workspace", "--release", FEATURES];
/// The doctests (nextest does not run them).
const DOCTEST_ARGS: &[&str] = &["test", "--workspace", "--release", "--doc", FEATURES];
/// What `cargo xtask test` runs when cargo-nextest cannot be installed.
const FALLBACK_TEST_ARGS: &[&str] = &["test", "--workspace", "--release", FEATURES];
/// The Prometheus example as a smoke check: two nodes for 2 s, then it scrapes itself and
/// fails if their metrics are missing.
const METRICS_EXAMPLE_ARGS: &[&str] = &[
    "run",
    "--release",
    "-p",
    "hrpc-node",
    FEATURES,
    "--example",
    "prometheus",
    "--",
    "0",
    "2",
];

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
pub(crate) fn run_tests(root: &Path) -> bool {
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
pub(crate) fn ci_plan(root: &Path) -> Result<Plan, String> {
    let mut plan = Plan::default();
    plan.steps
        .push(Step::cargo("fmt", &["fmt", "--all", "--", "--check"]));
    // The RustSec advisories need the advisory database from GitHub, which a CI machine may
    // not reach; they are `cargo xtask deny`.
    check_deny_tool()?;
    plan.steps.push(deny_offline_step());
    plan.steps.push(Step::cargo(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--release",
            FEATURES,
            "--",
            "-D",
            "warnings",
        ],
    ));
    // The optional features are off by default: hrpc-node must stay clean without them.
    plan.steps.push(Step::cargo(
        "clippy (hrpc-node, default features)",
        &[
            "clippy",
            "-p",
            "hrpc-node",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ],
    ));
    plan.steps.push(doc_step());
    plan.steps.push(msrv_step(root)?);
    // nextest prints its summary ("N tests run: N passed, ...") on stderr; it is repeated as
    // the run's closing line so the test count is what a reader of the log sees last.
    plan.steps
        .push(Step::cargo("tests", TEST_ARGS).keep_line("tests run:"));
    plan.steps.push(Step::cargo("doctests", DOCTEST_ARGS));
    plan.steps
        .push(Step::cargo("metrics example", METRICS_EXAMPLE_ARGS));
    plan.steps.extend(loom_steps(false));
    check_fuzz_tools()?;
    let targets = fuzz_targets(root)?;
    plan.steps
        .push(Step::cargo("fuzz build", &["+nightly", "fuzz", "build"]));
    plan.steps
        .extend(fuzz_run_steps(root, &targets, FUZZ_SECS_DEFAULT));
    Ok(plan)
}
