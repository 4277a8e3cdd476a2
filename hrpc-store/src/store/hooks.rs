//! Test hooks: a callback told of every flushed byte range (the power-loss simulation
//! replays only what was flushed), and an injected sync failure. Hidden from the docs, not
//! used by the store itself, and compiled only with the `testing` feature: a release build
//! has no way to set them, so the flush hook slot stays empty.

#[cfg(feature = "testing")]
use super::Store;
use std::fmt;
#[cfg(feature = "testing")]
use std::io;
use std::path::Path;

/// Test hook called after each successful flush: `(file, offset, len)`.
type FlushHook = Box<dyn FnMut(&Path, u64, u64) + Send>;
pub(super) struct HookSlot(pub(super) Option<FlushHook>);
impl fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(hook)"
        } else {
            "None"
        })
    }
}

#[cfg(feature = "testing")]
impl Store {
    /// Test hook (power-loss simulation): `hook(file, offset, len)` is called after every
    /// successful flush of a byte range (segment creation reports the whole file).
    #[doc(hidden)]
    #[allow(clippy::type_complexity)]
    pub fn __set_flush_hook(&mut self, hook: Box<dyn FnMut(&Path, u64, u64) + Send>) {
        self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(hook);
    }

    /// Test hook: simulate a sync failure (makes the store stopped, as a failed msync would).
    #[doc(hidden)]
    pub fn __inject_sync_error(&mut self) {
        let _ = self
            .shared
            .stopped
            .set(std::sync::Arc::new(io::Error::other("injected")));
    }
}
