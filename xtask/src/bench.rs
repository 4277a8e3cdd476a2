//! `cargo xtask bench`: the whole-node benchmark matrix and the criterion micro-benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::plan::{Plan, Step};
use crate::target_dir;

/// Quick criterion settings used by `cargo xtask bench --micro` unless `--full` is given.
const CRITERION_QUICK: &[&str] = &["--warm-up-time", "1", "--measurement-time", "3"];

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

/// `cargo xtask bench`: by default the whole-node matrix: build `hrpc-bench` in release once,
/// then `hrpc-bench report` (its rows print as they finish; it writes
/// `target/hrpc-report/{report.md,throughput.svg,report.json}` and fails if a row failed or
/// lost, duplicated or corrupted a message). `--micro`: the criterion benches instead.
/// `--full`: 10 s rows, then the criterion benches with criterion's default times.
pub(crate) fn bench_plan(root: &Path, micro: bool, full: bool) -> Result<Plan, String> {
    let mut plan = Plan::default();
    if !micro {
        let report_dir = target_dir(root).join("hrpc-report");
        let (build, exe) = build_hrpc_bench(root);
        plan.steps.push(build);
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

/// The step that builds the `hrpc-bench` binary in release mode, and where it lands.
pub(crate) fn build_hrpc_bench(root: &Path) -> (Step, PathBuf) {
    let exe = target_dir(root).join("release/hrpc-bench");
    let step = Step::cargo(
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
    (step, exe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

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
}
