//! loom model of the send handle's hand-off to the poll thread and its wake-up.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!       cargo test -p hrpc-node --release --test loom`
//!
//! The model mirrors the driver: a sending thread publishes a message (the store commit),
//! then calls [`WakeFlag::notify`] and, when told to, signals the eventfd (an atomic counter
//! here). The poll thread drains the eventfd, [`WakeFlag::take`]s the flag, then looks for work.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_node::driver::WakeFlag;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::thread;

struct Shared {
    flag: WakeFlag,
    /// Messages published (each sender bumps it once; Relaxed: the flag must order it).
    published: AtomicU64,
    /// The eventfd counter.
    signals: AtomicUsize,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            flag: WakeFlag::new(),
            published: AtomicU64::new(0),
            signals: AtomicUsize::new(0),
        })
    }
}

fn send(s: &Shared) {
    s.published.fetch_add(1, Ordering::Relaxed);
    if s.flag.notify() {
        s.signals.fetch_add(1, Ordering::Relaxed);
    }
}

/// No lost wake-up: after one poll iteration (drain fd, take, look), every message the poller
/// did not see has a signal still pending on the fd, so its next wait returns at once.
/// Two senders race the poller in every interleaving loom finds.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let s = Shared::new();
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || send(&s))
            })
            .collect();
        // One poll iteration.
        s.signals.swap(0, Ordering::Relaxed);
        s.flag.take();
        let seen = s.published.load(Ordering::Relaxed);
        for t in senders {
            t.join().unwrap();
        }
        assert!(
            seen == 2 || s.signals.load(Ordering::Relaxed) > 0,
            "poller saw {seen} of 2 messages and no wake-up is pending"
        );
    });
}

/// Coalescing: any number of sends between two takes signal the fd exactly once.
#[test]
fn sends_coalesce_into_one_signal() {
    loom::model(|| {
        let s = Shared::new();
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || {
                    send(&s);
                    send(&s);
                })
            })
            .collect();
        for t in senders {
            t.join().unwrap();
        }
        assert_eq!(s.signals.load(Ordering::Relaxed), 1);
        assert!(s.flag.take());
        assert!(!s.flag.take());
    });
}

/// Re-arming: a send after the poller's take signals again, and the poller's second iteration
/// sees both messages when the first did not.
#[test]
fn rearms_after_take() {
    loom::model(|| {
        let s = Shared::new();
        send(&s);
        let s2 = s.clone();
        let t = thread::spawn(move || send(&s2));
        let mut seen = 0;
        let mut iterations = 0;
        // Poll iterations driven by signals, bounded.
        while iterations < 3 {
            let pending = s.signals.swap(0, Ordering::Relaxed);
            if pending == 0 && iterations > 0 {
                break;
            }
            s.flag.take();
            seen = s.published.load(Ordering::Relaxed);
            iterations += 1;
        }
        t.join().unwrap();
        assert!(
            seen == 2 || s.signals.load(Ordering::Relaxed) > 0,
            "saw {seen} of 2 with no pending signal"
        );
    });
}
