//! Configurations the API accepts must work; the others must be refused up front.
//!
//! The adversary is a configuration that is legal by the types — extreme durations (zero,
//! `Duration::MAX`), zero or `usize::MAX`-like sizes — handed to `CoreConfig::validate` /
//! `NodeConfig::open`. A value that passes validation and later panics (a duration overflow in
//! a timer), or that makes the node useless (nothing ever delivered), is the bug.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Seen;
use common::cluster::Cluster;
use common::nodes::Mesh;
use hrpc_node::driver::{NodeConfig, NodeError};
use hrpc_node::proto::{Core, CoreConfig, StaticResolver};
use hrpc_store::{Store, StoreConfig};
use proptest::prelude::*;

/// Durations from every corner: zero, one nanosecond, `MAX`, around the documented bounds, and
/// anything at all.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(Duration::from_secs(3600)),
        Just(Duration::from_secs(3600) + Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        (1u64..=5_000).prop_map(Duration::from_millis),
        (0u64..=7_200).prop_map(Duration::from_secs),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Sizes and counts from every corner.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(usize::MAX),
        Just(usize::MAX / 2),
        Just(1 << 30),
        1usize..4096,
        4096usize..(64 << 20),
        any::<usize>(),
    ]
}

fn count32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        1u32..4096,
        any::<u32>()
    ]
}

/// Each field from the strategies above with probability `p`, else its default, so that a
/// case is not almost always refused for one wild field.
fn core_config_with(p: f64) -> impl Strategy<Value = CoreConfig> {
    let durations = proptest::collection::vec(proptest::option::weighted(p, duration()), 5);
    let sizes = proptest::collection::vec(proptest::option::weighted(p, size()), 7);
    let counts = proptest::collection::vec(proptest::option::weighted(p, count32()), 3);
    (durations, sizes, counts).prop_map(|(d, s, c)| {
        let mut cfg = CoreConfig::default();
        let set_d = |field: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set_d(&mut cfg.initial_rtt, d[0]);
        set_d(&mut cfg.min_rto, d[1]);
        set_d(&mut cfg.max_rto, d[2]);
        set_d(&mut cfg.heartbeat_interval, d[3]);
        set_d(&mut cfg.unreachable_after, d[4]);
        let set_s = |field: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set_s(&mut cfg.mtu, s[0]);
        set_s(&mut cfg.max_segments, s[1].map(|v| v % 80));
        set_s(&mut cfg.max_peers, s[2]);
        set_s(&mut cfg.max_reassembly_bytes, s[3]);
        set_s(&mut cfg.max_reassemblies_per_peer, s[4]);
        set_s(&mut cfg.initial_cwnd, s[5]);
        set_s(&mut cfg.max_cwnd, s[6]);
        let set_c = |field: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set_c(&mut cfg.recv_window_msgs, c[0]);
        set_c(&mut cfg.initial_window_msgs, c[1]);
        set_c(&mut cfg.max_unsolicited_per_sec, c[2]);
        cfg
    })
}

/// Configurations with a few wild fields (about two per case).
fn core_config() -> impl Strategy<Value = CoreConfig> {
    core_config_with(0.15)
}

