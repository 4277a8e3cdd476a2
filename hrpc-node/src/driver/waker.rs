//! Cross-thread wake-up of the poll loop: a coalescing flag in front of an `eventfd`.
//!
//! A [`Sender`](super::Sender) on another thread commits a message to the store and then calls
//! [`Waker::wake`]. The first wake after the poll thread last [took](Waker::take) the flag writes
//! the eventfd (one syscall); every later wake until then only swaps an atomic. So N sends from
//! other threads cost at most one `write(2)` per poll iteration.
//!
//! The protocol, checked by loom in `tests/loom.rs`:
//! - sender: publish the work (the store commit, a Release store), then [`WakeFlag::notify`];
//!   when it returns `true`, signal the fd.
//! - poller: [`WakeFlag::take`], then look for work. Drain the fd whenever it is seen readable.
//!
//! No wake-up is lost: a `notify` that returns `false` read `true` with a read-modify-write, so
//! the poller's later `take` (also an RMW, Acquire) reads from it and sees the published work.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::sync::{AtomicBool, Ordering};

/// The coalescing part of the wake-up: one atomic flag, "a wake-up is pending".
///
/// Public so the loom test can check it; [`Waker`] is what the node uses.
#[derive(Debug)]
pub struct WakeFlag {
    pending: AtomicBool,
}

impl WakeFlag {
    /// A flag with no wake-up pending.
    pub fn new() -> Self {
        WakeFlag {
            pending: AtomicBool::new(false),
        }
    }

    /// Sending side, after publishing work: marks a wake-up as pending. Returns `true` when
    /// the flag was clear, i.e. when the caller must signal the poll thread (write the fd).
    pub fn notify(&self) -> bool {
        // An RMW, not a load: a plain load could read a stale `true` after the poller's `take`
        // and skip the signal (store-buffering); the RMW always reads the latest value.
        !self.pending.swap(true, Ordering::AcqRel)
    }

    /// Poll side, before looking for work: clears the flag and says whether a wake-up was
    /// pending. Work published before any `notify` that this `take` observed is visible.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

impl Default for WakeFlag {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Inner {
    flag: WakeFlag,
    fd: EventFd,
}

/// A cloneable, thread-safe handle that wakes the poll loop (an `eventfd` plus a [`WakeFlag`]).
#[derive(Debug, Clone)]
pub struct Waker {
    inner: Arc<Inner>,
}

impl Waker {
    /// Creates the eventfd (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Self> {
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Waker {
            inner: Arc::new(Inner {
                flag: WakeFlag::new(),
                fd,
            }),
        })
    }

    /// Wakes the poll loop; costs a syscall only for the first call after the loop took the
    /// previous wake-up.
    pub fn wake(&self) -> io::Result<()> {
        if self.inner.flag.notify() {
            match self.inner.fd.write(1) {
                Ok(_) => {}
                // The counter is saturated: the fd is readable anyway.
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(())
    }

    /// Poll side: takes the pending wake-up (see [`WakeFlag::take`]).
    pub fn take(&self) -> bool {
        self.inner.flag.take()
    }

    /// Resets the eventfd's counter so it stops being readable. Call when a wait saw it ready.
    pub fn drain(&self) -> io::Result<()> {
        match self.inner.fd.read() {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// The eventfd, readable while a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    fn readable(w: &Waker) -> bool {
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
    }

    /// Many wakes between two takes signal the fd once; take then drain leaves it quiet, and
    /// the next wake signals again.
    #[test]
    fn wakes_coalesce_and_rearm() -> io::Result<()> {
        let w = Waker::new()?;
        assert!(!readable(&w));
        for _ in 0..100 {
            w.wake()?;
        }
        assert!(readable(&w));
        assert!(w.take());
        w.drain()?;
        assert!(!readable(&w));
        assert!(!w.take(), "no wake since the last take");
        w.clone().wake()?;
        assert!(readable(&w));
        assert!(w.take());
        Ok(())
    }
}
