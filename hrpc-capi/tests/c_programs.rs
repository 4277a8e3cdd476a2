//! The C and C++ programs, compiled with the system compiler against `hrpc.h` and
//! `libhrpc_capi.a`, run as separate processes on loopback: the original library's README
//! benchmark (unchanged), the C++ handle-API example, and an ordered sender/receiver pair
//! whose receiver is SIGKILLed and restarted on the same store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Proc, check_log, compile, crate_dir, free_port, ordered_program, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The seed's benchmark, compiled unchanged, runs against the library: the server reports a
/// nonzero rate, and both exit cleanly on SIGINT as the original does.
#[test]
fn seed_benchmark_compiles_unchanged_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("seed_bench");
    compile(
        &[crate_dir().join("examples/seed_bench.c")],
        &exe,
        false,
        &["-std=gnu99", "-O2"],
    );
    // The program binds port 5670, as the original does: wait for it to be free.
    let free = wait_until(Duration::from_secs(30), || {
        std::net::UdpSocket::bind("0.0.0.0:5670").is_ok()
    });
    assert!(free, "UDP port 5670 stayed busy for 30 s");
    let server_dir = dir.path().join("server");
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&server_dir).unwrap();
    std::fs::create_dir_all(&client_dir).unwrap();
    let run = |cwd: &Path, mode: &str| {
        std::process::Command::new(&exe)
            .arg(mode)
            .current_dir(cwd)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let server = run(&server_dir, "server");
    std::thread::sleep(Duration::from_millis(200));
    let client = run(&client_dir, "client");
    std::thread::sleep(Duration::from_secs(4));
    let mut outputs = Vec::new();
    for child in [client, server] {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
        let mut child = child;
        let done = wait_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !done {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(done && out.status.success(), "exit: {:?}", out.status);
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let server_out = &outputs[1];
    assert!(server_out.contains("app exit: signum=2"), "{server_out}");
    let best = server_out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        best >= 10_000,
        "server's best second: {best} op/s\n{server_out}"
    );
    assert!(server_dir.join("fmap.bin.server").exists());
}

/// The C++ handle-API example builds warning-free and delivers its messages in order.
#[test]
fn handle_api_example_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("handle_api");
    compile(
        &[crate_dir().join("examples/handle_api.cpp")],
        &exe,
        true,
        &["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"],
    );
    let port = free_port().to_string();
    let store = dir.path().join("stores");
    let out = std::process::Command::new(&exe)
        .args([port.as_str(), store.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("10000 of 10000 messages, in order"), "{text}");
}

/// A receiver written against the original API is SIGKILLed twice while messages stream in
/// and restarted on the same store: every message arrives, in order, and repeats are at most
/// one per kill (a message whose handler ran before the kill).
#[test]
fn receiver_killed_and_restarted_loses_nothing() {
    const COUNT: u64 = 200_000;
    const KILLS: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let exe = ordered_program(dir.path());
    let port = free_port().to_string();
    let log = dir.path().join("recv.log");
    let recv_args = ["recv", "recv-store", port.as_str(), log.to_str().unwrap()];
    let count = COUNT.to_string();
    let (mut receiver, _) = Proc::start(&exe, &recv_args, dir.path());
    // Paced (about 4 s in all), so both kills land in the middle of the stream however fast
    // the machine delivers.
    let (sender, ready) = Proc::start(
        &exe,
        &["send", "send-store", port.as_str(), count.as_str(), "50000"],
        dir.path(),
    );
    assert_eq!(ready, "ready 1");
    for k in 1..=KILLS {
        // Kill in the middle of the stream.
        let target = COUNT * k / (KILLS + 1);
        let reached = wait_until(Duration::from_secs(60), || {
            let c = check_log(&log);
            c.contiguous >= target || c.bad.is_some()
        });
        let c = check_log(&log);
        assert!(c.bad.is_none(), "out of order: {c:?}");
        assert!(reached, "stalled before {target}: {c:?}");
        receiver.kill();
        let seen = check_log(&log).contiguous;
        assert!(seen < COUNT, "the kill came after the last message");
        (receiver, _) = Proc::start(&exe, &recv_args, dir.path());
    }
    let complete = wait_until(Duration::from_secs(60), || {
        let c = check_log(&log);
        c.contiguous >= COUNT || c.bad.is_some()
    });
    let result = check_log(&log);
    drop(sender);
    drop(receiver);
    assert!(result.bad.is_none(), "out of order: {result:?}");
    assert!(complete, "incomplete: {result:?}");
    assert_eq!(result.contiguous, COUNT);
    assert!(result.repeats <= KILLS, "too many repeats: {result:?}");
}

/// The handle-API program in the crate README compiles warning-free as C99 and runs.
#[test]
fn readme_example_runs() {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).unwrap();
    let code = readme
        .split("```c\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("hrpc_node_open"))
        .expect("a C block using the handle API in README.md");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("readme.c");
    std::fs::write(&src, code).unwrap();
    let exe = dir.path().join("readme");
    compile(
        &[src],
        &exe,
        false,
        &["-std=c99", "-Wall", "-Wextra", "-Werror"],
    );
    let port = free_port().to_string();
    let out = std::process::Command::new(&exe)
        .args([port.as_str(), dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "from node 2, #1: hello\n");
}
