//! `hrpc-bench peer`: the one-way test with other Rust libraries, for comparison. Neither
//! persists anything; both are reliable and ordered.
//!
//! - **quinn** 0.11 (QUIC, rustls with ring, a self-signed certificate from rcgen): one
//!   unidirectional stream carrying `u32`-length-prefixed messages, [`QUINN_PER_WRITE`]
//!   messages per `write_all`. Sender and receiver each run a current-thread tokio runtime on
//!   their own thread.
//! - **renet** 2 (a `ReliableOrdered` channel with its memory and per-tick byte limits
//!   raised): its packet API driven by hand over two real loopback UDP sockets, one thread
//!   per side, `update` with the real elapsed time on every loop.
//!
//! Each message carries what `pair`'s do ([`payload::fill`]: sender, number, filler,
//! crc32c), written per message by the sender; the receiver checks each one with the same
//! [`Tally`] and counts the new intact ones received in the `secs`-second window. So both
//! sides do the per-message work `pair` does. A library that fails, or delivers a corrupt or
//! duplicated message, reports `None` (JSON `null`) with a note on stderr.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::payload::{self, Tally};
use crate::procs::{LOOPBACK, io_err};

/// The sender id written into every message (as `pair` does with its node ids).
const SENDER: u32 = 2;

/// Messages per quinn `write_all`.
pub const QUINN_PER_WRITE: usize = 64;
/// Extra time each library gets to set up and shut down beyond `secs`.
const GRACE: Duration = Duration::from_secs(10);

/// The result of `peer`; `None` (JSON `null`) for a library that could not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerResult {
    /// quinn messages received per second.
    pub quinn_msgs_per_sec: Option<f64>,
    /// renet messages received per second.
    pub renet_msgs_per_sec: Option<f64>,
}

/// Runs both libraries, `secs` seconds each.
pub fn run(size: usize, secs: f64) -> PeerResult {
    let secs = Duration::from_secs_f64(secs.max(0.1));
    let note = |name: &str, r: io::Result<f64>| match r {
        Ok(v) => Some(v.round()),
        Err(e) => {
            eprintln!("peer: {name} failed: {e}");
            None
        }
    };
    PeerResult {
        quinn_msgs_per_sec: note("quinn", quinn(size, secs)),
        renet_msgs_per_sec: note("renet", renet(size, secs)),
    }
}

/// One-line human summary.
pub fn summary(size: usize, secs: f64, r: &PeerResult) -> String {
    let f = |v: Option<f64>| v.map_or("failed".to_owned(), |v| format!("{v:.0} msg/s"));
    format!(
        "peer: {size} B x {secs} s: quinn {}, renet {}",
        f(r.quinn_msgs_per_sec),
        f(r.renet_msgs_per_sec)
    )
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// quinn: messages per second received on one stream.
pub fn quinn(size: usize, secs: Duration) -> io::Result<f64> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    use quinn::rustls;
    use quinn::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).map_err(io_err)?;
    let cert_der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));

    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(64 << 20))
        .receive_window(quinn::VarInt::from_u32(128 << 20))
        .send_window(128 << 20);
    let transport = Arc::new(transport);

    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io_err)?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .map_err(io_err)?;
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).map_err(io_err)?,
    ));
    server_cfg.transport_config(transport.clone());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).map_err(io_err)?;
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).map_err(io_err)?,
    ));
    client_cfg.transport_config(transport);

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let limit = secs + GRACE;
    let receiver = std::thread::Builder::new()
        .name("quinn-rx".to_owned())
        .spawn(move || -> io::Result<f64> {
            runtime()?.block_on(async move {
                let endpoint = quinn::Endpoint::server(server_cfg, LOOPBACK)?;
                let _ = addr_tx.send(endpoint.local_addr()?);
                let work = async {
                    let incoming = endpoint
                        .accept()
                        .await
                        .ok_or_else(|| io_err("no connection"))?;
                    let conn = incoming.await.map_err(io_err)?;
                    let mut stream = conn.accept_uni().await.map_err(io_err)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut split = Split::default();
                    let mut tally = Tally::default();
                    let (mut first, mut last) = (None, Instant::now());
                    while let Some(n) = stream.read(&mut buf).await.map_err(io_err)? {
                        first.get_or_insert_with(Instant::now);
                        split.feed(buf.get(..n).unwrap_or_default(), |m| {
                            tally.record(SENDER, m);
                        });
                        last = Instant::now();
                    }
                    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
                    conn.close(0u32.into(), b"done");
                    rate(&tally, secs)
                };
                let r = tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| io_err("quinn receiver timed out"))?;
                endpoint.wait_idle().await;
                r
            })
        })?;
    let server_addr = addr_rx
        .recv_timeout(GRACE)
        .map_err(|_| io_err("quinn receiver did not start"))?;

    let sent = runtime()?.block_on(async move {
        let mut endpoint = quinn::Endpoint::client(LOOPBACK)?;
        endpoint.set_default_client_config(client_cfg);
        let work = async {
            let conn = endpoint
                .connect(server_addr, "localhost")
                .map_err(io_err)?
                .await
                .map_err(io_err)?;
            let mut stream = conn.open_uni().await.map_err(io_err)?;
            let mut chunk = vec![0u8; (size + 4) * QUINN_PER_WRITE];
            let end = Instant::now() + secs;
            let mut sent = 0u64;
            while Instant::now() < end {
                for m in chunk.chunks_exact_mut(size + 4) {
                    let (len, body) = m.split_at_mut(4);
                    len.copy_from_slice(&(size as u32).to_le_bytes());
                    sent += 1;
                    payload::fill(body, SENDER, sent);
                }
                stream.write_all(&chunk).await.map_err(io_err)?;
            }
            stream.finish().map_err(io_err)?;
            conn.closed().await;
            Ok::<u64, io::Error>(sent)
        };
        let r = tokio::time::timeout(limit, work)
            .await
            .map_err(|_| io_err("quinn sender timed out"))?;
        endpoint.wait_idle().await;
        r
    });
    let received = receiver
        .join()
        .map_err(|_| io_err("quinn receiver panicked"))??;
    sent?;
    Ok(received)
}

