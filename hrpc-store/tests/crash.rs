//! Real process death. The test binary re-executes itself as a child (env `HRPC_CRASH_CHILD`)
//! that runs a deterministic workload on a store, announcing each operation on stdout before
//! (`@@B ...`) and after (`@@E ...`) doing it. The parent SIGKILLs it at a random point, or the
//! child aborts itself at a named fail point (`HRPC_STORE_FAILPOINT`). The parent then reopens
//! the store and checks it equals the model of all completed operations, or that model plus the
//! one operation that was in flight — byte for byte, nothing missing and nothing extra. Before
//! reopening, it inspects the crashed store (`hrpc_store::inspect`): no damage, the lock free,
//! and the same cursors, counts and bytes the reopened store reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{marker, marker_last, repr};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use hrpc_store::inspect::{LockState, inspect_dir};
use hrpc_store::{Store, StoreConfig, StoreError};
use rand::{Rng, SeedableRng, rngs::StdRng};

const CHILD_ENV: &str = "HRPC_CRASH_CHILD";
const SEED_ENV: &str = "HRPC_CRASH_SEED";
const MODE_ENV: &str = "HRPC_CRASH_MODE";

fn payload(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag.wrapping_mul(131).wrapping_add(i as u64 * 13) % 253) as u8)
        .collect()
}

