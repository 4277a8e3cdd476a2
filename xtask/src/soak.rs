//! `cargo xtask soak`: the long kill-and-restart soak of `hrpc-bench soak`.

use std::path::Path;

use crate::plan::{Plan, Step};

/// `cargo xtask soak` defaults: messages (both directions together), kills, relay loss %.
pub(crate) const SOAK_MSGS: u64 = 2_000_000;
pub(crate) const SOAK_KILLS: u32 = 1000;
pub(crate) const SOAK_LOSS: f64 = 5.0;

/// `cargo xtask soak`: build `hrpc-bench` in release, then `hrpc-bench soak … --json` (its
/// last line is the JSON result; it exits non-zero unless the run was clean).
pub(crate) fn soak_plan(
    root: &Path,
    msgs: u64,
    kills: u32,
    loss: f64,
    seed: u64,
    durable: bool,
) -> Plan {
    let (build, exe) = crate::bench::build_hrpc_bench(root);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

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
}
