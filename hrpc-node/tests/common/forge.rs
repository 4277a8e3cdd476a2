//! Frames a node's attacker forges: a hello that asks for a reply, and a whole message of
//! its own (`evil <seq>`) in one DATA frame.
#![allow(dead_code, clippy::unwrap_used)]

use hrpc_wire::{DataFrame, DatagramWriter, HeartbeatFrame};

/// A heartbeat as a node's first one to a new peer: it asks for a reply.
pub(crate) fn hello() -> HeartbeatFrame {
    HeartbeatFrame {
        reply_requested: true,
        next_seq: 1,
        first_pending: 1,
        expected: 1,
        timestamp_us: 1,
        echo_us: 0,
    }
}

/// Pushes the whole message `evil <seq>` as message `seq`.
pub(crate) fn push_evil(w: &mut DatagramWriter<'_>, seq: u64) {
    let payload = format!("evil {seq}").into_bytes();
    w.push_data(&DataFrame {
        flags: 0,
        seq,
        msg_len: payload.len() as u32,
        offset: 0,
        msg_crc: crc32c::crc32c(&payload),
        payload: &payload,
    })
    .unwrap();
}
