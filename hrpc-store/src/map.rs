//! Memory-mapped files: the only module of hrpc-store containing `unsafe`.
//!
//! # Soundness argument
//!
//! A [`MappedFile`] maps a whole file `MAP_SHARED` read+write with memmap2's `MmapRaw`, which
//! never creates references on its own. This module turns raw pointers into references under
//! these invariants, which the rest of the crate upholds (they are restated in `docs/design.md`):
//!
//! * **M1 (no outside writers).** No other process maps or writes the store's files while the
//!   store is open. Enforced for cooperating processes by the exclusive `flock` on `LOCK` taken
//!   before any file is mapped, and released only once nothing in this process can write into
//!   the mappings any more: the `Store` is dropped *and* no outbound reservation (which may
//!   still be writing its payload) is outstanding; a reservation's commit after the close is
//!   refused. *Users must not truncate, edit or copy over the files of an open store*
//!   (documented on [`crate::Store::open`]).
//! * **M2 (length checked).** A file is mapped only after checking that it is at least as long as
//!   the mapping, and a mapped file is never shortened by the store, so no access can fault
//!   (SIGBUS). Space is reserved with `fallocate` before mapping, so writes never hit a full
//!   disk. (Reclaim deletes a segment file only together with unmapping it, M6.)
//! * **M3 (mapping lifetime).** Mappings are never remapped while the store is open: growth adds
//!   new files. References handed out borrow the `MappedFile`. The meta mapping lives as long as
//!   the store; a segment mapping lives until its [`SegCell`] is emptied (M6).
//! * **M4 (state words are atomic-only).** The first 8 bytes of every slot (its state word) are
//!   accessed only through [`MappedFile::word`]; byte copies ([`MappedFile::read`],
//!   [`MappedFile::write`], [`MappedFile::bytes`], [`MappedFile::bytes_mut`]) never cover them.
//! * **M5 (slot ownership).** A slot's header and payload bytes are written only by the unique
//!   owner of a claim (a slot index popped from a free list under the store mutex), and only
//!   before it is published. A published slot is never written until it is freed, and freeing
//!   needs `&mut Store`, so no `&[u8]` returned by [`MappedFile::bytes`] (which borrows `&Store`)
//!   can be alive when a slot is freed and re-claimed. Metadata (superblock, peer records) is
//!   written only under the store mutex and read only under it or during `open`.
//! * **M6 (segment removal).** A segment leaves its [`SegCell`] (and is unmapped) only through
//!   [`SegCell::take`], which the store calls only (a) from `Store::maintain` — holding
//!   `&mut Store` and the store mutex — for a segment all of whose slots are on the free list,
//!   after removing them from it. So no slot of it is claimed (a producer thread dereferences
//!   only segments of slots it claimed, M5) or published (a `&[u8]` into it would borrow
//!   `&Store`, excluded by `&mut Store`), and nothing can claim one of its slots afterwards: no
//!   reference obtained through [`SegCell::get`] is alive or can be created for it. The cell's
//!   index may then be filled again by a new segment ([`SegCell::set`], under the mutex). Or
//!   (b) when the store's files are released, under the mutex: the `Store` is dropped (no
//!   `&Store` borrow exists), no outbound reservation is outstanding (no producer holds a
//!   claimed slot), and the store is closed (set under the mutex; every later claim is
//!   refused), so again no reference into any segment is alive or can be created.
//!
//! Bounds (M2) are checked here with `assert!`: offsets come from the crate's own arithmetic on
//! validated headers, so a failure is a bug in hrpc-store, never a reaction to disk contents.
#![allow(unsafe_code)] // the one module that maps files

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicPtr;

use memmap2::{MmapOptions, MmapRaw};

use crate::StoreError;
use crate::sync::{AtomicU64, Ordering};

