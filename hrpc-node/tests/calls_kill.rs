//! Request/response between two real processes, each SIGKILLed repeatedly during a stream of
//! calls and restarted on its store: every call gets exactly one response (handed again only
//! when the caller died before its handler's return was recorded), no request is answered
//! twice, and none times out.
//!
//! The test binary re-executes itself as the caller or the callee (`child_role`, chosen by
//! environment variables); without them `child_role` returns at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::child::{free_port, open_log, spawn_child_role};
use hrpc_node::driver::NodeConfig;
use hrpc_node::proto::MessageKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CALLEE_ADDR: &str = "HRPC_CALLS_CALLEE";
const CALLER_ADDR: &str = "HRPC_CALLS_CALLER";
const COUNT: &str = "HRPC_CALLS_COUNT";
/// A child never outlives this, even if the parent died without killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(150);
/// Far beyond the test's length: a timeout here means a lost request or response.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Log record: `[a u64][b u64][kind u8][0xAB]`, padded to 32 bytes so that a record never
/// straddles a page (a SIGKILL cannot tear one).
const REC: usize = 32;
const RESPONSE: u8 = 1;
const TIMED_OUT: u8 = 2;
const MADE: u8 = 3;
const SERVED: u8 = 4;

fn append(log: &mut std::fs::File, a: u64, b: u64, kind: u8) {
    let mut rec = [0u8; REC];
    rec[0..8].copy_from_slice(&a.to_le_bytes());
    rec[8..16].copy_from_slice(&b.to_le_bytes());
    rec[16] = kind;
    rec[17] = 0xAB;
    // One write(2): in the page cache before the handler returns.
    log.write_all(&rec).unwrap();
}

fn read_log(path: &Path) -> Vec<(u64, u64, u8)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(REC)
        .map(|r| {
            assert_eq!(r[17], 0xAB, "log record intact");
            (
                u64::from_le_bytes(r[0..8].try_into().unwrap()),
                u64::from_le_bytes(r[8..16].try_into().unwrap()),
                r[16],
            )
        })
        .collect()
}

/// Node 1: answers each request `[k u64]` with `[k u64][call id u64]`, then logs
/// `(call id, k, SERVED)`: a logged request is one whose reply (and consumption) committed.
fn callee(dir: &Path, me: SocketAddr, caller: SocketAddr) {
    let mut node = NodeConfig::new(dir.join("callee-store"), 1)
        .bind(me)
        .peer(2, caller)
        .open()
        .unwrap();
    let mut log = open_log(&dir.join("served.log"));
    let end = Instant::now() + CHILD_LIFETIME;
    while Instant::now() < end {
        node.poll(&mut |s, d| {
            let MessageKind::Request { call } = d.kind else {
                panic!("callee got {:?}", d.kind);
            };
            let k: [u8; 8] = d.payload.try_into().unwrap();
            let mut resp = [0u8; 16];
            resp[..8].copy_from_slice(&k);
            resp[8..].copy_from_slice(&call.0.to_le_bytes());
            s.reply(&d, &resp).unwrap();
            append(&mut log, call.0, u64::from_le_bytes(k), SERVED);
        })
        .unwrap();
        node.wait(Some(Duration::from_millis(20))).unwrap();
    }
}

