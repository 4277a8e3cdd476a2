//! Child processes for the kill tests: the test binary re-executed to run only its
//! `child_role` test, which reads its role from the environment.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Starts this test binary's `child_role` test with `envs` set; its stdout is discarded.
pub(crate) fn spawn_child_role(envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn().unwrap()
}

/// A loopback UDP address that was free a moment ago (for a child to bind, again and again
/// across restarts).
pub(crate) fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}
