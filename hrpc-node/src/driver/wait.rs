//! Blocking wait on the socket and the waker without spinning: `ppoll(2)` with a
//! nanosecond timeout.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

/// What [`wait_fds`] saw ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The socket has datagrams (or an error) waiting.
    pub readable: bool,
    /// The socket has send-buffer space (only reported when asked for).
    pub writable: bool,
    /// The waker fd was signalled.
    pub woken: bool,
}

/// Blocks until `socket` is readable (or writable, when `want_write`), `waker` is signalled,
/// or `timeout` passes (`None` = no limit). An interrupted wait returns an empty [`Readiness`].
pub fn wait_fds(
    socket: BorrowedFd<'_>,
    want_write: bool,
    waker: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<Readiness> {
    let mut sock_events = PollFlags::POLLIN;
    if want_write {
        sock_events |= PollFlags::POLLOUT;
    }
    let placeholder = socket;
    let mut fds = [
        PollFd::new(socket, sock_events),
        PollFd::new(waker.unwrap_or(placeholder), PollFlags::POLLIN),
    ];
    let n = if waker.is_some() { 2 } else { 1 };
    let ts = timeout.map(TimeSpec::from);
    match ppoll(fds.get_mut(..n).unwrap_or_default(), ts, None) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(Readiness::default()),
        Err(e) => return Err(io::Error::from(e)),
    }
    let sock = fds[0].revents().unwrap_or(PollFlags::empty());
    let wake = if n == 2 {
        fds[1].revents().unwrap_or(PollFlags::empty())
    } else {
        PollFlags::empty()
    };
    Ok(Readiness {
        readable: sock.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP),
        writable: sock.contains(PollFlags::POLLOUT),
        woken: wake.contains(PollFlags::POLLIN),
    })
}