/// Runs `test` on `cases` values of `strategy` (proptest's runner, with shrinking), where
/// `test` returns whether the configuration was accepted; then checks that both branches of
/// the property were exercised at least `min_each` times, so the test cannot pass by refusing
/// (or accepting) everything.
fn run_both_ways<S: Strategy>(
    cases: u32,
    min_each: usize,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let accepted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |v| {
        let ok = test(v)?;
        let c = if ok { &accepted } else { &refused };
        c.set(c.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        accepted.get() >= min_each && refused.get() >= min_each,
        "property exercised too one-sidedly: {} accepted, {} refused",
        accepted.get(),
        refused.get()
    );
}

/// The messages each side sends: empty, small, and (when the receiver's reassembly budget can
/// hold it) one longer than a default datagram.
fn messages(cfg: &CoreConfig, from: u32) -> Vec<Vec<u8>> {
    let mut v = vec![Vec::new(), vec![from as u8; 100]];
    if cfg.max_reassembly_bytes >= 3000 {
        v.push((0..3000u32).map(|i| (i as u8) ^ from as u8).collect());
    }
    v
}

/// Two cores in virtual time, each with `cfg`, send each other [`messages`]; returns what each
/// delivered. A [`Cluster`] whose rounds are not of a fixed length: when no datagram is in
/// flight, time jumps to the earliest of the two cores' timers (else 1 ms), so hour-long timers
/// cost no more rounds than short ones. Bounded: at most `steps` rounds.
fn exchange(cfg: &CoreConfig, steps: usize) -> (Seen, Seen) {
    let mut c = Cluster::empty();
    c.add(1, StoreConfig::new(1), cfg.clone());
    c.add(2, StoreConfig::new(2), cfg.clone());
    for m in messages(cfg, 1) {
        c.core(1).producer().send(2, &m).unwrap();
    }
    for m in messages(cfg, 2) {
        c.core(2).producer().send(1, &m).unwrap();
    }
    let want = messages(cfg, 1).len();
    // What node 1 sends reaches node 2 in the same round, as with two cores driven in turn
    // (symmetric timing has its own test: `handshake.rs::simultaneous_open_completes`).
    c.latency(1, 2, 0);
    // The first round runs at the time the cores were opened.
    c.tick = Duration::ZERO;
    for _ in 0..steps {
        c.step();
        if [1, 2].iter().all(|&id| c.seen(id).got.len() >= want) {
            break;
        }
        c.tick = match c.next_timer() {
            Some(t) if !c.in_flight() && t > c.now => t - c.now,
            _ => Duration::from_millis(1),
        };
    }
    (c.take_seen(1), c.take_seen(2))
}

/// Asserts that `seen` got exactly `msgs` from `peer`, as seqs 1, 2, 3, …
fn check_delivered(seen: &Seen, peer: u32, msgs: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let got: Vec<(u64, Vec<u8>)> = seen
        .got
        .iter()
        .filter(|g| g.0 == peer)
        .map(|g| (g.1, g.2.clone()))
        .collect();
    let want: Vec<(u64, Vec<u8>)> = (1..).zip(msgs.iter().cloned()).collect();
    prop_assert_eq!(got, want, "delivered from peer {}", peer);
    Ok(())
}

/// **Invariant:** for every `CoreConfig` the type can hold, `validate()` either refuses it
/// with an error (and then `Core::new` refuses it too), or two cores built with it, in memory
/// and in virtual time, exchange a few messages each way — empty, small and, when the
/// reassembly budget allows, fragmented — without any panic (no duration overflow in a timer,
/// no clamp with crossed bounds) and deliver every one, in order, intact.
#[test]
fn core_config_is_refused_or_works() {
    run_both_ways(256, 30, core_config(), |cfg| match cfg.validate() {
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), &StoreConfig::new(1)).unwrap();
            let resolver = Box::new(StaticResolver::default());
            let core = Core::new(store, cfg.clone(), resolver, Instant::now());
            prop_assert!(
                core.is_err(),
                "validate refused {:?} but Core::new took it",
                cfg
            );
            Ok(false)
        }
        Ok(()) => {
            let (a, b) = exchange(&cfg, 3000);
            check_delivered(&b, 1, &messages(&cfg, 1))?;
            check_delivered(&a, 2, &messages(&cfg, 2))?;
            Ok(true)
        }
    });
}

/// The report, as a test: `unreachable_after = Duration::MAX` used to pass `validate` and then
/// panic with a duration overflow in `handle_timeout`. Each duration field set to `MAX` alone
/// must be refused.
#[test]
fn duration_max_is_refused() {
    type Field = fn(&mut CoreConfig) -> &mut Duration;
    let fields: [(&str, Field); 5] = [
        ("initial_rtt", |c| &mut c.initial_rtt),
        ("min_rto", |c| &mut c.min_rto),
        ("max_rto", |c| &mut c.max_rto),
        ("heartbeat_interval", |c| &mut c.heartbeat_interval),
        ("unreachable_after", |c| &mut c.unreachable_after),
    ];
    for (name, field) in fields {
        let mut cfg = CoreConfig::default();
        *field(&mut cfg) = Duration::MAX;
        let e = cfg.validate().err();
        assert!(e.is_some(), "{name} = Duration::MAX was accepted");
        let shown = e.unwrap().to_string();
        assert!(shown.contains(name), "{name}: {shown}");
    }
}

