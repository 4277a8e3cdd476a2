//! What a peer, or something between peers, can make a receiver hold: memory and disk for
//! half-assembled messages, and a full disk under a sender.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/relay.rs"]
mod relay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::CoreConfig;
use hrpc_wire::{DataFrame, MAX_MESSAGE_LEN};
use relay::{Relay, datagram, disk_usage};

const A: u32 = 1;
const B: u32 = 2;

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn poll(node: &mut Node, got: &mut Vec<(u32, u64, Vec<u8>)>) {
    node.poll(&mut |_, d| got.push((d.peer, d.seq, d.payload.to_vec())))
        .unwrap();
}

/// Nodes A (on `dir/a`, holding at most `budget` bytes of half-assembled messages) and B (on
/// `dir/b`), each knowing the other by `relay`'s address; the relay forwards to A.
fn relayed(dir: &Path, relay: &mut Relay, budget: usize) -> (Node, Node) {
    let mut core = CoreConfig::default();
    core.max_reassembly_bytes = budget;
    let a = NodeConfig::new(dir.join("a"), A)
        .bind(local())
        .peer(B, relay.addr())
        .core_config(core)
        .open()
        .unwrap();
    relay.a_addr = a.local_addr();
    let b = NodeConfig::new(dir.join("b"), B)
        .bind(local())
        .peer(A, relay.addr())
        .open()
        .unwrap();
    (a, b)
}

/// Invariant: a stream of never-completed 16 MiB messages, injected from B's address with B's
/// valid session values (a relay on the path forging fragments, seqs inside A's receive
/// window that B never reaches), keeps A's half-assembled bytes within
/// `max_reassembly_bytes` at every moment and A's store on disk within that plus a fixed
/// margin, however many such messages come (old ones are evicted when idle); and B's own
/// messages still all arrive, in order.
#[test]
fn forged_large_fragments_leave_store_and_memory_bounded() {
    const BUDGET: usize = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::new(local());
    let a_store = dir.path().join("a");
    let (mut a, mut b) = relayed(dir.path(), &mut relay, BUDGET);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    b.send(A, b"b 0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while got_a.is_empty() || relay.b_header.is_none() {
        assert!(Instant::now() < deadline, "no warm-up");
        poll(&mut a, &mut got_a);
        poll(&mut b, &mut got_b);
        relay.pump(4096);
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    let genuine = relay.b_header.unwrap();
    let baseline = disk_usage(&a_store);
    let payload = vec![0xEE; 1200];
    let mut injected = 0u64;
    let mut sent = 1u32;
    let mut max_asm = 0;
    let mut max_disk = 0;
    // Long enough for idle assemblies to be evicted (and room to be made for new ones) a few
    // times over.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        // A new forged message every 50 ms, each at its own seq far ahead of B's stream; a
        // few fragments each, never all of them.
        let seq = 50_000 + injected;
        for k in 0..4u32 {
            let d = datagram(&genuine, |w| {
                w.push_data(&DataFrame {
                    flags: 0,
                    seq,
                    msg_len: MAX_MESSAGE_LEN as u32,
                    offset: k * (4 << 20),
                    msg_crc: 0x0BAD_CAFE,
                    payload: &payload,
                })
                .unwrap()
            });
            relay.inject(&d);
        }
        injected += 1;
        if sent < 200 {
            b.send(A, format!("b {sent}").as_bytes()).unwrap();
            sent += 1;
        }
        let step_end = Instant::now() + Duration::from_millis(50);
        while Instant::now() < step_end {
            poll(&mut a, &mut got_a);
            poll(&mut b, &mut got_b);
            relay.pump(4096);
            max_asm = max_asm.max(a.stats().reassembly_bytes);
            a.wait(Some(Duration::from_millis(2))).unwrap();
        }
        max_disk = max_disk.max(disk_usage(&a_store));
    }
    while got_a.len() < sent as usize && Instant::now() < deadline {
        poll(&mut a, &mut got_a);
        poll(&mut b, &mut got_b);
        relay.pump(4096);
        a.wait(Some(Duration::from_millis(2))).unwrap();
    }
    let st = a.stats();
    // The forged fragments were taken in (each reserves its message's whole length), so the
    // bounds below were pressed, not met by dropping everything.
    assert!(
        max_asm >= MAX_MESSAGE_LEN,
        "no forged message was ever assembling ({injected} injected); {st:?}"
    );
    assert!(
        max_asm <= BUDGET,
        "{max_asm} half-assembled bytes held, over the budget of {BUDGET}"
    );
    // The budget (what the store may hold for assemblies) plus 16 MiB of slack for the
    // store's own files.
    let bound = baseline + BUDGET as u64 + (16 << 20);
    assert!(
        max_disk <= bound,
        "A's store grew to {max_disk} bytes on disk ({baseline} before, bound {bound}) \
         after {injected} forged 16 MiB messages; {st:?}"
    );
    let texts: Vec<String> = got_a
        .iter()
        .map(|g| String::from_utf8_lossy(&g.2).into_owned())
        .collect();
    let want: Vec<String> = (0..sent).map(|i| format!("b {i}")).collect();
    assert_eq!(texts, want, "B's messages to A; {st:?}");
    eprintln!(
        "{injected} forged messages: at most {max_asm} bytes assembling, {max_disk} bytes on disk \
         (from {baseline})"
    );
}

