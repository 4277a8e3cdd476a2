//! Two nodes on loopback exchange messages for a few seconds while a Prometheus exporter
//! serves their metrics; at the end the example scrapes itself once, prints the `hrpc_`
//! series and fails if the delivered messages are not among them (a smoke check for CI).
//!
//! ```text
//! cargo run --release -p hrpc-node --features metrics --example prometheus -- [PORT] [SECONDS]
//! ```
//!
//! PORT (0 or absent: a free port) is on 127.0.0.1; SECONDS defaults to 3. Scrape
//! `http://127.0.0.1:PORT/metrics` while it runs.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hrpc_node::driver::{NodeConfig, SendError};
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next() {
        Some(p) => p.parse()?,
        None => 0,
    };
    let port = match port {
        // A free port: bind one, note it, release it for the exporter.
        0 => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
        p => p,
    };
    let secs: u64 = match args.next() {
        Some(s) => s.parse()?,
        None => 3,
    };
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()?;
    println!("scrape http://{listen}/metrics (running for {secs} s)");

    let dir = tempfile::tempdir()?;
    let every = Duration::from_millis(250);
    let mut a = NodeConfig::new(dir.path().join("a"), 1)
        .metrics_interval(every)
        .open()?;
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .peer(1, a.local_addr())
        .metrics_interval(every)
        .open()?;

    // Node 2 sends node 1 a message per iteration; node 1 answers each from its handler.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut replies) = (0u64, 0u64);
    while Instant::now() < deadline {
        match b.send(1, format!("request {sent}").as_bytes()) {
            Ok(_) => sent += 1,
            Err(e) if e.is_backpressure() => {}
            Err(e) => return Err(e.into()),
        }
        let mut failed: Option<SendError> = None;
        a.poll(&mut |reply, d| match reply.send(d.peer, d.payload) {
            Err(e) if !e.is_backpressure() => failed = Some(e),
            _ => {}
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        b.poll(&mut |_, _| replies += 1)?;
        b.wait(Some(Duration::from_millis(1)))?;
    }
    a.close(Duration::from_millis(100))?;
    b.close(Duration::from_millis(100))?;
    println!("sent {sent} requests, got {replies} replies");

    let body = scrape(listen)?;
    for line in body.lines().filter(|l| l.starts_with("hrpc_")) {
        println!("{line}");
    }
    if !body.contains("hrpc_messages_delivered_total{node=\"1\"}") {
        return Err("the exporter does not show node 1's deliveries".into());
    }
    Ok(())
}

/// One HTTP/1.1 GET of `/metrics`, retried while the exporter starts.
fn scrape(addr: SocketAddr) -> Result<String, Box<dyn Error>> {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    s,
                    "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                return Ok(body);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.map_or_else(|| "no connection".into(), Into::into))
}