/// A whole file mapped shared, read+write.
#[derive(Debug)]
pub(crate) struct MappedFile {
    map: MmapRaw,
    len: usize,
    /// The file, for error messages.
    path: PathBuf,
    /// Under loom, state words live in loom atomics (loom cannot model atomics it did not create).
    /// One per 8 bytes; only used for segment files, which are tiny in loom tests.
    #[cfg(loom)]
    words: Box<[AtomicU64]>,
}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (at `path`) after checking (M2) that the file is
    /// that long.
    pub(crate) fn map(
        file: &File,
        path: &Path,
        len: usize,
        populate: bool,
        atomics: bool,
    ) -> Result<Self, StoreError> {
        let file_len = file.metadata().map_err(StoreError::io("stat", path))?.len();
        if len == 0 || file_len < len as u64 {
            return Err(StoreError::io("map", path)(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is {file_len} bytes, cannot map {len}"),
            )));
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        let map = opts.map_raw(file).map_err(StoreError::io("map", path))?;
        let _ = atomics;
        Ok(Self {
            #[cfg(loom)]
            words: (0..if atomics { len / 8 } else { 0 })
                .map(|i| {
                    let mut b = [0u8; 8];
                    // SAFETY: i*8+8 <= len, the mapping is live and nothing else accesses it yet.
                    unsafe {
                        std::ptr::copy_nonoverlapping(map.as_ptr().add(i * 8), b.as_mut_ptr(), 8)
                    };
                    AtomicU64::new(u64::from_le_bytes(b))
                })
                .collect(),
            map,
            len,
            path: path.to_path_buf(),
        })
    }

    #[inline]
    fn check(&self, off: usize, len: usize) {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            out_of_bounds(off, len, self.len);
        }
    }

    /// The atomic state word at `off` (8-aligned). See M4.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8);
        assert!(
            off.is_multiple_of(8),
            "hrpc-store bug: unaligned state word"
        );
        // SAFETY: in bounds (checked), 8-aligned (the mapping base is page-aligned and `off` is a
        // multiple of 8), valid for the lifetime of `&self` (M3), and per M4 these 8 bytes are
        // only ever accessed atomically in this process; M1 excludes other processes.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(off).cast::<u64>()) }
    }

    /// The atomic state word at `off` (8-aligned). See M4. (loom: a side-table atomic.)
    #[cfg(loom)]
    #[inline]
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8);
        &self.words[off / 8]
    }

    /// Copies `buf.len()` bytes at `off` out of the mapping.
    #[inline]
    pub(crate) fn read(&self, off: usize, buf: &mut [u8]) {
        self.check(off, buf.len());
        // SAFETY: in bounds (checked) of a live mapping (M3); per M5 nobody writes these bytes
        // concurrently; `buf` is a distinct Rust allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
    }

    /// Copies `data` into the mapping at `off`.
    #[inline]
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        // SAFETY: in bounds (checked) of a live, writable mapping (M3); per M5 the caller owns
        // these bytes exclusively (claimed slot or metadata under the mutex) and no reference to
        // them exists; `data` cannot alias the mapping's writable range it is copied into because
        // the only references into the mapping are to published, immutable slots (M5).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(off), data.len())
        };
    }

    /// Shared view of `len` bytes at `off` (a published payload, or anything during `open`).
    #[inline]
    pub(crate) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len);
        // SAFETY: in bounds (checked), live for `&self` (M3); per M5 the bytes are not written
        // while the returned borrow (tied to `&Store`) exists.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off), len) }
    }

    /// Exclusive view of `len` bytes at `off` (the payload area of a slot the caller has claimed).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        self.check(off, len);
        // SAFETY: in bounds (checked), live (M3); per M5 the caller is the unique owner of the
        // claimed slot, the returned borrow is tied to that ownership (a `&mut` reservation), and
        // no other reference to these bytes exists until the slot is published.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(off), len) }
    }

    /// `msync(MS_SYNC)` of the pages covering `off..off+len`. An error names the file: it is an
    /// `io::Error` (same kind) whose message is `msync <path>` and whose source is the OS error.
    pub(crate) fn flush(&self, off: usize, len: usize) -> io::Result<()> {
        self.check(off, len);
        if len == 0 {
            return Ok(());
        }
        self.map
            .flush_range(off, len)
            .map_err(|e| io::Error::new(e.kind(), StoreError::io("msync", &self.path)(e)))
    }
}

/// One entry of the segment table: empty, or one mapped segment, readable without a lock
/// ([`SegCell::get`] is one `Acquire` load). Filled by [`SegCell::set`] and emptied by
/// [`SegCell::take`] under the store mutex; see M6 for why `take` frees nothing in use.
pub(crate) struct SegCell<T> {
    ptr: AtomicPtr<T>,
    /// Owns a `Box<T>` (drop, and `Send`/`Sync` only when `T` is).
    _owns: PhantomData<Box<T>>,
}

impl<T> SegCell<T> {
    /// An empty cell.
    pub(crate) fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// The value, if the cell is filled.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer was produced by `Box::into_raw` in `set` (published with
        // Release, read with Acquire, so the value is fully initialised) and is freed only by
        // `take`, which per M6 runs only when no reference returned here is alive or can be
        // created for this value; so the borrow (tied to `&self`) never outlives the value.
        Some(unsafe { &*p })
    }

    /// Fills an empty cell; gives `v` back if it is filled.
    pub(crate) fn set(&self, v: T) -> Result<(), T> {
        let p = Box::into_raw(Box::new(v));
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            // SAFETY: `p` came from `Box::into_raw` just above and was not published (the
            // exchange failed), so this is its only owner.
            Err(_) => Err(*unsafe { Box::from_raw(p) }),
        }
    }

    /// Empties the cell, returning the value (dropping it unmaps a segment). Only under the
    /// conditions of M6.
    pub(crate) fn take(&self) -> Option<T> {
        let p = self.ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from `Box::into_raw` in `set`; the swap made this call its only
        // owner (no other `take` or drop can see it), and per M6 no reference from `get` to it
        // is alive or can be created.
        Some(*unsafe { Box::from_raw(p) })
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SegCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SegCell").field(&self.get()).finish()
    }
}

impl<T> Drop for SegCell<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// The panic of a bounds check that failed (a store bug), kept out of the inlined check.
#[cold]
#[inline(never)]
fn out_of_bounds(off: usize, len: usize, map_len: usize) -> ! {
    panic!("hrpc-store bug: access {off}+{len} outside mapping of {map_len}")
}
