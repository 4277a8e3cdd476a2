//! Simulated power loss, for tests (the store's own and the node's
//! simulation). Not part of the API.
//!
//! [`track`] installs a flush hook that copies every byte range the store
//! flushes into a "durable image" of its files; the live files stand for the
//! page cache. [`crash_image`] then builds what a power loss could leave: each
//! 4 KiB page that differs between live and durable is kept, dropped (old
//! contents), torn (each 512-byte sector old or new) or garbled (every byte
//! changed since the last flush becomes random; bytes not written since are
//! assumed intact).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::Store;

/// File name → contents.
pub type Images = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// The files of a store directory, by name.
pub fn snapshot(dir: &Path) -> io::Result<HashMap<String, Vec<u8>>> {
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path())?);
    }
    Ok(files)
}

/// Keeps `images` equal to what the store has flushed (call right after open).
pub fn track(store: &mut Store, images: Images) {
    let dir = store.dir().to_path_buf();
    store.__set_flush_hook(Box::new(move |path: &Path, off: u64, len: u64| {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        let mut buf = vec![0u8; len as usize];
        let read =
            std::fs::File::open(dir.join(&name)).and_then(|f| f.read_exact_at(&mut buf, off));
        if read.is_err() {
            return;
        }
        let mut images = images.lock().unwrap_or_else(|p| p.into_inner());
        let img = images.entry(name).or_default();
        let end = (off + len) as usize;
        if img.len() < end {
            img.resize(end, 0);
        }
        img[off as usize..end].copy_from_slice(&buf);
    }));
}

/// Writes into `out` (which may be `live_dir` itself) what a power loss could
/// leave of the files in `live_dir`, given the `durable` images; returns it.
/// `random` supplies the dice.
pub fn crash_image(
    live_dir: &Path,
    durable: &HashMap<String, Vec<u8>>,
    out: &Path,
    random: &mut dyn FnMut() -> u64,
) -> io::Result<HashMap<String, Vec<u8>>> {
    let mut after = HashMap::new();
    for (name, live) in snapshot(live_dir)? {
        let old = durable.get(&name).cloned().unwrap_or_default();
        let mut img = old.clone();
        img.resize(live.len(), 0);
        for page in (0..live.len()).step_by(4096) {
            let end = (page + 4096).min(live.len());
            if old.get(page..end) == Some(&live[page..end]) {
                continue;
            }
            match random() % 4 {
                0 => img[page..end].copy_from_slice(&live[page..end]),
                1 => {}
                2 => {
                    for s in (page..end).step_by(512) {
                        let e = (s + 512).min(end);
                        if random().is_multiple_of(2) {
                            img[s..e].copy_from_slice(&live[s..e]);
                        }
                    }
                }
                _ => {
                    for i in page..end {
                        if live[i] != old.get(i).copied().unwrap_or(0) {
                            img[i] = random() as u8;
                        }
                    }
                }
            }
        }
        std::fs::write(out.join(&name), &img)?;
        after.insert(name, img);
    }
    Ok(after)
}
