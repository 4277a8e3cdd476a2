use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the store. Nothing read from disk or passed by a caller
/// panics; it becomes one of these.
///
/// Callers match on the variants they handle, and on [`StoreError::is_backpressure`] for
/// what a retry after acknowledgements can fix:
///
/// ```
/// use hrpc_store::{MIN_CAPACITY, Store, StoreConfig, StoreError};
///
/// let dir = tempfile::tempdir()?;
/// let cfg = StoreConfig { capacity_bytes: MIN_CAPACITY, ..StoreConfig::new(1) };
/// let store = Store::open(dir.path(), &cfg)?;
///
/// // One store per directory: a second open finds it locked.
/// match Store::open(dir.path(), &cfg) {
///     Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
///     other => panic!("expected Locked, got {other:?}"),
/// }
///
/// // A message that can never fit in 64 KiB is refused, and waiting would not help.
/// let producer = store.producer();
/// let e = producer.send(2, &vec![0; 100 << 10]).unwrap_err();
/// assert!(matches!(e, StoreError::TooLarge { len, .. } if len == 100 << 10));
/// assert!(!e.is_backpressure());
///
/// // Messages that fit, until the capacity is in use: backpressure.
/// let e = (0..100)
///     .find_map(|_| producer.send(2, &[0; 8 << 10]).err())
///     .expect("the store fills up");
/// assert!(matches!(e, StoreError::Full { .. }));
/// assert!(e.is_backpressure());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Store` in this process) holds the store's lock file. A
    /// closed store keeps its lock while an [`OutboundReservation`](crate::OutboundReservation)
    /// of it is still outstanding (it could still write into the files): the lock goes with the
    /// last of the two.
    #[error("store {path} is locked by another process or handle")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The file system is full: a new segment could not be reserved. Nothing was changed.
    /// Backpressure: space comes back when messages are acknowledged or consumed.
    #[error("no space left on device for the store")]
    NoSpace,
    /// The configured `capacity_bytes` would be exceeded. Nothing was changed.
    /// Backpressure: returned only for a message that fits the capacity once messages in use
    /// are acknowledged or consumed (one that never could is [`StoreError::TooLarge`]).
    #[error("store capacity exhausted: {used} + {requested} > {capacity} bytes")]
    Full {
        /// Slot bytes in use.
        used: u64,
        /// Slot bytes requested.
        requested: u64,
        /// Configured capacity.
        capacity: u64,
    },
    /// The message can never be stored: it is larger than [`crate::MAX_MESSAGE_LEN`], or its
    /// slot would be larger than the configured `capacity_bytes`. Not backpressure: retrying
    /// cannot help. Nothing was changed.
    #[error("message of {len} bytes exceeds the maximum of {max} this store can ever hold")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// The largest payload this store can ever hold: [`crate::MAX_MESSAGE_LEN`], or less
        /// when `capacity_bytes` is smaller than that message's slot.
        max: usize,
    },
    /// `capacity_bytes` is below [`crate::MIN_CAPACITY`]: no useful store could work with it.
    #[error("store capacity of {capacity} bytes is below the minimum of {min} bytes")]
    CapacityTooSmall {
        /// The configured capacity.
        capacity: u64,
        /// The minimum ([`crate::MIN_CAPACITY`]).
        min: u64,
    },
    /// Unrecoverable damage (superblock, segment header, truncated metadata).
    #[error("store file {file} is corrupt: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store belongs to another node id.
    #[error("store belongs to node {stored}, not {requested}")]
    NodeIdMismatch {
        /// Node id in the superblock.
        stored: u32,
        /// Node id in the config.
        requested: u32,
    },
    /// All peer record entries are in use (`max_peers`, fixed at creation).
    #[error("too many peers (the store was created with max_peers = {max})")]
    TooManyPeers {
        /// Entries in the peer table.
        max: u32,
    },
    /// A sequence number that does not fit the peer's state (see `reason`).
    #[error("bad sequence number {seq} for peer {peer}: {reason}")]
    BadSeq {
        /// Peer node id.
        peer: u32,
        /// Offending sequence number.
        seq: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An assembled inbound message does not match its declared crc32c (the slot was freed).
    #[error(
        "inbound message {seq} from peer {peer}: crc32c {actual:#010x} != declared {declared:#010x}"
    )]
    ChecksumMismatch {
        /// Peer node id.
        peer: u32,
        /// Sequence number.
        seq: u64,
        /// Declared checksum.
        declared: u32,
        /// Checksum of the bytes written.
        actual: u32,
    },
    /// A fragment write outside the declared message length.
    #[error("write of {len} bytes at offset {offset} outside a {msg_len}-byte message")]
    OutOfBounds {
        /// Write offset.
        offset: u32,
        /// Write length.
        len: usize,
        /// Declared message length.
        msg_len: u32,
    },
    /// An [`crate::InboundSlot`] used with a store that did not create it.
    #[error("inbound slot belongs to another store instance")]
    WrongStore,
    /// Invalid configuration.
    #[error("invalid store configuration: {0}")]
    Config(&'static str),
    /// The store's files were damaged while it was closed (cut short, overwritten, a stale
    /// copy): messages may be lost. Nothing was changed. Open with
    /// `StoreConfig::recover_damaged` to open anyway and learn what was lost.
    #[error(
        "store file {file} is damaged at offset {offset}: {what} ({problems} problem(s) found)"
    )]
    Damaged {
        /// The file of the first problem found.
        file: PathBuf,
        /// Byte offset of that problem in the file.
        offset: u64,
        /// What is wrong there.
        what: String,
        /// Problems found in all.
        problems: usize,
    },
    /// The store was closed (its [`Store`](crate::Store) dropped, or
    /// [`Store::close_producers`](crate::Store::close_producers) called): producers can no
    /// longer reserve or commit. A reservation whose commit gets this published nothing; its
    /// slot is released.
    #[error("store is closed")]
    Closed,
    /// Backpressure: this many messages to the peer are committed and not acknowledged, or
    /// being reserved, which is the limit given to
    /// [`OutboundProducer::reserve_within`](crate::OutboundProducer::reserve_within). Nothing
    /// was changed.
    #[error(
        "peer {peer} has {unacked} unacknowledged messages of {unacked_bytes} bytes (limit reached)"
    )]
    WindowFull {
        /// Peer node id.
        peer: u32,
        /// Messages committed and not yet acknowledged, plus reservations in progress.
        unacked: u64,
        /// Their payload bytes.
        unacked_bytes: u64,
    },
    /// A previous `sync` failed; the store refuses all further work until it is reopened.
    /// The failure (which file, what the OS said) is the [`source`](std::error::Error::source).
    #[error("store stopped after a sync failure")]
    Stopped(#[source] Arc<io::Error>),
    /// An I/O operation on one of the store's files failed. Displays as `"{op} {path}"`; what
    /// the OS said is the [`source`](std::error::Error::source), so a chain printed the
    /// usual way reads e.g. `open segment /x/seg-000003: Permission denied`.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done, e.g. `"open segment"`, `"lock"`, `"create store directory"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// A [`StoreError::Io`] for `op` on `path`, for `map_err`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True for the backpressure kinds ([`StoreError::Full`], [`StoreError::NoSpace`],
    /// [`StoreError::WindowFull`]): the space comes back once peers acknowledge (or the
    /// application consumes) messages, so retrying later can succeed. Every other error is not
    /// cured by waiting.
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. } | StoreError::NoSpace | StoreError::WindowFull { .. }
        )
    }
}