/// A small tmpfs this test mounts itself, unmounted when dropped (also while a failed
/// assertion unwinds).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it now, freed when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn msg(i: u32) -> Vec<u8> {
    let mut m = format!("message {i} ").into_bytes();
    m.resize(8192, (i % 251) as u8);
    m
}

/// Invariant: a node whose store is on a full disk (an 8 MiB tmpfs, the store's capacity
/// left at 1 GiB) answers sends with backpressure ([`SendError::StoreFull`]), never panics
/// and never loses a message it accepted; once its peer comes up and acknowledges, space
/// comes back, sends succeed again, and the peer receives every accepted message, in order
/// and intact.
///
/// [`SendError::StoreFull`]: hrpc_node::driver::SendError::StoreFull
#[test]
fn full_disk_gives_backpressure_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&dir.path().join("small"), "8m") {
        Ok(fs) => fs,
        Err(e) => {
            let msg = format!("resource_limits: CANNOT MOUNT A TMPFS ({e}); this test needs root");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! {msg}: SKIPPED (set CI to make this a failure) !!!!!!!!\n");
            return;
        }
    };
    // B is open but not polled until A's disk is full: nothing is acknowledged meanwhile.
    let mut b = NodeConfig::new(dir.path().join("b"), B)
        .bind(local())
        .open()
        .unwrap();
    let mut a = NodeConfig::new(fs.dir.join("a"), A)
        .bind(local())
        .peer(B, b.local_addr())
        .open()
        .unwrap();
    let mut sent = 0u32;
    let mut full = None;
    for _ in 0..10_000 {
        match a.send(B, &msg(sent)) {
            Ok(seq) => {
                assert_eq!(seq, u64::from(sent) + 1);
                sent += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e, hrpc_node::driver::SendError::StoreFull(_)),
                    "a full disk must be backpressure, got {e:?}"
                );
                full = Some(e);
                break;
            }
        }
        if sent.is_multiple_of(64) {
            a.poll(&mut |_, _| {}).unwrap();
        }
    }
    let full = full.expect("8 MiB never filled");
    assert!(sent > 0, "nothing fitted: {full}");
    // Still full, still backpressure, and polling copes.
    for _ in 0..20 {
        a.poll(&mut |_, _| {}).unwrap();
        let e = a.send(B, &msg(sent)).unwrap_err();
        assert!(e.is_backpressure(), "{e:?}");
        a.wait(Some(Duration::from_millis(5))).unwrap();
    }
    let at_full = sent;

    let mut got = Vec::new();
    let total = at_full * 3;
    let deadline = Instant::now() + Duration::from_secs(40);
    while (got.len() as u32) < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} delivered ({at_full} before the disk filled, {sent} sent): {:?}",
            got.len(),
            a.stats().core
        );
        while sent < total {
            match a.send(B, &msg(sent)) {
                Ok(seq) => {
                    assert_eq!(seq, u64::from(sent) + 1);
                    sent += 1;
                }
                Err(e) if e.is_backpressure() => break,
                Err(e) => panic!("send after recovery: {e:?}"),
            }
        }
        a.poll(&mut |_, _| {}).unwrap();
        poll(&mut b, &mut got);
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.1, i as u64 + 1, "delivery {i} out of order");
        assert!(g.2 == msg(i as u32), "delivery {i} corrupt");
    }
    eprintln!("{at_full} messages filled the disk ({full:?}); {total} delivered after recovery");
    drop(a);
    drop(b);
    drop(fs);
}

