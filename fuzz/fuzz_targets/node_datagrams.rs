//! Invariant: arbitrary datagram sequences never panic the protocol core;
//! datagrams that do not parse or are misaddressed change no persisted
//! state; deliveries stay in order without duplicates
//! (see `hrpc_node::proto::testing::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    hrpc_node::proto::testing::run(dir.path(), data);
});
