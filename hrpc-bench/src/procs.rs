//! Process plumbing for the benchmarks: signal flags, peak RSS, a system-wide clock, child
//! processes that cannot outlive their parent or a deadline, and the `KEY payload` lines
//! children report on stdout.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// 127.0.0.1 port 0: an ephemeral loopback port, where every node, socket and relay of the
/// benchmarks binds.
pub const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Any error as an [`io::Error`], the error type of every benchmark.
pub fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A flag set when SIGINT or SIGTERM arrives (the signal no longer kills the process).
pub fn signal_flag() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// Asks the kernel to SIGKILL this process when its parent dies (children of `pair` and
/// `report` call it first thing), and raises the open-file limit to its hard maximum (a
/// thousand nodes need several thousand descriptors).
pub fn child_setup() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    raise_fd_limit();
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// This process's peak resident set size in KiB (`VmHWM` of `/proc/self/status`; 0 if
/// unreadable).
pub fn peak_rss_kb() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the machine, so a
/// sender's start and a receiver's last delivery can be compared.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A child process of this same binary whose stdout lines are read by a thread. Killed (and
/// reaped) when dropped, so no child outlives a failed run.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl ChildProc {
    /// Starts `current_exe() args...` with piped stdin and stdout; stderr is inherited.
    pub fn spawn(name: &str, args: &[String]) -> io::Result<ChildProc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("child has no stdout"))?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(ChildProc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
        })
    }

    /// Waits until the child prints a line `KEY rest` and returns `rest`; other lines are
    /// echoed to stderr. Fails if the deadline passes or the child exits first.
    pub fn expect_line(&mut self, key: &str, deadline: Instant) -> io::Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
                        return Ok(rest.to_owned());
                    }
                    eprintln!("[{}] {line}", self.name);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} did not report {key} in time", self.name),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    return Err(io::Error::other(format!(
                        "{} exited ({status}) before reporting {key}",
                        self.name
                    )));
                }
            }
        }
    }

    /// The next line the child printed, if one is waiting (never blocks).
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Whether the child has exited (and was reaped).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILLs the child and reaps it: when this returns, the process is gone and its
    /// sockets and locks are released.
    pub fn kill(mut self) -> io::Result<()> {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill()?;
        }
        self.child.wait().map(drop)
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// Waits up to `grace` for the child to exit by itself, then kills it. Returns whether it
    /// exited successfully on its own.
    pub fn finish(mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
