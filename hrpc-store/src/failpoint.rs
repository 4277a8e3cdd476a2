//! Fail points for the crash tests.
//!
//! With the `testing` feature, `HRPC_STORE_FAILPOINT=name[:n]` (read once, when a store is
//! opened) makes the process abort (`std::process::abort`, as abrupt as SIGKILL for the page
//! cache) the `n`-th time (default 1) execution reaches the named point. When the variable is
//! unset the only cost is one relaxed load of a static flag. The names are listed in `NAMES`.
//!
//! Without the feature (every normal build) the environment is never read and each fail point
//! compiles to nothing.

#[cfg(feature = "testing")]
pub use self::armed::NAMES;
#[cfg(feature = "testing")]
pub(crate) use self::armed::{fires, init};

#[cfg(feature = "testing")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Every fail point name the store checks.
    pub const NAMES: &[&str] = &[
        "reserve.after_claim",
        "commit.before_lock",
        "commit.before_publish",
        "commit.after_publish",
        "release.after_record",
        "release.mid_free",
        "consume.after_record",
        "inbound.before_publish",
        "record.torn",
        "reset.after_record",
        "segment.before_rename",
        "discard.after_marker",
    ];

    static ARMED: AtomicBool = AtomicBool::new(false);
    static HITS: AtomicU64 = AtomicU64::new(0);
    static CONFIG: OnceLock<Option<(String, u64)>> = OnceLock::new();

    /// Reads `HRPC_STORE_FAILPOINT` (once per process).
    pub(crate) fn init() {
        let cfg = CONFIG.get_or_init(|| {
            let v = std::env::var("HRPC_STORE_FAILPOINT").ok()?;
            let (name, n) = match v.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                None => (v, 1),
            };
            Some((name, n.max(1)))
        });
        if cfg.is_some() {
            ARMED.store(true, Ordering::Relaxed);
        }
    }

    /// True if the point `name` fires now (counts the hit).
    #[inline]
    pub(crate) fn fires(name: &str) -> bool {
        if !ARMED.load(Ordering::Relaxed) {
            return false;
        }
        fires_slow(name)
    }

    #[cold]
    fn fires_slow(name: &str) -> bool {
        match CONFIG.get() {
            Some(Some((n, count))) if n == name => {
                HITS.fetch_add(1, Ordering::Relaxed) + 1 == *count
            }
            _ => false,
        }
    }
}

/// Without the `testing` feature: nothing to read.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub(crate) fn init() {}

/// Without the `testing` feature: never fires.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub(crate) fn fires(_name: &str) -> bool {
    false
}

/// Aborts the process if the point `name` fires.
#[inline]
pub(crate) fn hit(name: &str) {
    if fires(name) {
        die(name);
    }
}

/// Aborts the process (after a fail point fired).
#[cold]
pub(crate) fn die(name: &str) -> ! {
    tracing::warn!(failpoint = name, "fail point fired: aborting");
    std::process::abort()
}
