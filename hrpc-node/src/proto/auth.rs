//! The optional cluster key: every datagram carries an authentication tag, and a datagram
//! without a valid one is dropped before any state is touched.
//!
//! The tag is the first [`AUTH_TAG_LEN`] bytes of the keyed BLAKE3 hash of the datagram's
//! header and frames (the wire format's `FLAG_AUTH` trailer), compared in constant time. A
//! keyed hash needs no nonce, so nothing can repeat across restarts. Replaying a datagram
//! that carries a valid tag gains nothing: its seqs are duplicates, its acknowledgements and
//! windows never move anything back, and its session tokens and address still have to pass
//! the handshake's round trip.
//!
//! With encryption on ([`CoreConfig::encrypt`](super::CoreConfig::encrypt)) the frames are
//! enciphered too, with XChaCha20-Poly1305 under a key derived from the cluster key: a
//! 24-byte nonce (a random prefix per core, then a counter) follows the header, the header is
//! the associated data, and the AEAD's tag replaces the keyed hash.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hrpc_wire::{AUTH_TAG_LEN, HEADER_LEN, NONCE_LEN};

/// Context string of the encryption key derived from the cluster key.
const ENCRYPTION_CONTEXT: &str = "hrpc 2026-11 datagram encryption key";

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

/// The AEAD of a node that enciphers its datagrams, and its nonce sequence.
pub(crate) struct DatagramCipher {
    aead: XChaCha20Poly1305,
    /// Random per core: two cores (or two lives of one node) never share a nonce.
    prefix: [u8; NONCE_LEN - 8],
    counter: u64,
}

impl DatagramCipher {
    /// The cipher for `key`, with a fresh random nonce prefix.
    pub(crate) fn new(key: &ClusterKey) -> std::io::Result<Self> {
        let derived = blake3::derive_key(ENCRYPTION_CONTEXT, &key.0);
        let mut prefix = [0u8; NONCE_LEN - 8];
        getrandom::fill(&mut prefix).map_err(std::io::Error::from)?;
        Ok(DatagramCipher {
            aead: XChaCha20Poly1305::new(&derived.into()),
            prefix,
            counter: 0,
        })
    }

    /// Enciphers a datagram written by `DatagramWriter::new_encrypted` and finished: writes
    /// the nonce, enciphers the frames in place and writes the tag. False if it is too short
    /// to be one (nothing written).
    pub(crate) fn seal(&mut self, datagram: &mut [u8]) -> bool {
        let Some(body_end) = datagram.len().checked_sub(AUTH_TAG_LEN) else {
            return false;
        };
        if body_end < HEADER_LEN + NONCE_LEN {
            return false;
        }
        self.counter = self.counter.wrapping_add(1);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_LEN - 8].copy_from_slice(&self.prefix);
        nonce[NONCE_LEN - 8..].copy_from_slice(&self.counter.to_be_bytes());
        let (head, rest) = datagram.split_at_mut(HEADER_LEN);
        let (nonce_area, rest) = rest.split_at_mut(NONCE_LEN);
        let (frames, trailer) = rest.split_at_mut(body_end - HEADER_LEN - NONCE_LEN);
        nonce_area.copy_from_slice(&nonce);
        match self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), head, frames)
        {
            Ok(tag) => {
                trailer.copy_from_slice(&tag);
                true
            }
            Err(_) => false,
        }
    }

    /// Deciphers `parts` into `out` as a plain authenticated datagram (its header with
    /// `FLAG_AUTH` only, the plain frames, a zero tag). False, with `out` unspecified, if the
    /// tag does not verify.
    pub(crate) fn open(&self, parts: &hrpc_wire::EncryptedParts<'_>, out: &mut Vec<u8>) -> bool {
        out.clear();
        out.extend_from_slice(parts.header);
        out[3] = hrpc_wire::FLAG_AUTH;
        out.extend_from_slice(parts.ciphertext);
        let ok = self
            .aead
            .decrypt_in_place_detached(
                XNonce::from_slice(parts.nonce),
                parts.header,
                &mut out[HEADER_LEN..],
                parts.tag.into(),
            )
            .is_ok();
        out.extend_from_slice(&[0u8; AUTH_TAG_LEN]);
        ok
    }
}

impl std::fmt::Debug for DatagramCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramCipher")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
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

    /// An enciphered datagram carries no plain frame bytes, deciphers back to the plain
    /// datagram under the same key, and fails under another key or with any byte changed.
    #[test]
    fn encipher_then_open() {
        let key = ClusterKey::new([5; 32]);
        let mut c = DatagramCipher::new(&key).unwrap();
        let header = hrpc_wire::HeaderFields {
            src: 1,
            dst: 2,
            src_epoch: 3,
            dst_epoch: 4,
            auth: true,
        };
        let mut buf = vec![0u8; 1472];
        let mut w = hrpc_wire::DatagramWriter::new_encrypted(&mut buf, &header).unwrap();
        let secret = [0x5Au8; 200];
        w.push_data(&hrpc_wire::DataFrame {
            flags: 0,
            seq: 9,
            msg_len: secret.len() as u32,
            offset: 0,
            msg_crc: crc32c::crc32c(&secret),
            payload: &secret,
        })
        .unwrap();
        let len = w.finish();
        assert!(c.seal(&mut buf[..len]));
        let sealed = buf[..len].to_vec();
        assert!(
            !sealed.windows(16).any(|w| w == &secret[..16]),
            "plain bytes on the wire"
        );
        assert!(hrpc_wire::Datagram::parse(&sealed).is_err());
        let parts = hrpc_wire::encrypted_parts(&sealed).unwrap();
        let mut out = Vec::new();
        assert!(c.open(&parts, &mut out));
        let d = hrpc_wire::Datagram::parse(&out).unwrap();
        assert_eq!(d.header().src, 1);
        match d.frames().next() {
            Some(hrpc_wire::Frame::Data(f)) => assert_eq!(f.payload, &secret),
            other => panic!("{other:?}"),
        }
        let other = DatagramCipher::new(&ClusterKey::new([6; 32])).unwrap();
        assert!(!other.open(&parts, &mut out));
        for i in [0, 3, 20, 40, 100, len - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let ok = hrpc_wire::encrypted_parts(&bad).is_some_and(|p| c.open(&p, &mut out));
            assert!(!ok, "byte {i}");
        }
    }
}
