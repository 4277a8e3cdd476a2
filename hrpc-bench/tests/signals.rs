//! `hrpc-bench server` and `client` (the C library's benchmark) print `N op/s, K kb/s` each
//! second, actually move messages, and exit with status 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills the child if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Guard, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hrpc-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hrpc-bench");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Guard(child), rx)
}

/// Parses `N op/s, K kb/s`.
fn parse_rate(line: &str) -> Option<(u64, u64)> {
    let (ops, kb) = line.split_once(" op/s, ")?;
    Some((ops.parse().ok()?, kb.strip_suffix(" kb/s")?.parse().ok()?))
}

/// Waits for a rate line with a nonzero count.
fn busy_line(rx: &Receiver<String>, who: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let rate = parse_rate(&line).unwrap_or_else(|| panic!("{who}: unexpected line {line:?}"));
        if rate.0 > 0 {
            return rate;
        }
    }
    panic!("{who} printed no nonzero rate line in time");
}

fn terminate(mut g: Guard, who: &str) {
    kill(Pid::from_raw(g.0.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = g.0.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0), "{who} exit status after SIGTERM");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn server_and_client_report_rates_and_exit_zero_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server_store = tmp.path().join("server").display().to_string();
    let client_store = tmp.path().join("client").display().to_string();
    let (server, server_rx) = spawn(&[
        "server",
        "--store",
        &server_store,
        "--node",
        "1",
        "--bind",
        &addr,
        "--max-secs",
        "30",
    ]);
    let peer = format!("1={addr}");
    let (client, client_rx) = spawn(&[
        "client",
        "--store",
        &client_store,
        "--node",
        "2",
        "--peer",
        &peer,
        "--size",
        "100",
        "--max-secs",
        "30",
    ]);
    let (ops, kb) = busy_line(&client_rx, "client");
    assert!(
        kb > 0 && kb <= ops * 100 / 1024 + 1,
        "client: {ops} op/s, {kb} kb/s"
    );
    let (ops, _) = busy_line(&server_rx, "server");
    assert!(ops > 1000, "server received only {ops} op/s");
    terminate(client, "client");
    terminate(server, "server");
}
