//! The `metrics` feature: two real nodes on loopback publish into a recorder local to the test
//! thread, and what they publish matches what happened — the messages exchanged, a measured
//! round-trip time, and a garbage datagram counted as a malformed drop.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hrpc_node::driver::{Node, NodeConfig};
use hrpc_node::proto::DropReason;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// Messages node 2 sends node 1.
const N: u64 = 200;
/// Capacity of node 1's store, which its capacity gauge must show.
const CAPACITY: u64 = 64 << 20;
const DEADLINE: Duration = Duration::from_secs(30);

/// One series' value: a counter's count, or a gauge's `f64` bits.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + value).to_bits())
            });
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// Keeps every registered series by `name{label=value,...}` (labels sorted).
#[derive(Debug, Default)]
struct Capture {
    series: Mutex<BTreeMap<String, Arc<Cell>>>,
}

impl Capture {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        self.series.lock().unwrap().entry(id).or_default().clone()
    }

    /// A counter's value, if it was registered.
    fn counter(&self, id: &str) -> Option<u64> {
        let series = self.series.lock().unwrap();
        series.get(id).map(|c| c.0.load(Ordering::Relaxed))
    }

    /// A gauge's value, if it was registered.
    fn gauge(&self, id: &str) -> Option<f64> {
        let series = self.series.lock().unwrap();
        series
            .get(id)
            .map(|c| f64::from_bits(c.0.load(Ordering::Relaxed)))
    }

    fn names(&self) -> Vec<String> {
        self.series.lock().unwrap().keys().cloned().collect()
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Node A (id 1, on loopback, with `a_cfg` applied) and node B (id 2, knowing A), both
/// publishing every `interval`.
fn metered_pair(
    dir: &std::path::Path,
    interval: Duration,
    a_cfg: impl FnOnce(NodeConfig) -> NodeConfig,
) -> (Node, Node) {
    let a = a_cfg(NodeConfig::new(dir.join("a"), 1).bind(loopback()))
        .metrics_interval(interval)
        .open()
        .unwrap();
    let b = NodeConfig::new(dir.join("b"), 2)
        .peer(1, a.local_addr())
        .metrics_interval(interval)
        .open()
        .unwrap();
    (a, b)
}

/// Polls both nodes until `done` holds; panics after [`DEADLINE`].
fn pump(
    a: &mut Node,
    b: &mut Node,
    delivered: &mut u64,
    mut done: impl FnMut(&Node, &Node) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while !done(a, b) {
        assert!(
            Instant::now() < deadline,
            "deadline passed: {:?} {:?}",
            a.stats(),
            b.stats()
        );
        let ra = a.poll(&mut |_, _| *delivered += 1).unwrap();
        let rb = b.poll(&mut |_, _| {}).unwrap();
        if !ra.more && !rb.more && ra.received == 0 && rb.received == 0 {
            a.wait(Some(Duration::from_millis(1))).unwrap();
        }
    }
}

#[test]
fn published_values_match_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::default();
    let mut delivered = 0u64;
    let malformed_before = metrics::with_local_recorder(&capture, || {
        let (mut a, mut b) =
            metered_pair(dir.path(), Duration::ZERO, |c| c.store_capacity(CAPACITY));
        for i in 0..N {
            b.send(1, format!("message {i}").as_bytes()).unwrap();
        }
        pump(&mut a, &mut b, &mut delivered, |_, b| {
            b.acked_through(1) == N
        });
        // One more round publishes what the last acknowledgement changed.
        a.poll(&mut |_, _| delivered += 1).unwrap();
        b.poll(&mut |_, _| {}).unwrap();
        let malformed_before = capture.counter("hrpc_dropped_total{node=1,reason=malformed}");

        // A datagram that is no hrpc datagram at all, from a plain socket.
        let evil = UdpSocket::bind(loopback()).unwrap();
        evil.send_to(b"HR", a.local_addr()).unwrap();
        pump(&mut a, &mut b, &mut delivered, |a, _| {
            a.stats().core.dropped(DropReason::Malformed) == 1
        });
        a.close(Duration::from_millis(100)).unwrap();
        b.close(Duration::from_millis(100)).unwrap();
        malformed_before
    });
    let names = capture.names();

    assert_eq!(delivered, N);
    let delivered_metric = capture.counter("hrpc_messages_delivered_total{node=1}");
    assert_eq!(delivered_metric, Some(N), "{names:#?}");
    assert_eq!(
        capture.counter("hrpc_messages_received_total{node=1}"),
        Some(N)
    );
    assert_eq!(
        capture.counter("hrpc_messages_acked_total{node=2}"),
        Some(N)
    );
    let sent = capture.counter("hrpc_messages_sent_total{node=2}").unwrap();
    assert!(sent >= N, "sent {sent}");
    // Node 1 sent no messages, only acknowledgements.
    assert_eq!(capture.counter("hrpc_messages_sent_total{node=1}"), Some(0));
    let datagrams = capture
        .counter("hrpc_datagrams_sent_total{node=2}")
        .unwrap();
    assert!(datagrams > 0);
    let received = capture
        .counter("hrpc_datagrams_received_total{node=1}")
        .unwrap();
    assert!(
        received > 0 && received <= datagrams + 1,
        "{received} of {datagrams}"
    );

    let srtt = capture
        .gauge("hrpc_peer_srtt_seconds{node=2,peer=1}")
        .expect("srtt published");
    assert!(srtt > 0.0 && srtt < 1.0, "srtt {srtt}");
    let cwnd = capture
        .gauge("hrpc_peer_cwnd_bytes{node=2,peer=1}")
        .unwrap();
    assert!(cwnd > 0.0, "cwnd {cwnd}");
    assert_eq!(
        capture.gauge("hrpc_peer_unacked_messages{node=2,peer=1}"),
        Some(0.0)
    );
    assert_eq!(
        capture.gauge("hrpc_peer_in_flight_bytes{node=2,peer=1}"),
        Some(0.0)
    );
    assert_eq!(
        capture.gauge("hrpc_peer_undelivered_messages{node=1,peer=2}"),
        Some(0.0)
    );
    assert_eq!(
        capture.gauge("hrpc_store_capacity_bytes{node=1}"),
        Some(CAPACITY as f64)
    );
    assert!(capture.gauge("hrpc_store_used_bytes{node=1}").is_some());

    // Every reason has its series from the first publication; the garbage moved one.
    assert_eq!(malformed_before, Some(0));
    assert_eq!(
        capture.counter("hrpc_dropped_total{node=1,reason=malformed}"),
        Some(1)
    );
    for r in DropReason::ALL {
        let id = format!("hrpc_dropped_total{{node=1,reason={}}}", r.name());
        assert!(capture.counter(&id).is_some(), "{id} missing");
    }
    assert_eq!(capture.counter("hrpc_timeouts_total{node=2}"), Some(0));
    assert_eq!(capture.counter("hrpc_peer_resets_total{node=1}"), Some(0));
    // No calls were made: the call series exist, at zero.
    assert_eq!(capture.gauge("hrpc_calls_pending{node=2}"), Some(0.0));
    for name in [
        "hrpc_responses_delivered_total",
        "hrpc_responses_dropped_total",
        "hrpc_calls_timed_out_total",
    ] {
        assert_eq!(
            capture.counter(&format!("{name}{{node=2}}")),
            Some(0),
            "{name}"
        );
    }
}

