//! A UDP relay between node A and node B on loopback, driven by the test's own loop: it
//! forwards every datagram, remembers the session values B's datagrams to A carry, and can
//! inject anything at A from B's address as A sees it (what an on-path attacker can do).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};

use hrpc_wire::{Datagram, DatagramWriter, HeaderFields};

pub(crate) struct Relay {
    pub(crate) sock: UdpSocket,
    pub(crate) a_addr: SocketAddr,
    /// B's address, once B sent something.
    pub(crate) b_addr: Option<SocketAddr>,
    /// The header of the latest datagram B sent A (valid session values).
    pub(crate) b_header: Option<HeaderFields>,
    pub(crate) forwarded: u64,
}

impl Relay {
    pub(crate) fn new(a_addr: SocketAddr) -> Relay {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        Relay {
            sock,
            a_addr,
            b_addr: None,
            b_header: None,
            forwarded: 0,
        }
    }

    /// The address A should know B by.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Forwards up to `budget` waiting datagrams.
    pub(crate) fn pump(&mut self, budget: usize) {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..budget {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                return;
            };
            let to = if from == self.a_addr {
                match self.b_addr {
                    Some(b) => b,
                    None => continue,
                }
            } else {
                self.b_addr = Some(from);
                if let Ok(d) = Datagram::parse(&buf[..n]) {
                    let h = d.header();
                    if h.src_epoch != 0 && h.dst_epoch != 0 {
                        self.b_header = Some(h);
                    }
                }
                self.a_addr
            };
            // A full socket buffer is loss, which the nodes ride out.
            let _ = self.sock.send_to(&buf[..n], to);
            self.forwarded += 1;
        }
    }

    /// Sends `bytes` to A from B's address as A knows it.
    pub(crate) fn inject(&self, bytes: &[u8]) {
        let _ = self.sock.send_to(bytes, self.a_addr);
    }
}

/// A datagram with `header` and the frames `build` pushes.
pub(crate) fn datagram(
    header: &HeaderFields,
    build: impl FnOnce(&mut DatagramWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 65_507];
    let mut w = DatagramWriter::new(&mut buf, header).unwrap();
    build(&mut w);
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Recomputes the header checksum of an unauthenticated datagram after the test patched it
/// (crc32c over bytes 0..28, then 32..end).
pub(crate) fn reseal(d: &mut [u8]) {
    if d.len() < hrpc_wire::HEADER_LEN {
        return;
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&d[..28]), &d[32..]);
    d[28..32].copy_from_slice(&crc.to_be_bytes());
}

/// The resident set size of this process in bytes (Linux), if readable.
pub(crate) fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes the files under `dir` take on disk (allocated blocks, so sparse holes do not count).
pub(crate) fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}
