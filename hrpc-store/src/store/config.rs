//! Configuration for [`Store::open`](super::Store::open): [`StoreConfig`] and the crash
//! model it selects, [`Durability`].

#[cfg(doc)]
use super::Store;
#[cfg(doc)]
use crate::StoreError;
/// How much a committed message survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the process being killed at any instruction (SIGKILL, abort, panic), not an OS
    /// crash or power loss. No syscalls on the message path; [`Store::sync`] is a no-op.
    #[default]
    Process,
    /// Additionally survives OS crash / power loss for everything committed before the last
    /// successful [`Store::sync`] (a group commit: `msync` of what changed since the last one).
    Sync,
}

/// Configuration for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This node's id. Stored in the superblock at creation; a mismatch on reopen is an error.
    pub node_id: u32,
    /// Crash model to honour.
    pub durability: Durability,
    /// Limit on slot bytes (64-byte header + payload, rounded up to the slot size class) in use;
    /// [`StoreError::Full`] beyond (backpressure). A message whose slot alone exceeds it is
    /// [`StoreError::TooLarge`]. At least [`crate::MIN_CAPACITY`] (64 KiB), else
    /// [`Store::open`] fails with [`StoreError::CapacityTooSmall`]. Default 1 GiB.
    pub capacity_bytes: u64,
    /// Peer table size, fixed when the store is created (ignored on reopen). Default 1024;
    /// costs 192 bytes of disk per entry.
    pub max_peers: u32,
    /// Open a store whose files were damaged while it was closed (cut short, overwritten,
    /// replaced by a stale copy). Default `false`: [`Store::open`] fails with
    /// [`StoreError::Damaged`] naming the file, the offset and what is wrong, and changes
    /// nothing. `true`: it opens anyway, and [`Store::open_report`] says what was found and
    /// which outbound seqs of which peers were lost (gap markers then tell the peers).
    pub recover_damaged: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            durability: Durability::Process,
            capacity_bytes: 1 << 30,
            max_peers: 1024,
            recover_damaged: false,
        }
    }
}

impl StoreConfig {
    /// Default configuration for `node_id`.
    pub fn new(node_id: u32) -> Self {
        Self {
            node_id,
            ..Self::default()
        }
    }
}
