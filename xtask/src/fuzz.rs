//! `cargo xtask fuzz`: the cargo-fuzz targets listed in fuzz/Cargo.toml.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::plan::Step;

/// Seconds each fuzz target runs for in `cargo xtask fuzz` (default) and in `ci`.
pub(crate) const FUZZ_SECS_DEFAULT: u64 = 30;

/// cargo-fuzz and a nightly toolchain must both be present; nothing is installed here.
pub(crate) fn check_fuzz_tools() -> Result<(), String> {
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
pub(crate) fn fuzz_targets(root: &Path) -> Result<Vec<String>, String> {
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
    let Ok(doc) = manifest.parse::<toml::Table>() else {
        return Vec::new();
    };
    doc.get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name")?.as_str())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One `cargo +nightly fuzz run` per target. The corpus is `fuzz/corpus/<target>` (created if
/// missing, where libFuzzer writes new inputs); `fuzz/regressions/<target>/`, if present, is
/// passed as a second corpus directory, which libFuzzer only reads: kept crash inputs are replayed
/// first and never modified.
pub(crate) fn fuzz_run_steps(root: &Path, targets: &[String], secs: u64) -> Vec<Step> {
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
}