/// Messages per second over `secs`, counting new intact ones only; an error if the tally
/// saw a corrupt or duplicated message (the library broke its promise).
fn rate(tally: &Tally, secs: f64) -> io::Result<f64> {
    if tally.corrupt > 0 || tally.duplicated() > 0 {
        return Err(io_err(format!(
            "{} corrupt and {} duplicated messages",
            tally.corrupt,
            tally.duplicated()
        )));
    }
    Ok(if secs > 0.0 {
        tally.delivered() as f64 / secs
    } else {
        0.0
    })
}

/// Cuts a byte stream of `u32`-length-prefixed messages into whole messages, however the
/// reads split them: a message inside one read is handed in place, one that straddles
/// reads is gathered first.
#[derive(Debug, Default)]
struct Split {
    header: Vec<u8>,
    partial: Vec<u8>,
    /// Bytes of the current message still to come.
    pending: usize,
}

impl Split {
    fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.pending > 0 {
                let take = self.pending.min(data.len());
                let (part, rest) = data.split_at(take);
                self.partial.extend_from_slice(part);
                self.pending -= take;
                data = rest;
                if self.pending == 0 {
                    each(&self.partial);
                    self.partial.clear();
                }
                continue;
            }
            if self.header.is_empty()
                && let Some((h, rest)) = data.split_first_chunk::<4>()
            {
                let len = u32::from_le_bytes(*h) as usize;
                if let Some((m, rest)) = rest.split_at_checked(len) {
                    each(m);
                    data = rest;
                } else {
                    self.partial.extend_from_slice(rest);
                    self.pending = len - rest.len();
                    data = &[];
                }
                continue;
            }
            let take = (4 - self.header.len()).min(data.len());
            let (part, rest) = data.split_at(take);
            self.header.extend_from_slice(part);
            data = rest;
            if let Ok(h) = <[u8; 4]>::try_from(self.header.as_slice()) {
                self.pending = u32::from_le_bytes(h) as usize;
                self.header.clear();
                if self.pending == 0 {
                    each(&[]);
                }
            }
        }
    }
}