/// Node 2: makes calls `k = 0..count` (paced, about 2000 a second), logging `(call id, k,
/// MADE)` once each returns, and each outcome as `(call id, k, RESPONSE)` (k as echoed) or
/// `(call id, 0, TIMED_OUT)`. Resumes after the last k its log shows made.
fn caller(dir: &Path, me: SocketAddr, callee: SocketAddr, count: u64) {
    let mut node = NodeConfig::new(dir.join("caller-store"), 2)
        .bind(me)
        .peer(1, callee)
        .open()
        .unwrap();
    let made_path = dir.join("made.log");
    let mut next = read_log(&made_path)
        .iter()
        .map(|r| r.1 + 1)
        .max()
        .unwrap_or(0);
    let mut made = open_log(&made_path);
    let mut outcomes = open_log(&dir.join("outcomes.log"));
    let end = Instant::now() + CHILD_LIFETIME;
    let mut next_burst = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_burst {
            next_burst += Duration::from_millis(5);
            for _ in 0..10 {
                if next >= count {
                    break;
                }
                match node.call(1, &next.to_le_bytes(), CALL_TIMEOUT) {
                    Ok(call) => {
                        append(&mut made, call.0, next, MADE);
                        next += 1;
                    }
                    Err(e) if e.is_backpressure() => break,
                    Err(e) => panic!("call: {e}"),
                }
            }
        }
        node.poll(&mut |_, d| match d.kind {
            MessageKind::Response { call } => {
                let k = u64::from_le_bytes(d.payload[..8].try_into().unwrap());
                let echo = u64::from_le_bytes(d.payload[8..].try_into().unwrap());
                assert_eq!(echo, call.0, "the response names its own call");
                append(&mut outcomes, call.0, k, RESPONSE);
            }
            MessageKind::CallTimedOut { call } => append(&mut outcomes, call.0, 0, TIMED_OUT),
            k => panic!("caller got {k:?}"),
        })
        .unwrap();
        node.wait(Some(Duration::from_millis(5))).unwrap();
    }
}

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    let Some((role, dir)) = common::child::child_role() else {
        return;
    };
    let callee_addr: SocketAddr = std::env::var(CALLEE_ADDR).unwrap().parse().unwrap();
    let caller_addr: SocketAddr = std::env::var(CALLER_ADDR).unwrap().parse().unwrap();
    match role.as_str() {
        "callee" => callee(&dir, callee_addr, caller_addr),
        "caller" => caller(
            &dir,
            caller_addr,
            callee_addr,
            std::env::var(COUNT).unwrap().parse().unwrap(),
        ),
        r => panic!("unknown role {r}"),
    }
}

struct Setup {
    dir: PathBuf,
    callee: SocketAddr,
    caller: SocketAddr,
    count: u64,
}

impl Setup {
    /// Starts `role`; with `abort_at = Some(n)` the child aborts right after its store
    /// published its `n`-th commit (for the callee: between a reply's commit and the
    /// request's consumption record; for the caller: between a call's commit and its log).
    fn spawn(&self, role: &str, abort_at: Option<u64>) -> Child {
        let mut envs = vec![
            (CALLEE_ADDR, self.callee.to_string()),
            (CALLER_ADDR, self.caller.to_string()),
            (COUNT, self.count.to_string()),
        ];
        if let Some(n) = abort_at {
            envs.push(("HRPC_STORE_FAILPOINT", format!("commit.after_publish:{n}")));
        }
        spawn_child_role(role, &self.dir, &envs)
    }
}