/// Node-level settings, on real sockets: `NodeConfig::open` either refuses the configuration
/// with an error (never a panic), or two nodes built with it exchange a few messages over
/// loopback. Few cases: each opens two sockets and two stores.
fn node_config_exchange(
    dir: &std::path::Path,
    core: &CoreConfig,
    tune: &dyn Fn(NodeConfig) -> NodeConfig,
) -> Result<bool, TestCaseError> {
    let mut mesh = Mesh::new();
    let open = |id: u32| {
        let addrs = mesh.table.clone();
        let c = NodeConfig::new(dir.join(id.to_string()), id)
            .bind("127.0.0.1:0".parse().unwrap())
            .core_config(core.clone())
            .resolver(move |peer: u32| addrs.lock().unwrap().get(&peer).copied());
        tune(c).open()
    };
    let a = match open(1) {
        Ok(n) => n,
        Err(e) => {
            prop_assert!(
                matches!(e, NodeError::Config(_) | NodeError::Store(_)),
                "refused with a non-configuration error: {e:?}"
            );
            return Ok(false);
        }
    };
    let b = open(2).unwrap();
    // Inserted, they find each other through the mesh's table.
    mesh.insert(a);
    mesh.insert(b);
    for i in 0..3u8 {
        mesh.node(1).send(2, &[i; 10]).unwrap();
        mesh.node(2).send(1, &[i + 10; 10]).unwrap();
    }
    mesh.run_until(
        |m| m.got(1).len() >= 3 && m.got(2).len() >= 3,
        Duration::from_millis(2),
        Duration::from_secs(20),
    );
    let payloads = |id| -> Vec<Vec<u8>> { mesh.got(id).iter().map(|g| g.2.clone()).collect() };
    let (got_a, got_b) = (payloads(1), payloads(2));
    prop_assert_eq!(
        got_a,
        (0..3u8).map(|i| vec![i + 10; 10]).collect::<Vec<_>>()
    );
    prop_assert_eq!(got_b, (0..3u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    mesh.remove(1).close(Duration::ZERO).unwrap();
    mesh.remove(2).close(Duration::ZERO).unwrap();
    Ok(true)
}

/// **Invariant:** for any values of the `NodeConfig` setters (store capacity and peers,
/// unacked and receive windows, per-poll budget, socket buffers, MTU) and any `CoreConfig`,
/// `NodeConfig::open` either refuses the configuration with a configuration or store error —
/// never a panic — or two nodes built with it exchange three messages each way over loopback
/// and deliver them in order. Few cases: each opens real sockets and stores.
#[test]
fn node_config_is_refused_or_works() {
    let strategy = (
        proptest::option::weighted(0.25, core_config()),
        prop_oneof![
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
            6 => (64u64 << 10)..(1 << 30),
        ],
        prop_oneof![1 => count32(), 6 => 1u32..70_000],
        prop_oneof![1 => Just(0u64), 1 => Just(u64::MAX), 4 => 1u64..1_000_000],
        prop_oneof![1 => count32(), 4 => 1u32..100_000],
        prop_oneof![1 => size(), 4 => 1usize..100_000],
        (
            prop_oneof![1 => size(), 6 => (64usize << 10)..(16 << 20)],
            prop_oneof![1 => size(), 6 => (64usize << 10)..(16 << 20)],
        ),
        proptest::option::weighted(0.2, size()),
    );
    run_both_ways(
        32,
        5,
        strategy,
        |(core, capacity, max_peers, unacked, window, deliveries, bufs, mtu)| {
            let dir = tempfile::tempdir().unwrap();
            let core = core.unwrap_or_default();
            let tune = move |c: NodeConfig| {
                let c = c
                    .store_capacity(capacity)
                    .store_max_peers(max_peers)
                    .max_unacked_per_peer(unacked)
                    .recv_window(window)
                    .deliveries_per_poll(deliveries)
                    .socket_buffers(bufs.0, bufs.1);
                match mtu {
                    Some(m) => c.mtu(m),
                    None => c,
                }
            };
            node_config_exchange(dir.path(), &core, &tune)
        },
    );
}