/// Waits up to `timeout` for `sock` to be readable.
fn wait_readable(sock: &UdpSocket, timeout: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

fn renet_config() -> renet::ConnectionConfig {
    let channel = renet::ChannelConfig {
        channel_id: 0,
        max_memory_usage_bytes: 256 << 20,
        send_type: renet::SendType::ReliableOrdered {
            resend_time: Duration::from_millis(100),
        },
    };
    renet::ConnectionConfig {
        available_bytes_per_tick: 1 << 30,
        server_channels_config: vec![channel.clone()],
        client_channels_config: vec![channel],
    }
}

/// renet: messages per second received on a ReliableOrdered channel.
pub fn renet(size: usize, secs: Duration) -> io::Result<f64> {
    const CLIENT: renet::ClientId = 1;
    let server_sock = UdpSocket::bind(LOOPBACK)?;
    let client_sock = UdpSocket::bind(LOOPBACK)?;
    for s in [&server_sock, &client_sock] {
        s.set_nonblocking(true)?;
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(s, sockopt::RcvBufForce, &(8 << 20)).is_err() {
            let _ = setsockopt(s, sockopt::RcvBuf, &(8 << 20));
        }
    }
    let server_addr = server_sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_rx = stop.clone();
    let limit = Instant::now() + secs + GRACE;
    let receiver = std::thread::Builder::new()
        .name("renet-rx".to_owned())
        .spawn(move || -> io::Result<f64> {
            let mut server = renet::RenetServer::new(renet_config());
            server.add_connection(CLIENT);
            let mut buf = vec![0u8; 65_536];
            let mut peer = None;
            let mut last = Instant::now();
            let mut tally = Tally::default();
            let (mut first, mut last_msg) = (None, Instant::now());
            while !stop_rx.load(Ordering::Acquire) && Instant::now() < limit {
                let mut busy = false;
                for _ in 0..1024 {
                    let Ok((n, from)) = server_sock.recv_from(&mut buf) else {
                        break;
                    };
                    peer = Some(from);
                    busy = true;
                    server
                        .process_packet_from(buf.get(..n).unwrap_or_default(), CLIENT)
                        .map_err(io_err)?;
                }
                let now = Instant::now();
                server.update(now - last);
                last = now;
                while let Some(m) = server.receive_message(CLIENT, 0) {
                    tally.record(SENDER, &m);
                    first.get_or_insert(now);
                    last_msg = now;
                }
                if let Some(to) = peer {
                    for p in server.get_packets_to_send(CLIENT).map_err(io_err)? {
                        let _ = server_sock.send_to(&p, to);
                    }
                }
                if !busy {
                    wait_readable(&server_sock, Duration::from_millis(5));
                }
            }
            let secs = first.map_or(0.0, |f| last_msg.duration_since(f).as_secs_f64());
            rate(&tally, secs)
        })?;

    let mut client = renet::RenetClient::new(renet_config());
    client.set_connected();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + secs;
    let mut last = Instant::now();
    let mut result = Ok(());
    while Instant::now() < end {
        for _ in 0..1024 {
            let Ok(n) = client_sock.recv(&mut buf) else {
                break;
            };
            client.process_packet(buf.get(..n).unwrap_or_default());
        }
        let now = Instant::now();
        client.update(now - last);
        last = now;
        if client.is_disconnected() {
            result = Err(io_err(format!(
                "renet client disconnected: {:?}",
                client.disconnect_reason()
            )));
            break;
        }
        let mut queued = 0;
        while queued < 4096 && client.can_send_message(0, size) {
            // renet takes each message as its own `Bytes`.
            let mut message = vec![0u8; size];
            sent += 1;
            payload::fill(&mut message, SENDER, sent);
            client.send_message(0, message);
            queued += 1;
        }
        for p in client.get_packets_to_send() {
            if client_sock.send_to(&p, server_addr).is_err() {
                // Socket buffer full: renet resends after its resend time, like a lost packet.
                break;
            }
        }
        if queued == 0 {
            wait_readable(&client_sock, Duration::from_millis(1));
        }
    }
    // Give the receiver a moment for what is in flight, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let received = receiver
        .join()
        .map_err(|_| io_err("renet receiver panicked"))??;
    result.map(|()| received)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: however a stream of length-prefixed messages is cut into reads, `Split`
    /// hands every message once, whole and in order.
    #[test]
    fn split_hands_whole_messages_at_every_cut() {
        let sizes = [16usize, 100, 17, 300, 16];
        let mut stream = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            stream.extend_from_slice(&(n as u32).to_le_bytes());
            let mut m = vec![0u8; n];
            payload::fill(&mut m, SENDER, i as u64 + 1);
            stream.extend_from_slice(&m);
        }
        for cut in 1..=stream.len() {
            let mut split = Split::default();
            let mut tally = Tally::default();
            let mut lens = Vec::new();
            for read in stream.chunks(cut) {
                split.feed(read, |m| {
                    lens.push(m.len());
                    tally.record(SENDER, m);
                });
            }
            assert_eq!(lens, sizes, "reads of {cut} bytes");
            assert_eq!(
                tally.delivered(),
                sizes.len() as u64,
                "reads of {cut} bytes"
            );
            assert_eq!(
                (tally.corrupt, tally.reordered()),
                (0, 0),
                "reads of {cut} bytes"
            );
        }
    }
}
