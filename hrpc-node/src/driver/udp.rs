//! The UDP socket: setup, GSO/GRO detection, batched receive and segmented send.
//!
//! Built on `quinn-udp` (safe, over socket2): receive is one `recvmmsg(2)` per
//! [`UdpIo::recv_batch`] into a ring of [`quinn_udp::BATCH_SIZE`] buffers allocated once; with
//! GRO each buffer may hold many datagrams of one sender (split here by the kernel's stride).
//! Send takes a run of equal-size datagrams for one destination: with GSO it is one
//! `sendmsg(2)` carrying a `UDP_SEGMENT` control message; without GSO (kernel lacks it, disabled
//! in [`UdpConfig`], or turned off by quinn-udp after a driver error) the segments go out with
//! one `sendmmsg(2)` per [`MMSG_BATCH`] datagrams. Either way there is no allocation and no
//! syscall per datagram on the hot path.
//!
//! Socket buffers are raised to [`UdpConfig::recv_buffer`]/[`UdpConfig::send_buffer`] with
//! `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when the process may (root or `CAP_NET_ADMIN`), else with
//! the plain options, which the kernel caps at `net.core.rmem_max`/`wmem_max`.
//!
//! The benchmark's raw-UDP ceiling uses this same type, so hrpc and the ceiling share syscalls.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::socket::{setsockopt, sockopt};
use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use socket2::{Domain, Protocol, Socket, Type};

/// Largest UDP payload over IPv4; also the kernel's cap on a whole GSO send.
pub const MAX_UDP_PAYLOAD: usize = hrpc_wire::MAX_DATAGRAM_LEN;
/// Datagrams per `sendmmsg(2)` on the non-GSO path.
pub const MMSG_BATCH: usize = 64;
/// Receive buffer ring size in datagrams (or GRO batches): one `recvmmsg(2)` fills at most this.
pub const RECV_BATCH: usize = BATCH_SIZE;

/// Socket options.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Largest datagram this side sends (UDP payload bytes).
    pub mtu: usize,
    /// Requested `SO_RCVBUF` in bytes.
    pub recv_buffer: usize,
    /// Requested `SO_SNDBUF` in bytes.
    pub send_buffer: usize,
    /// Use UDP generic segmentation offload when the kernel has it.
    pub gso: bool,
    /// Use UDP generic receive offload when the kernel has it.
    pub gro: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            mtu: hrpc_wire::DEFAULT_MTU,
            recv_buffer: 8 << 20,
            send_buffer: 4 << 20,
            gso: true,
            gro: true,
        }
    }
}

/// What the socket can do, found out at bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCaps {
    /// GSO segments per send the kernel accepts (1 = no GSO).
    pub gso_segments: usize,
    /// GRO segments one receive may return (1 = no GRO).
    pub gro_segments: usize,
    /// Datagrams of `mtu` bytes one [`UdpIo::send`] should carry: the GSO limit, further capped
    /// so the whole send stays within [`MAX_UDP_PAYLOAD`]. Without GSO, [`MMSG_BATCH`].
    pub max_transmit_segments: usize,
    /// Effective `SO_RCVBUF` as the kernel reports it.
    pub recv_buffer: usize,
    /// Effective `SO_SNDBUF` as the kernel reports it.
    pub send_buffer: usize,
    /// Whether the force variants of the buffer options were allowed.
    pub buffers_forced: bool,
}

/// Socket-level counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// `recvmmsg` calls that returned data.
    pub recv_calls: u64,
    /// Datagrams received (GRO batches counted per datagram).
    pub datagrams_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Send syscalls (`sendmsg` or `sendmmsg`).
    pub send_calls: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Sends refused because the socket buffer was full.
    pub send_would_block: u64,
    /// Sends that failed with another error (the datagrams were dropped).
    pub send_errors: u64,
    /// Receives that failed with an error other than "nothing waiting".
    pub recv_errors: u64,
}

/// A non-blocking UDP socket with batched receive and segmented send.
#[derive(Debug)]
pub struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    caps: UdpCaps,
    local_addr: SocketAddr,
    mtu: usize,
    gso_enabled: bool,
    recv_buf: Vec<u8>,
    slot_len: usize,
    meta: [RecvMeta; BATCH_SIZE],
    stats: UdpStats,
}

