//! Invariant: decoding never panics on any input, and a datagram that parses
//! re-encodes byte-identically.
#![no_main]

use hrpc_wire::{Datagram, DatagramWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Also exercise the frame decoder behind a forged-valid checksum, which
    // random bytes would almost never get past.
    for _ in hrpc_wire::decode_frames(data) {}
    let Ok(d) = Datagram::parse(data) else {
        return;
    };
    let mut buf = vec![
        0u8;
        data.len()
            .max(hrpc_wire::HEADER_LEN + hrpc_wire::AUTH_TAG_LEN)
    ];
    let mut w = DatagramWriter::new(&mut buf, &d.header()).expect("a parsed header fits");
    for f in d.frames() {
        w.push(&f).expect("a decoded frame re-encodes");
    }
    let len = w.finish();
    if let Some(tag) = d.auth_tag() {
        buf[len - tag.len()..len].copy_from_slice(tag);
    }
    assert_eq!(&buf[..len], data);
});