/// Kills caller and callee alternately with SIGKILL at varying moments (6 kills each while
/// 8 000 calls are made), restarting each on its store and port; the first three restarts
/// of each also abort at the worst moment, right after a commit (a reply, or a call). Then:
/// - the callee answered no call twice (its log of committed replies has no repeat);
/// - every call the caller made (and every call the callee answered) has an outcome in the
///   caller's log, a response carrying the call's own k, and none timed out;
/// - a call's outcome is logged more than once only as the redelivery of the same response
///   after a caller kill, at most once per caller kill;
/// - every k from 0 to 7 999 was called (a call made just before a kill and not logged as
///   made is made again, under a new id, and answered too).
#[test]
fn sigkill_caller_and_callee_during_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_path_buf(),
        callee: free_port(),
        caller: free_port(),
        count: 8000,
    };
    let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let mut callee = s.spawn("callee", None);
    let mut caller = s.spawn("caller", None);
    let (mut caller_kills, mut aborts) = (0u64, 0u64);
    // Restarts a child that aborted at its fail point (counted as a kill of it).
    let revive = |c: &mut Child, role: &str, aborts: &mut u64| -> bool {
        if c.try_wait().unwrap().is_some() {
            *aborts += 1;
            *c = s.spawn(role, None);
            return true;
        }
        false
    };
    for k in 0..12 {
        std::thread::sleep(Duration::from_millis(100 + rng.random_range(0..300)));
        let armed = (k < 6).then(|| 20 + rng.random_range(0..400));
        if revive(&mut caller, "caller", &mut aborts) {
            caller_kills += 1;
        }
        revive(&mut callee, "callee", &mut aborts);
        if k % 2 == 0 {
            caller.kill().unwrap();
            caller.wait().unwrap();
            caller_kills += 1;
            caller = s.spawn("caller", armed);
        } else {
            callee.kill().unwrap();
            callee.wait().unwrap();
            callee = s.spawn("callee", armed);
        }
    }
    let made_at_last_kill = read_log(&s.dir.join("made.log")).len() as u64;
    assert!(
        made_at_last_kill < s.count,
        "the kills must land mid-stream ({made_at_last_kill} of {} calls made already)",
        s.count
    );
    // Let the calls finish: every made call has an outcome.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if revive(&mut caller, "caller", &mut aborts) {
            caller_kills += 1;
        }
        revive(&mut callee, "callee", &mut aborts);
        let made = read_log(&s.dir.join("made.log"));
        let ended: BTreeSet<u64> = read_log(&s.dir.join("outcomes.log"))
            .iter()
            .map(|r| r.0)
            .collect();
        if made.iter().any(|r| r.1 + 1 == s.count) && made.iter().all(|r| ended.contains(&r.0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut caller, &mut callee] {
        let _ = c.kill();
        let _ = c.wait();
    }

    let made = read_log(&s.dir.join("made.log"));
    let served = read_log(&s.dir.join("served.log"));
    let outcomes = read_log(&s.dir.join("outcomes.log"));

    let mut served_k = BTreeMap::new();
    for &(call, k, kind) in &served {
        assert_eq!(kind, SERVED);
        assert!(
            served_k.insert(call, k).is_none(),
            "call {call:#x} (k {k}) was answered twice"
        );
    }
    let mut ended: BTreeMap<u64, (u64, u8)> = BTreeMap::new();
    let mut repeats = 0;
    for &(call, k, kind) in &outcomes {
        assert_ne!(kind, TIMED_OUT, "call {call:#x} timed out");
        assert_eq!(kind, RESPONSE);
        if let Some(&first) = ended.get(&call) {
            assert_eq!(first, (k, kind), "call {call:#x} ended two different ways");
            repeats += 1;
        } else {
            ended.insert(call, (k, kind));
        }
    }
    assert!(
        repeats <= caller_kills,
        "{repeats} repeated outcomes for {caller_kills} caller kills"
    );
    let mut called = BTreeSet::new();
    for &(call, k, kind) in &made {
        assert_eq!(kind, MADE);
        assert_eq!(
            ended.get(&call).map(|e| e.0),
            Some(k),
            "call {call:#x} (k {k}) has no response of its own"
        );
        called.insert(k);
    }
    for (call, k) in &served_k {
        assert_eq!(
            ended.get(call).map(|e| e.0),
            Some(*k),
            "answered call {call:#x} never reached the caller"
        );
    }
    assert_eq!(called.len() as u64, s.count, "every k was called");
    // One reply committed per call, and no other: the callee's outbound stream to the caller
    // holds exactly as many seqs as there were calls (a request answered twice, say after a
    // crash between the reply and the request's consumption, would add one).
    let store = hrpc_store::Store::open(
        &s.dir.join("callee-store"),
        &hrpc_store::StoreConfig::new(1),
    )
    .unwrap();
    let replies = store.outbound_pending(2).map_or(0, |(_, next)| next - 1);
    assert_eq!(
        replies,
        ended.len() as u64,
        "replies committed by the callee"
    );
    drop(store);
    let unlogged = ended.len() - made.len();
    eprintln!(
        "{} calls made ({unlogged} not logged as made), {} answered, {repeats} outcomes handed again, {caller_kills} caller kills, {aborts} aborts at a fail point",
        ended.len(),
        served.len()
    );
    assert!(aborts > 0, "the fail points fired");
}
