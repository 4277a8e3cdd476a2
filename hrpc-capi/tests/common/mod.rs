//! Helpers for the tests that build C and C++ programs against `hrpc.h` and the built library:
//! finding (or building) `libhrpc_capi.a`, compiling, free loopback ports, child processes
//! that are killed when dropped, and the kill tests' order check.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The profile directory the test binary was built into (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// `libhrpc_capi.a`, built by cargo alongside this test: the library's crate types include
/// staticlib, so building it for the test writes `target/<profile>/deps/libhrpc_capi.a`
/// (`cargo build` copies it up to `target/<profile>/`). The newer of the two is used. If
/// neither exists, it is built here with the same profile.
pub fn static_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let newest = [dir.join("deps/libhrpc_capi.a"), dir.join("libhrpc_capi.a")]
            .into_iter()
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p);
        let lib = newest.unwrap_or_else(|| dir.join("libhrpc_capi.a"));
        if !lib.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "hrpc-capi", "--lib"]);
            match profile {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            if let Some(target) = dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target);
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p hrpc-capi failed");
        }
        assert!(lib.exists(), "{} not found", lib.display());
        lib
    })
}

/// Libraries a Rust static library needs when linked into a C program.
pub const SYSTEM_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm", "-lrt"];

/// Compiles `sources` into `out` with gcc (or g++ for C++), `hrpc.h` on the include path,
/// linked statically against the library. Panics with the compiler's output on failure.
pub fn compile(sources: &[PathBuf], out: &Path, cpp: bool, flags: &[&str]) {
    let compiler = if cpp { "g++" } else { "gcc" };
    let output = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("examples"))
        .args(sources)
        .arg(static_lib())
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed for {sources:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The order-checking program (`tests/c/ordered.c`), compiled once per test binary into `dir`.
pub fn ordered_program(dir: &Path) -> PathBuf {
    let out = dir.join("ordered");
    compile(
        &[crate_dir().join("tests/c/ordered.c")],
        &out,
        false,
        &[
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
        ],
    );
    out
}

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// A child process SIGKILLed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Starts `program args` in `cwd` and waits (up to 10 s) for its first stdout line.
    pub fn start(program: &Path, args: &[&str], cwd: &Path) -> (Proc, String) {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(10));
        let mut p = Proc { child };
        let first = match first {
            Ok(l) => l,
            Err(_) => {
                let status = p.child.try_wait().ok().flatten();
                panic!(
                    "{} {args:?} printed nothing (status {status:?})",
                    program.display()
                );
            }
        };
        (p, first)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver's log shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// Every number 1..=contiguous was seen, in order.
    pub contiguous: u64,
    /// Lines that repeat the number before them (a redelivery after a kill).
    pub repeats: u64,
    /// The first line that is neither the next number nor a repeat, if any.
    pub bad: Option<String>,
}

/// Reads the receiver's log: numbers must count up from 1 by one, a line may repeat the one
/// before it (redelivery), nothing else.
pub fn check_log(path: &Path) -> LogCheck {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut c = LogCheck::default();
    for line in text.lines() {
        match line.parse::<u64>() {
            Ok(n) if n == c.contiguous + 1 => c.contiguous = n,
            Ok(n) if n == c.contiguous && n > 0 => c.repeats += 1,
            _ => {
                c.bad = Some(format!("{line:?} after {}", c.contiguous));
                break;
            }
        }
    }
    c
}

/// Polls `f` every 5 ms until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}
