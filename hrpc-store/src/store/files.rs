//! Creating the store's files: a new file is fully allocated (`fallocate`, so a full disk
//! is an error at creation and never a SIGBUS later), gets its header, and is renamed into
//! place; directory changes are made durable with [`fsync_dir`].

use super::Result;
use crate::error::StoreError;
use std::fs;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(super) fn corrupt(file: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

pub(super) fn fallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => Err(StoreError::NoSpace),
        Err(e) => Err(StoreError::io("fallocate", path)(e.into())),
    }
}

pub(super) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

pub(super) fn create_file(path: &Path, len: u64, header: &[u8], sync: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    let res = (|| -> Result<()> {
        fallocate(&file, path, len)?;
        file.write_all_at(header, 0)
            .map_err(StoreError::io("write header of", path))?;
        if sync {
            file.sync_all().map_err(StoreError::io("fsync", path))?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}