/// Invariant: one peer (or anything forging on its path) cannot take the whole reassembly
/// budget and keep it: while fragments of never-completed 16 MiB messages keep arriving
/// with B's valid session values, each making progress so none ever goes idle, another
/// peer's 4 MiB message is still assembled and delivered, intact, and so are B's own
/// messages.
#[test]
fn a_peer_cannot_starve_others_of_reassembly_space() {
    const BUDGET: usize = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::new(local());
    type Got = Vec<(u32, u64, Vec<u8>)>;
    let (mut a, mut b) = relayed(dir.path(), &mut relay, BUDGET);
    let mut c = NodeConfig::new(dir.path().join("c"), 3)
        .bind(local())
        .peer(A, a.local_addr())
        .open()
        .unwrap();
    let (mut got_a, mut got_b, mut got_c): (Got, Got, Got) = (Vec::new(), Vec::new(), Vec::new());
    b.send(A, b"b 0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let round =
        |a: &mut Node, b: &mut Node, c: &mut Node, relay: &mut Relay, got: [&mut Got; 3]| {
            let [got_a, got_b, got_c] = got;
            poll(a, got_a);
            poll(b, got_b);
            poll(c, got_c);
            relay.pump(4096);
            a.wait(Some(Duration::from_millis(2))).unwrap();
        };
    while got_a.is_empty() || relay.b_header.is_none() {
        assert!(Instant::now() < deadline, "no warm-up");
        round(
            &mut a,
            &mut b,
            &mut c,
            &mut relay,
            [&mut got_a, &mut got_b, &mut got_c],
        );
    }
    let genuine = relay.b_header.unwrap();
    let payload = vec![0xEE; 1200];
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut step = 0u32;
    let mut c_sent = false;
    let mut held_when_c_sent = 0;
    let forge_until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < forge_until && !got_a.iter().any(|g| g.0 == 3) {
        // Every 20 ms, a new fragment of each of 8 forged messages: all keep progressing.
        for k in 0..8u64 {
            let d = datagram(&genuine, |w| {
                w.push_data(&DataFrame {
                    flags: 0,
                    seq: 50_000 + k,
                    msg_len: MAX_MESSAGE_LEN as u32,
                    offset: step * 1200,
                    msg_crc: 0x0BAD_CAFE,
                    payload: &payload,
                })
                .unwrap()
            });
            relay.inject(&d);
        }
        step += 1;
        if step == 50 {
            // The forged messages hold what they can by now.
            held_when_c_sent = a.stats().reassembly_bytes;
            c.send(A, &big).unwrap();
            b.send(A, b"b 1").unwrap();
            c_sent = true;
        }
        let step_end = Instant::now() + Duration::from_millis(20);
        while Instant::now() < step_end {
            round(
                &mut a,
                &mut b,
                &mut c,
                &mut relay,
                [&mut got_a, &mut got_b, &mut got_c],
            );
        }
    }
    let st = a.stats();
    assert!(c_sent, "the forging phase ended early");
    assert!(
        held_when_c_sent >= MAX_MESSAGE_LEN,
        "the forged messages held only {held_when_c_sent} bytes when C sent; {st:?}"
    );
    let from_c: Vec<&(u32, u64, Vec<u8>)> = got_a.iter().filter(|g| g.0 == 3).collect();
    assert_eq!(
        from_c.len(),
        1,
        "C's 4 MiB message was not delivered while B's forged messages held {} bytes; {st:?}",
        st.reassembly_bytes
    );
    assert!(from_c[0].2 == big, "C's message corrupt");
    while got_a.iter().filter(|g| g.0 == B).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "B's messages not delivered: {st:?}"
        );
        round(
            &mut a,
            &mut b,
            &mut c,
            &mut relay,
            [&mut got_a, &mut got_b, &mut got_c],
        );
    }
}
