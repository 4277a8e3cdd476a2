//! Child processes for the kill tests: the test binary re-executed to run only its
//! `child_role` test, which reads its role from the environment.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The child's role; unset in a normal test run.
const ROLE: &str = "HRPC_CHILD_ROLE";
/// The directory the child works in.
const DIR: &str = "HRPC_CHILD_DIR";

/// Starts this test binary's `child_role` test as `role`, working in `dir`, with `envs` set
/// besides; its stdout is discarded.
pub(crate) fn spawn_child_role(role: &str, dir: &Path, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn().unwrap()
}

/// In a child started by [`spawn_child_role`]: its role and directory. `None` in a normal
/// test run, where `child_role` is to return at once.
pub(crate) fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE).ok()?;
    let dir = PathBuf::from(std::env::var_os(DIR).unwrap());
    Some((role, dir))
}

/// Opens `path` for appending records, creating it if need be.
pub(crate) fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// A loopback UDP address that was free a moment ago (for a child to bind, again and again
/// across restarts).
pub(crate) fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}