fn cfg() -> StoreConfig {
    StoreConfig::new(5)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PeerState {
    out: BTreeMap<u64, Vec<u8>>,
    next: u64,
    consumed: u64,
    inbound: BTreeMap<u64, Vec<u8>>,
}
type State = BTreeMap<u32, PeerState>;

#[derive(Debug, Clone)]
enum Op {
    Send {
        peer: u32,
        len: usize,
        tag: u64,
    },
    Release {
        peer: u32,
        seq: u64,
    },
    Through {
        peer: u32,
        seq: u64,
    },
    Inbound {
        peer: u32,
        seq: u64,
        len: usize,
        tag: u64,
    },
    Consume {
        peer: u32,
        seq: u64,
    },
}

impl Op {
    fn encode(&self) -> String {
        match *self {
            Op::Send { peer, len, tag } => format!("S {peer} {len} {tag}"),
            Op::Release { peer, seq } => format!("R {peer} {seq}"),
            Op::Through { peer, seq } => format!("T {peer} {seq}"),
            Op::Inbound {
                peer,
                seq,
                len,
                tag,
            } => format!("I {peer} {seq} {len} {tag}"),
            Op::Consume { peer, seq } => format!("C {peer} {seq}"),
        }
    }
    fn decode(s: &str) -> Op {
        let f: Vec<&str> = s.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        match f[0] {
            "S" => Op::Send {
                peer: n(1) as u32,
                len: n(2) as usize,
                tag: n(3),
            },
            "R" => Op::Release {
                peer: n(1) as u32,
                seq: n(2),
            },
            "T" => Op::Through {
                peer: n(1) as u32,
                seq: n(2),
            },
            "I" => Op::Inbound {
                peer: n(1) as u32,
                seq: n(2),
                len: n(3) as usize,
                tag: n(4),
            },
            "C" => Op::Consume {
                peer: n(1) as u32,
                seq: n(2),
            },
            x => panic!("bad op {x}"),
        }
    }
    /// Applies to the model (all ops the child issues are valid against it).
    fn apply(&self, st: &mut State) {
        match *self {
            Op::Send { peer, len, tag } => {
                let p = st.entry(peer).or_default();
                let seq = p.next.max(1);
                p.out.insert(seq, payload(tag, len));
                p.next = seq + 1;
            }
            Op::Release { peer, seq } => {
                // A discard: one gap marker replaces everything up to `seq`.
                let p = st.entry(peer).or_default();
                let Some(&first) = p.out.keys().next() else {
                    return;
                };
                let last = p
                    .out
                    .range(..=seq)
                    .filter_map(|(_, v)| marker_last(v))
                    .fold(seq, u64::max);
                p.out = p.out.split_off(&(seq + 1));
                p.out.insert(first, marker(last));
            }
            Op::Through { peer, seq } => {
                let p = st.entry(peer).or_default();
                let mut keep = p.out.split_off(&(seq + 1));
                // A gap marker goes only once the ack covers its whole range.
                keep.extend(
                    p.out
                        .iter()
                        .filter(|(_, v)| marker_last(v).is_some_and(|l| l > seq))
                        .map(|(k, v)| (*k, v.clone())),
                );
                p.out = keep;
            }
            Op::Inbound {
                peer,
                seq,
                len,
                tag,
            } => {
                st.entry(peer)
                    .or_default()
                    .inbound
                    .insert(seq, payload(tag, len));
            }
            Op::Consume { peer, seq } => {
                let p = st.entry(peer).or_default();
                p.inbound.remove(&seq);
                p.consumed = seq;
            }
        }
    }
}

/// Chooses the next op from the model (so the parent never needs the child's RNG).
fn next_op(rng: &mut StdRng, st: &State, tag: u64) -> Op {
    let peer = rng.random_range(1..=3u32);
    let p = st.get(&peer).cloned().unwrap_or_default();
    let len = if rng.random_bool(0.05) {
        rng.random_range(1000..70_000)
    } else {
        rng.random_range(0..400)
    };
    match rng.random_range(0..10) {
        0..=3 => Op::Send { peer, len, tag },
        4 if !p.out.is_empty() => {
            let i = rng.random_range(0..p.out.len());
            Op::Release {
                peer,
                seq: *p.out.keys().nth(i).unwrap(),
            }
        }
        5 if !p.out.is_empty() => {
            let i = rng.random_range(0..p.out.len());
            Op::Through {
                peer,
                seq: *p.out.keys().nth(i).unwrap(),
            }
        }
        6 | 7 => {
            let seq = p.consumed + rng.random_range(1..4);
            if p.inbound.contains_key(&seq) {
                Op::Send { peer, len, tag }
            } else {
                Op::Inbound {
                    peer,
                    seq,
                    len,
                    tag,
                }
            }
        }
        _ if p.inbound.contains_key(&(p.consumed + 1)) => Op::Consume {
            peer,
            seq: p.consumed + 1,
        },
        _ => Op::Send { peer, len, tag },
    }
}

fn observe(store: &Store) -> State {
    let mut st = State::new();
    for peer in store.peers() {
        let p = PeerState {
            out: store
                .outbound_seqs(peer)
                .into_iter()
                .map(|s| (s, repr(&store.outbound_message(peer, s).unwrap())))
                .collect(),
            next: store.outbound_pending(peer).map_or(1, |p| p.1),
            consumed: store.inbound_consumed(peer),
            inbound: store
                .inbound_seqs(peer)
                .into_iter()
                .map(|s| (s, repr(&store.inbound_message(peer, s).unwrap())))
                .collect(),
        };
        st.insert(peer, p);
    }
    st
}

fn normalize(mut st: State) -> State {
    for p in st.values_mut() {
        p.next = p.next.max(1);
    }
    st.retain(|_, p| {
        *p != PeerState {
            next: 1,
            ..PeerState::default()
        }
    });
    st
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("@@{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

fn child_workload(dir: &Path, seed: u64) {
    let mut store = Store::open(dir, &cfg()).unwrap();
    let mut st = normalize(observe(&store));
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = std::time::Instant::now();
    emit("READY");
    for tag in 0..3000u64 {
        let op = next_op(&mut rng, &st, tag);
        emit(&format!("B {}", op.encode()));
        match op {
            Op::Send { peer, len, tag } => {
                let mut r = store.reserve(peer, len).unwrap();
                r.payload_mut().copy_from_slice(&payload(tag, len));
                r.commit().unwrap();
            }
            Op::Release { peer, seq } => {
                store.discard_outbound(peer, seq).unwrap();
            }
            Op::Through { peer, seq } => {
                store.release_outbound_through(peer, seq).unwrap();
            }
            Op::Inbound {
                peer,
                seq,
                len,
                tag,
            } => {
                let p = payload(tag, len);
                let slot = store
                    .begin_inbound(peer, seq, len as u32, crc32c::crc32c(&p), 0)
                    .unwrap();
                for (i, chunk) in p.chunks(1000).enumerate().rev() {
                    store
                        .write_inbound(&slot, (i * 1000) as u32, chunk)
                        .unwrap();
                }
                store.commit_inbound(slot).unwrap();
            }
            Op::Consume { peer, seq } => store.consume_inbound(peer, seq).unwrap(),
        }
        op.apply(&mut st);
        emit("E");
        // Reclaim between operations (one virtual second each), so a kill can land in the
        // middle of deleting a segment; it changes nothing the model sees.
        store.maintain_at(t0 + std::time::Duration::from_secs(tag));
    }
    emit("DONE");
}

/// Child entry point (a no-op unless re-executed by a parent test).
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    match std::env::var(MODE_ENV).as_deref() {
        Ok("try-open") => match Store::open(Path::new(&dir), &cfg()) {
            Err(StoreError::Locked { .. }) => emit("LOCKED"),
            Ok(_) => emit("OPENED"),
            Err(e) => emit(&format!("ERROR {e}")),
        },
        _ => {
            let seed = std::env::var(SEED_ENV).unwrap().parse().unwrap();
            child_workload(Path::new(&dir), seed);
        }
    }
}

fn spawn_child(dir: &Path, envs: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir)
    .env_remove("HRPC_STORE_FAILPOINT")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Runs one child generation on `dir` (continuing from `model`), kills it after `kill_after`
/// completed ops (or lets a fail point kill it), then checks the reopened store.
fn run_once(
    dir: &Path,
    model: &mut State,
    seed: u64,
    kill_after: Option<usize>,
    fp: Option<String>,
) -> std::process::ExitStatus {
    let mut envs = vec![(SEED_ENV, seed.to_string())];
    if let Some(fp) = &fp {
        envs.push(("HRPC_STORE_FAILPOINT", fp.clone()));
    }
    let mut child = spawn_child(dir, &envs);
    let out = child.stdout.take().unwrap();
    let mut in_flight: Option<Op> = None;
    let mut done = 0usize;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Some(l) = line.strip_prefix("@@") else {
            continue;
        };
        if let Some(op) = l.strip_prefix("B ") {
            in_flight = Some(Op::decode(op));
        } else if l == "E" {
            if let Some(op) = in_flight.take() {
                op.apply(model);
            }
            done += 1;
            if Some(done) == kill_after {
                child.kill().unwrap();
                // Ops announced after this point are still reported in the pipe; keep reading.
            }
        }
    }
    let status = child.wait().unwrap();
    eprintln!(
        "child (fp {fp:?}, kill_after {kill_after:?}): {done} ops done, in flight {}, {status:?}",
        in_flight.is_some()
    );
    // Inspection of the crashed store (read-only, no lock) succeeds, finds nothing wrong
    // (a process crash damages nothing) and says what the reopened store says.
    let inspected = inspect_dir(dir).expect("inspect after crash");
    assert!(
        inspected.is_healthy(),
        "after crash: {:?}",
        inspected.damage
    );
    assert_eq!(inspected.lock, LockState::Free);
    let store = Store::open(dir, &cfg()).expect("reopen after crash");
    let reported: Vec<_> = inspected.peers.iter().map(|p| p.peer_report()).collect();
    assert_eq!(
        reported,
        store.inspect().peers,
        "inspection disagrees with the store"
    );
    assert_eq!(inspected.used_bytes, store.usage().0);
    let seen = normalize(observe(&store));
    let before = normalize(model.clone());
    let mut after_model = model.clone();
    if let Some(op) = &in_flight {
        op.apply(&mut after_model);
    }
    let after = normalize(after_model.clone());
    if seen == after {
        *model = after_model;
    } else {
        assert!(
            seen == before,
            "state after crash (fp {fp:?}, in flight {in_flight:?}) matches neither model;\n\
             seen {:?}\n before {:?}",
            summary(&seen),
            summary(&before)
        );
    }
    // The store keeps working: a new message (to a peer the workload leaves alone) gets the
    // next seq, and the model learns of it.
    let probe = Op::Send {
        peer: 99,
        len: 7,
        tag: seed,
    };
    let next = store.outbound_pending(99).map_or(1, |p| p.1);
    assert_eq!(
        store.producer().send(99, &payload(seed, 7)).unwrap(),
        next,
        "the reopened store did not go on numbering"
    );
    probe.apply(model);
    drop(store);
    status
}

type Summary = (u32, Vec<u64>, u64, u64, Vec<u64>);

fn summary(s: &State) -> Vec<Summary> {
    s.iter()
        .map(|(p, st)| {
            (
                *p,
                st.out.keys().copied().collect(),
                st.next,
                st.consumed,
                st.inbound.keys().copied().collect(),
            )
        })
        .collect()
}

/// SIGKILL at random points, several generations on the same store: every reported-committed
/// message survives byte for byte and nothing else appears.
#[test]
fn sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = State::new();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..25u64 {
        let kill_after = rng.random_range(1..400);
        run_once(
            dir.path(),
            &mut model,
            round * 7919 + 1,
            Some(kill_after),
            None,
        );
    }
}

