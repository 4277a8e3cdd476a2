//! Release checks: the build on the minimum supported Rust version (`msrv`), the dependency
//! policy in deny.toml (`deny`), warning-free rustdoc, and API compatibility with the last
//! release (`semver`).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::plan::{Plan, Step};

/// The crates published to crates.io: the ones `semver` compares with the last release.
pub(crate) const PUBLISHED: &[&str] = &["hrpc-wire", "hrpc-store", "hrpc-node", "hrpc-capi"];

/// Release tags are `v<version>` (one version for the whole workspace).
const TAG_PATTERN: &str = "v[0-9]*";

/// The `rust-version` of `[workspace.package]` in the root Cargo.toml: the minimum supported
/// Rust version every crate inherits.
pub(crate) fn msrv(root: &Path) -> Result<String, String> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_workspace_rust_version(&text).ok_or_else(|| {
        format!(
            "no rust-version in [workspace.package] of {}",
            path.display()
        )
    })
}

fn parse_workspace_rust_version(manifest: &str) -> Option<String> {
    let doc = manifest.parse::<toml::Table>().ok()?;
    let version = doc
        .get("workspace")?
        .get("package")?
        .get("rust-version")?
        .as_str()?;
    (!version.is_empty()).then(|| version.to_owned())
}

fn cargo_works(args: &[&str]) -> bool {
    Command::new("cargo")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The workspace, every target, checked with the MSRV toolchain and the committed lock file.
/// The toolchain must be installed (`.ci/run` installs it; nothing is installed here).
pub(crate) fn msrv_step(root: &Path) -> Result<Step, String> {
    let version = msrv(root)?;
    let toolchain = format!("+{version}");
    if !cargo_works(&[&toolchain, "--version"]) {
        return Err(format!(
            "the MSRV check needs Rust {version}: \
             `rustup toolchain install {version} --profile minimal` (not installed)"
        ));
    }
    Ok(Step::cargo(
        format!("msrv (Rust {version})"),
        &[
            &toolchain,
            "check",
            "--workspace",
            "--all-targets",
            "--locked",
        ],
    ))
}

/// rustdoc with every warning an error (broken intra-doc links, bad code block attributes).
pub(crate) fn doc_step() -> Step {
    Step::cargo("doc", &["doc", "--no-deps", "--workspace"]).env("RUSTDOCFLAGS", "-D warnings")
}

/// The checks of deny.toml that need no network: licenses, bans (duplicate versions warn),
/// sources. Run by CI, without the dependency tree under each warning (`cargo xtask deny`
/// prints it).
pub(crate) fn deny_offline_step() -> Step {
    Step::cargo(
        "deny (licenses, bans, sources)",
        &[
            "deny",
            "check",
            "--hide-inclusion-graph",
            "licenses",
            "bans",
            "sources",
        ],
    )
}

/// Every check of deny.toml, advisories included (fetches the RustSec advisory database from
/// GitHub).
pub(crate) fn deny_all_step() -> Step {
    Step::cargo("deny", &["deny", "check"])
}

pub(crate) fn check_deny_tool() -> Result<(), String> {
    if cargo_works(&["deny", "--version"]) {
        Ok(())
    } else {
        Err("needs cargo-deny: `cargo install cargo-deny --locked` (not installed)".to_owned())
    }
}

/// The newest release tag (`v<version>`, highest version first), if there is one.
fn last_release_tag(root: &Path) -> Result<Option<String>, String> {
    let out = Command::new("git")
        .args(["tag", "--list", TAG_PATTERN, "--sort=-version:refname"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err("`git tag --list` failed".to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|t| !t.is_empty())
        .map(str::to_owned))
}

/// `cargo xtask semver`: the published crates' public API against `baseline` (a git revision),
/// or against the newest release tag. Before the first release there is nothing to compare
/// with: the plan is empty and says so.
pub(crate) fn semver_plan(root: &Path, baseline: Option<&str>) -> Result<Plan, String> {
    let baseline = match baseline {
        Some(rev) => rev.to_owned(),
        None => match last_release_tag(root)? {
            Some(tag) => tag,
            None => {
                return Ok(Plan {
                    notes: vec![
                        "no release tag (v<version>) yet: semver checks apply from the first \
                         release on; pass --baseline REV to compare with a revision anyway"
                            .to_owned(),
                    ],
                    ..Plan::default()
                });
            }
        },
    };
    if !cargo_works(&["semver-checks", "--version"]) {
        return Err(
            "needs cargo-semver-checks: `cargo install cargo-semver-checks --locked` \
             (not installed)"
                .to_owned(),
        );
    }
    let mut step = Step::cargo(
        format!("semver-checks against {baseline}"),
        &["semver-checks", "check-release"],
    );
    for krate in PUBLISHED {
        step = step.args(&["--package", krate]);
    }
    step = step.args(&["--baseline-rev", baseline.as_str()]);
    Ok(Plan {
        steps: vec![step],
        ..Plan::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_workspace_rust_version_only() {
        let manifest = "[package]\nrust-version = \"1.50\"\n\n[workspace.package]\n\
                        version = \"0.1.0\"\nrust-version = \"1.89\" # MSRV\n[other]\n";
        assert_eq!(
            parse_workspace_rust_version(manifest).as_deref(),
            Some("1.89")
        );
        assert_eq!(
            parse_workspace_rust_version("[package]\nrust-version = \"1.50\"\n"),
            None
        );
    }

    #[test]
    fn the_root_manifest_declares_an_msrv() {
        let root = crate::workspace_root();
        let v = msrv(&root).unwrap();
        assert!(v.split('.').all(|p| p.parse::<u32>().is_ok()), "{v}");
    }
}
