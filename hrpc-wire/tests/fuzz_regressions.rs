//! Replays every input kept under `fuzz/regressions/wire_decode/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hrpc_wire::{Datagram, DatagramWriter};

/// Invariant (the fuzz target's): parsing never panics, and a datagram that
/// parses re-encodes byte-identically.
#[test]
fn replay_wire_decode_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/wire_decode");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("regression dir exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for _ in hrpc_wire::decode_frames(&data) {}
        if let Ok(d) = Datagram::parse(&data) {
            let mut buf = vec![0u8; data.len()];
            let mut w = DatagramWriter::new(&mut buf, &d.header()).unwrap();
            for f in d.frames() {
                w.push(&f).unwrap();
            }
            let len = w.finish();
            if let Some(tag) = d.auth_tag() {
                buf[len - tag.len()..len].copy_from_slice(tag);
            }
            assert_eq!(&buf[..len], &data[..]);
        }
        replayed += 1;
    }
    assert!(replayed >= 4, "expected the kept inputs, found {replayed}");
}

/// The kept valid samples really are valid (so the replay exercises the
/// re-encode path, not only the error path).
#[test]
fn kept_valid_samples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/wire_decode");
    for name in ["valid-all-frames.bin", "valid-auth.bin"] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let d = Datagram::parse(&data).unwrap();
        assert!(d.frame_count() >= 1, "{name}");
    }
}
