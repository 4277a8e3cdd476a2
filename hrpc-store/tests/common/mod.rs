//! Helpers shared by the store's model-based tests: how a reference model
//! holds a gap marker next to message payloads.
#![allow(dead_code)]

/// How a model holds a gap marker standing for seqs up to `last`.
pub(crate) fn marker(last: u64) -> Vec<u8> {
    let mut v = b"\xffLOST".to_vec();
    v.extend_from_slice(&last.to_le_bytes());
    v
}

/// The last seq of a model's gap marker; `None` for a message.
pub(crate) fn marker_last(v: &[u8]) -> Option<u64> {
    let rest = v.strip_prefix(b"\xffLOST")?;
    Some(u64::from_le_bytes(rest.try_into().ok()?))
}

/// A message's bytes, or the model's form of a gap marker.
pub(crate) fn repr(m: &hrpc_store::MessageRef<'_>) -> Vec<u8> {
    match m.lost_through() {
        Some(last) => marker(last),
        None => m.payload().to_vec(),
    }
}