/// The child aborts at each named fail point (between the steps of commit, free, cursor update,
/// record write, segment creation): the reopened store equals the model before or after the
/// interrupted operation.
#[test]
fn abort_at_fail_points() {
    // Every fail point the child's workload passes through. It never resets a
    // peer, so `reset.after_record` is unreachable here (a reset is one record
    // write; the model test checks resets across reopen).
    let names: Vec<&str> = hrpc_store::failpoint::NAMES
        .iter()
        .copied()
        .filter(|n| *n != "reset.after_record")
        .collect();
    assert_eq!(names.len(), hrpc_store::failpoint::NAMES.len() - 1);
    for (i, name) in names.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = State::new();
        for (j, n) in [1u64, 3, 20].into_iter().enumerate() {
            let seed = (i * 10 + j) as u64 + 100;
            let status = run_once(
                dir.path(),
                &mut model,
                seed,
                None,
                Some(format!("{name}:{n}")),
            );
            // The first time the workload passes the point, the child must abort there
            // (a fail point that never fires would make this test pass without testing).
            if n == 1 {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc_sigabrt()),
                    "fail point {name} did not abort the child ({status:?})"
                );
            }
        }
    }
}

/// Inspection beside a live writer in another process: every inspection succeeds (what changed
/// under the read may show as damage, nothing worse), reports the lock held while the writer
/// works, and the writer is not disturbed: killed afterwards, its store reopens as the model of
/// its operations says (`run_once`'s checks).
#[test]
fn inspection_beside_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(dir.path(), &[(SEED_ENV, "4242".to_string())]);
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut ops = Vec::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("@@READY") {
                let _ = tx.send(());
            }
            if line.ends_with("@@DONE") {
                let _ = done_tx.send(());
            }
            ops.push(line);
        }
        ops
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("child ready");
    let (mut inspections, mut held, mut transient) = (0, 0, 0);
    while inspections < 200 {
        let i = inspect_dir(dir.path()).expect("inspect beside a live writer");
        inspections += 1;
        transient += usize::from(!i.is_healthy());
        if child.try_wait().unwrap().is_some() {
            break;
        }
        // Alive after the inspection, so alive during it. The writer drops its store, and
        // with it the lock, after its last operation and before its process exits: a free
        // lock is right only once it has said DONE (written before the drop).
        if i.lock == LockState::Free {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the lock was free while the writer was still working");
            break;
        }
        assert_eq!(i.lock, LockState::Held);
        held += 1;
    }
    let _ = child.kill();
    child.wait().unwrap();
    let ops = reader.join().unwrap();
    eprintln!(
        "{inspections} inspections, {held} while the writer lived, {transient} saw it moving; \
         the writer got through {} lines",
        ops.len()
    );
    // The writer's store is intact: replay the ops it completed into a model and let the
    // usual post-crash checks (inspection, reopen, model) run on it.
    let mut model = State::new();
    let mut in_flight = None;
    for l in ops.iter().filter_map(|l| l.strip_prefix("@@")) {
        if let Some(op) = l.strip_prefix("B ") {
            in_flight = Some(Op::decode(op));
        } else if l == "E"
            && let Some(op) = in_flight.take()
        {
            op.apply(&mut model);
        }
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let seen = normalize(observe(&store));
    let mut after = model.clone();
    if let Some(op) = &in_flight {
        op.apply(&mut after);
    }
    assert!(
        seen == normalize(model) || seen == normalize(after),
        "the writer's store does not match its operations"
    );
}

/// A second process opening a locked store gets `Locked`; once the owner is gone it opens.
#[test]
fn locked_by_other_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let child = spawn_child(dir.path(), &[(MODE_ENV, "try-open".into())]);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("@@LOCKED"), "child output: {text}");
    drop(store);
    let child = spawn_child(dir.path(), &[(MODE_ENV, "try-open".into())]);
    let text = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string();
    assert!(text.contains("@@OPENED"), "child output: {text}");
}

/// SIGABRT's number (6 on Linux), without a libc dependency.
fn libc_sigabrt() -> i32 {
    6
}