/// Between publications nothing is published: with a long interval, the counters keep the
/// values of the first poll until the node closes.
#[test]
fn publishes_only_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
        let (mut a, mut b) = metered_pair(dir.path(), Duration::from_secs(3600), |c| c);
        let mut delivered = 0;
        // The first polls publish (all zero so far).
        a.poll(&mut |_, _| {}).unwrap();
        b.poll(&mut |_, _| {}).unwrap();
        b.send(1, b"one").unwrap();
        pump(&mut a, &mut b, &mut delivered, |_, b| {
            b.acked_through(1) == 1
        });
        assert_eq!(delivered, 1);
        assert_eq!(
            capture.counter("hrpc_messages_delivered_total{node=1}"),
            Some(0)
        );
        a.close(Duration::from_millis(100)).unwrap();
        b.close(Duration::from_millis(100)).unwrap();
    });
    // Closing publishes a last time.
    assert_eq!(
        capture.counter("hrpc_messages_delivered_total{node=1}"),
        Some(1)
    );
    assert_eq!(
        capture.counter("hrpc_messages_acked_total{node=2}"),
        Some(1)
    );
}

/// A node closed and opened again in the same process continues its counter series: the
/// second node adds to what the first published instead of starting again from 0.
#[test]
fn reopened_node_continues_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::default();
    let mut delivered = 0;
    metrics::with_local_recorder(&capture, || {
        for round in 1..=2 {
            let (mut a, mut b) = metered_pair(dir.path(), Duration::ZERO, |c| c);
            for _ in 0..5 {
                b.send(1, b"again").unwrap();
            }
            pump(&mut a, &mut b, &mut delivered, |_, b| {
                b.acked_through(1) == 5 * round
            });
            a.close(Duration::from_millis(100)).unwrap();
            b.close(Duration::from_millis(100)).unwrap();
        }
    });
    assert_eq!(delivered, 10);
    assert_eq!(
        capture.counter("hrpc_messages_delivered_total{node=1}"),
        Some(10)
    );
    assert_eq!(
        capture.counter("hrpc_messages_acked_total{node=2}"),
        Some(10)
    );
}