impl UdpIo {
    /// Binds a socket at `addr` (port 0 = ephemeral), makes it non-blocking, detects GSO and
    /// GRO, sizes the buffers and allocates the receive ring.
    ///
    /// Errors: `AddrInUse` when the port is taken, `InvalidInput` for an MTU outside
    /// `hrpc_wire::HEADER_LEN..=MAX_UDP_PAYLOAD`, or the socket call's own error.
    pub fn bind(addr: SocketAddr, cfg: &UdpConfig) -> io::Result<UdpIo> {
        if cfg.mtu < hrpc_wire::HEADER_LEN || cfg.mtu > MAX_UDP_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mtu {} outside {}..={MAX_UDP_PAYLOAD}",
                    cfg.mtu,
                    hrpc_wire::HEADER_LEN
                ),
            ));
        }
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.bind(&addr.into())?;
        let socket: UdpSocket = sock.into();
        let state = UdpSocketState::new((&socket).into())?;
        let local_addr = socket.local_addr()?;

        let mut gro_segments = state.gro_segments().max(1);
        if !cfg.gro && gro_segments > 1 {
            setsockopt(&socket, sockopt::UdpGroSegment, &false).map_err(io::Error::from)?;
            gro_segments = 1;
        }
        let gso_segments = if cfg.gso {
            state.max_gso_segments().max(1)
        } else {
            1
        };
        let max_transmit_segments = if gso_segments > 1 {
            gso_segments.min(MAX_UDP_PAYLOAD / cfg.mtu).max(1)
        } else {
            MMSG_BATCH
        };

        let forced_rcv = setsockopt(&socket, sockopt::RcvBufForce, &cfg.recv_buffer).is_ok();
        if !forced_rcv {
            state.set_recv_buffer_size((&socket).into(), cfg.recv_buffer)?;
        }
        let forced_snd = setsockopt(&socket, sockopt::SndBufForce, &cfg.send_buffer).is_ok();
        if !forced_snd {
            state.set_send_buffer_size((&socket).into(), cfg.send_buffer)?;
        }
        let recv_buffer = state.recv_buffer_size((&socket).into())?;
        let send_buffer = state.send_buffer_size((&socket).into())?;

        // One slot must hold the largest thing one receive can return: a whole GRO batch (the
        // kernel caps those at 64 KiB) or the largest possible datagram, so nothing truncates.
        let slot_len = (cfg.mtu * gro_segments).max(MAX_UDP_PAYLOAD + 1);
        let caps = UdpCaps {
            gso_segments,
            gro_segments,
            max_transmit_segments,
            recv_buffer,
            send_buffer,
            buffers_forced: forced_rcv && forced_snd,
        };
        tracing::debug!(%local_addr, ?caps, "udp socket bound");
        Ok(UdpIo {
            socket,
            state,
            caps,
            local_addr,
            mtu: cfg.mtu,
            gso_enabled: gso_segments > 1,
            recv_buf: vec![0; slot_len * BATCH_SIZE],
            slot_len,
            meta: [RecvMeta::default(); BATCH_SIZE],
            stats: UdpStats::default(),
        })
    }

    /// The bound address (with the ephemeral port filled in).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the socket can do.
    pub fn caps(&self) -> UdpCaps {
        self.caps
    }

    /// The configured MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Counters since bind.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// The socket, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// One `recvmmsg(2)`: calls `f(source, datagram)` for every datagram received, in arrival
    /// order, GRO batches split into their datagrams. Returns the number of datagrams; `Ok(0)`
    /// when nothing was waiting. Never blocks.
    pub fn recv_batch(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let n = {
            let mut chunks = self.recv_buf.chunks_mut(self.slot_len);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match self
                .state
                .recv((&self.socket).into(), &mut iovs, &mut self.meta)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => {
                    self.stats.recv_errors += 1;
                    return Err(e);
                }
            }
        };
        self.stats.recv_calls += 1;
        let mut datagrams = 0;
        for (meta, slot) in self
            .meta
            .iter()
            .zip(self.recv_buf.chunks(self.slot_len))
            .take(n)
        {
            let bytes = slot.get(..meta.len).unwrap_or(slot);
            self.stats.bytes_received += bytes.len() as u64;
            if bytes.is_empty() {
                datagrams += 1;
                f(meta.addr, bytes);
                continue;
            }
            for d in bytes.chunks(meta.stride.max(1)) {
                datagrams += 1;
                f(meta.addr, d);
            }
        }
        self.stats.datagrams_received += datagrams as u64;
        Ok(datagrams)
    }

    /// Sends `contents` to `dst` as datagrams of `segment_size` bytes (the last may be shorter;
    /// `None` = one datagram). Returns how many bytes of `contents` the kernel took, always a
    /// whole number of segments; call again with the rest. `Err(WouldBlock)` when the socket
    /// buffer is full and nothing was sent. Other errors mean the datagrams were not sent
    /// (counted in [`UdpStats::send_errors`]); UDP callers retransmit, so they may drop them.
    pub fn send(
        &mut self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<usize> {
        let seg = match segment_size {
            Some(s) if s > 0 && s < contents.len() => s,
            _ => contents.len(),
        };
        let segments = contents.len().div_ceil(seg.max(1)).max(1);
        let use_gso = segments > 1
            && self.gso_enabled
            && self.state.max_gso_segments() >= segments
            && contents.len() <= MAX_UDP_PAYLOAD;
        if segments == 1 || use_gso {
            let transmit = Transmit {
                destination: dst,
                ecn: None,
                contents,
                segment_size: if segments > 1 { Some(seg) } else { None },
                src_ip: None,
            };
            self.stats.send_calls += 1;
            return match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => {
                    self.stats.datagrams_sent += segments as u64;
                    self.stats.bytes_sent += contents.len() as u64;
                    Ok(contents.len())
                }
                Err(e) => Err(self.send_failed(e)),
            };
        }
        self.send_mmsg(dst, contents, seg)
    }

    fn send_failed(&mut self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            self.stats.send_would_block += 1;
        } else {
            self.stats.send_errors += 1;
            tracing::debug!(error = %e, "udp send failed");
        }
        e
    }

    /// The non-GSO path: up to [`MMSG_BATCH`] segments per `sendmmsg(2)`.
    fn send_mmsg(&mut self, dst: SocketAddr, contents: &[u8], seg: usize) -> io::Result<usize> {
        let addr = SocketAddrAny::from(dst);
        let mut done = 0;
        while done < contents.len() {
            let rest = contents.get(done..).unwrap_or_default();
            let count = rest.len().div_ceil(seg).min(MMSG_BATCH);
            let mut chunks = rest.chunks(seg);
            let mut slots: [([IoSlice<'_>; 1], SendAncillaryBuffer<'_, '_, '_>); MMSG_BATCH] =
                std::array::from_fn(|_| {
                    let iov = [IoSlice::new(chunks.next().unwrap_or_default())];
                    (iov, SendAncillaryBuffer::default())
                });
            let mut batch = slots
                .each_mut()
                .map(|(iov, ctl)| MMsgHdr::new_with_addr(&addr, &*iov, ctl));
            self.stats.send_calls += 1;
            let sent = rustix::net::sendmmsg(
                &self.socket,
                batch.get_mut(..count).unwrap_or_default(),
                SendFlags::empty(),
            );
            match sent {
                Ok(k) if k > 0 => {
                    let bytes: usize = rest.chunks(seg).take(k).map(<[u8]>::len).sum();
                    self.stats.datagrams_sent += k as u64;
                    self.stats.bytes_sent += bytes as u64;
                    done += bytes;
                    if k < count {
                        break;
                    }
                }
                Ok(_) => {
                    if done == 0 {
                        return Err(self.send_failed(io::ErrorKind::WouldBlock.into()));
                    }
                    break;
                }
                Err(e) => {
                    let e = io::Error::from(e);
                    if done == 0 {
                        return Err(self.send_failed(e));
                    }
                    self.send_failed(e);
                    break;
                }
            }
        }
        Ok(done)
    }
}

impl AsFd for UdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
