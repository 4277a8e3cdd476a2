//! The optional cluster key: every datagram carries an authentication tag, and a datagram
//! without a valid one is dropped before any state is touched.
//!
//! The tag is the first [`AUTH_TAG_LEN`] bytes of the keyed BLAKE3 hash of the datagram's
//! header and frames (the wire format's `FLAG_AUTH` trailer), compared in constant time. A
//! keyed hash needs no nonce, so nothing can repeat across restarts. Replaying a datagram
//! that carries a valid tag gains nothing: its seqs are duplicates, its acknowledgements and
//! windows never move anything back, and its session tokens and address still have to pass
//! the handshake's round trip. Authentication only: the payload travels in the clear.

use hrpc_wire::AUTH_TAG_LEN;

/// A 256-bit key shared by every node of a cluster. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// The key from its 32 bytes (generate them with a CSPRNG; share them out of band).
    pub fn new(bytes: [u8; 32]) -> Self {
        ClusterKey(bytes)
    }

    /// The tag of `authenticated` (a datagram's header and frames).
    pub(crate) fn tag(&self, authenticated: &[u8]) -> [u8; AUTH_TAG_LEN] {
        let hash = blake3::keyed_hash(&self.0, authenticated);
        let mut tag = [0u8; AUTH_TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..AUTH_TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `authenticated`, in constant time.
    pub(crate) fn verify(&self, authenticated: &[u8], tag: &[u8; AUTH_TAG_LEN]) -> bool {
        constant_time_eq::constant_time_eq_16(&self.tag(authenticated), tag)
    }

    /// Fills the tag trailer of a finished datagram (`DatagramWriter::finish` with
    /// `auth: true` leaves its last [`AUTH_TAG_LEN`] bytes for it).
    pub(crate) fn seal(&self, datagram: &mut [u8]) {
        let Some(split) = datagram.len().checked_sub(AUTH_TAG_LEN) else {
            return;
        };
        let (body, trailer) = datagram.split_at_mut(split);
        trailer.copy_from_slice(&self.tag(body));
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed datagram verifies; any changed byte, or another key, fails.
    #[test]
    fn seal_then_verify() {
        let key = ClusterKey::new([7; 32]);
        let mut d = vec![1u8; 100];
        key.seal(&mut d);
        let (body, tag) = d.split_at(100 - AUTH_TAG_LEN);
        let tag: &[u8; AUTH_TAG_LEN] = tag.try_into().unwrap();
        assert!(key.verify(body, tag));
        assert!(!ClusterKey::new([8; 32]).verify(body, tag));
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] ^= 1;
            assert!(!key.verify(&b, tag), "byte {i}");
        }
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
    }
}
