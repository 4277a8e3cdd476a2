//! The original C hrpc README's benchmark, on the Rust node.
//!
//! ```text
//! cargo run --release -p hrpc-node --example seed_bench -- server   # node 1 on 127.0.0.1:5670
//! cargo run --release -p hrpc-node --example seed_bench -- client   # node 2, ephemeral port
//! ```
//! Stores live in the working directory (`./fmap.bin.server`, `./fmap.bin.client`). The client
//! sends 200 messages of 100 bytes, then 10 more per loop iteration; each side prints
//! `N op/s, K kb/s` (messages it received) every second. Both exit cleanly on SIGINT, SIGQUIT
//! or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hrpc_node::driver::{NodeConfig, SendError, Sender};
use hrpc_node::proto::Delivery;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const TEST_SIZE: usize = 100;

fn get_addr(nid: u32) -> Option<SocketAddr> {
    (nid == 1).then(|| SocketAddr::from(([127, 0, 0, 1], 5670)))
}

/// What the C example writes into each `hrpc_send(1, 100)` buffer: `strcpy(text, "123321")`.
fn fill(b: &mut [u8]) {
    b.fill(0);
    b[..6].copy_from_slice(b"123321");
}

/// Backpressure is skipped, like a NULL return of `hrpc_send`.
fn skip_backpressure(sent: Result<u64, SendError>) -> Result<(), SendError> {
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.is_backpressure() => Ok(()),
        Err(e) => Err(e),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Signals arrive on a signalfd, checked by the loop (no handler, no unsafe).
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM] {
        mask.add(s);
    }
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let Some(mode) = std::env::args().nth(1) else {
        println!("need argv[1]");
        return Err("usage: seed_bench server|client".into());
    };
    let is_client = match mode.as_str() {
        "server" => false,
        "client" => true,
        _ => return Err("usage: seed_bench server|client".into()),
    };
    let mut node = if is_client {
        NodeConfig::new("./fmap.bin.client", 2)
            .resolver(get_addr)
            .open()
            .map_err(|e| format!("client init failed: {e}"))?
    } else {
        NodeConfig::new("./fmap.bin.server", 1)
            .bind(SocketAddr::from(([127, 0, 0, 1], 5670)))
            .resolver(get_addr)
            .open()
            .map_err(|e| format!("server init failed: {e}"))?
    };
    if is_client {
        for _ in 0..200 {
            skip_backpressure(node.send_with(1, TEST_SIZE, fill))?;
        }
    }

    let mut count: u64 = 0;
    let mut count_size: u64 = 0;
    let mut count_time = Instant::now();
    let mut next_signal_check = Instant::now();
    loop {
        let report = node.poll(&mut |s: &Sender, d: Delivery<'_>| {
            if is_client {
                // on_client_data replies to node 1.
                let _ = s.send_with(1, TEST_SIZE, fill);
            }
            count_size += d.payload.len() as u64;
            count += 1;
        })?;
        let now = Instant::now();
        if is_client {
            // The poll thread's own sends: no wake-up needed.
            for _ in 0..10 {
                skip_backpressure(node.send_with(1, TEST_SIZE, fill))?;
            }
        } else if !report.more && report.received == 0 {
            let tick = (count_time + Duration::from_secs(1)).saturating_duration_since(now);
            node.wait(Some(tick.min(Duration::from_millis(100))))?;
        }
        if now >= next_signal_check {
            next_signal_check = now + Duration::from_millis(20);
            if let Some(info) = signals.read_signal()? {
                println!("app exit: signum={}", info.ssi_signo);
                break;
            }
        }
        let elapsed = now.saturating_duration_since(count_time);
        if elapsed > Duration::from_secs(1) {
            let ms = elapsed.as_millis().max(1) as u64;
            println!(
                "{} op/s, {} kb/s",
                count * 1000 / ms,
                count_size * 1000 / ms / 1024
            );
            count_time = now;
            count = 0;
            count_size = 0;
        }
    }
    node.close(Duration::from_millis(200))?;
    Ok(())
}
