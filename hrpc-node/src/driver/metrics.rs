//! Publishing a node's counters and gauges through the [`metrics`] facade (feature `metrics`).
//!
//! This module owns the metric names, their labels and the publication schedule. The poll
//! loop calls [`Metrics::maybe_publish`] once per [`Node::poll`](super::Node::poll); it
//! compares two instants and returns until the interval set with
//! [`NodeConfig::metrics_interval`](super::NodeConfig::metrics_interval) has passed since the
//! last publication. Then it adds to every counter what the core counted since the last
//! publication ([`Counter::increment`]: a node reopened in the same process continues the
//! series instead of restarting it) and sets every gauge to its current value. Handles are
//! registered with the recorder installed at the first publication (and for each peer when
//! it is first seen), so publishing allocates nothing afterwards. The names, types, labels
//! and units are listed in the crate's README ("Metrics and tracing").

use std::fmt;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, SharedString, Unit};

use crate::proto::{Core, DROP_REASONS, DropReason, Stats};

/// How often a node publishes unless [`NodeConfig::metrics_interval`] says otherwise: 1 s.
///
/// [`NodeConfig::metrics_interval`]: super::NodeConfig::metrics_interval
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// A node's metric handles and when it publishes next.
pub(super) struct Metrics {
    interval: Duration,
    next_due: Instant,
    /// The `node` label's value.
    node: SharedString,
    /// Registered at the first publication.
    handles: Option<Handles>,
    /// One entry per peer, in the order of [`Core::peer_ids`] (which only grows).
    peers: Vec<PeerGauges>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("interval", &self.interval)
            .field("next_due", &self.next_due)
            .field("node", &self.node)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Publication every `interval` for node `node_id`; the first poll publishes.
    pub(super) fn new(node_id: u32, interval: Duration, now: Instant) -> Metrics {
        Metrics {
            interval,
            next_due: now,
            node: SharedString::from(node_id.to_string()),
            handles: None,
            peers: Vec::new(),
        }
    }

    /// Publishes if the interval has passed since the last publication.
    #[inline]
    pub(super) fn maybe_publish(&mut self, now: Instant, core: &Core) {
        if now >= self.next_due {
            self.publish(now, core);
        }
    }

    /// Publishes now, whatever the schedule.
    pub(super) fn publish(&mut self, now: Instant, core: &Core) {
        self.next_due = now.checked_add(self.interval).unwrap_or(now);
        let node = &self.node;
        let handles = self.handles.get_or_insert_with(|| Handles::register(node));
        handles.publish(core.stats());
        let (used, capacity) = core.store().usage();
        handles.store_used.set(used as f64);
        handles.store_capacity.set(capacity as f64);
        handles
            .calls_pending
            .set(core.store().calls_pending() as f64);

        let ids = core.peer_ids();
        while self.peers.len() < ids.len() {
            let peer = ids[self.peers.len()];
            self.peers.push(PeerGauges::register(&self.node, peer));
        }
        for (&peer, gauges) in ids.iter().zip(&self.peers) {
            if let Some(info) = core.peer_info(peer) {
                if let Some(srtt) = info.srtt {
                    gauges.srtt.set(srtt.as_secs_f64());
                }
                gauges.cwnd.set(info.cwnd as f64);
                gauges.unacked.set(info.unacked_messages as f64);
                gauges.in_flight_bytes.set(info.in_flight_bytes as f64);
                gauges.undelivered.set(info.undelivered_messages as f64);
            }
        }
    }
}

/// Node-wide counters and store gauges, labelled `node`.
struct Handles {
    messages_sent: Published,
    messages_retransmitted: Published,
    messages_acked: Published,
    messages_received: Published,
    messages_delivered: Published,
    messages_lost: Published,
    datagrams_sent: Published,
    datagrams_received: Published,
    bytes_sent: Published,
    bytes_received: Published,
    timeouts: Published,
    peer_resets: Published,
    responses_delivered: Published,
    responses_dropped: Published,
    calls_timed_out: Published,
    /// Indexed like [`DropReason::ALL`], labelled `reason` too.
    dropped: [Published; DROP_REASONS],
    store_used: Gauge,
    store_capacity: Gauge,
    calls_pending: Gauge,
}

/// A counter and the count it was last brought to.
struct Published {
    counter: Counter,
    last: u64,
}

impl Published {
    fn new(counter: Counter) -> Published {
        Published { counter, last: 0 }
    }

    /// Brings the counter to `count` (monotonic) by adding what is new.
    fn publish(&mut self, count: u64) {
        if count > self.last {
            self.counter.increment(count - self.last);
        }
        self.last = count;
    }
}

/// Declares a counter's unit and help text, and registers its handle for `node`.
fn counter(name: &'static str, help: &'static str, node: &SharedString) -> Published {
    metrics::describe_counter!(name, Unit::Count, help);
    Published::new(metrics::counter!(name, "node" => node.clone()))
}

impl Handles {
    fn register(node: &SharedString) -> Handles {
        metrics::describe_counter!(
            "hrpc_dropped_total",
            Unit::Count,
            "Incoming datagrams (or frames) dropped, by reason"
        );
        let dropped = DropReason::ALL.map(|r| {
            Published::new(
                metrics::counter!("hrpc_dropped_total", "node" => node.clone(), "reason" => r.name()),
            )
        });
        metrics::describe_gauge!("hrpc_store_used_bytes", Unit::Bytes, "Store bytes in use");
        metrics::describe_gauge!("hrpc_store_capacity_bytes", Unit::Bytes, "Store capacity");
        metrics::describe_gauge!(
            "hrpc_calls_pending",
            Unit::Count,
            "Calls this node made that wait for their response or timeout"
        );
        Handles {
            messages_sent: counter(
                "hrpc_messages_sent_total",
                "Messages sent for the first time",
                node,
            ),
            messages_retransmitted: counter(
                "hrpc_messages_retransmitted_total",
                "Messages sent again after a loss or timeout",
                node,
            ),
            messages_acked: counter(
                "hrpc_messages_acked_total",
                "Outbound messages the peer acknowledged",
                node,
            ),
            messages_received: counter(
                "hrpc_messages_received_total",
                "Inbound messages persisted",
                node,
            ),
            messages_delivered: counter(
                "hrpc_messages_delivered_total",
                "Inbound messages handed to the application",
                node,
            ),
            messages_lost: counter(
                "hrpc_messages_lost_total",
                "Inbound seqs reported lost",
                node,
            ),
            datagrams_sent: counter("hrpc_datagrams_sent_total", "Datagrams sent", node),
            datagrams_received: counter(
                "hrpc_datagrams_received_total",
                "Datagrams received",
                node,
            ),
            bytes_sent: counter("hrpc_bytes_sent_total", "Bytes in datagrams sent", node),
            bytes_received: counter(
                "hrpc_bytes_received_total",
                "Bytes in datagrams received",
                node,
            ),
            timeouts: counter("hrpc_timeouts_total", "Retransmission timeouts", node),
            peer_resets: counter(
                "hrpc_peer_resets_total",
                "Peers that came back with a new session",
                node,
            ),
            responses_delivered: counter(
                "hrpc_responses_delivered_total",
                "Responses to this node's calls handed to the application",
                node,
            ),
            responses_dropped: counter(
                "hrpc_responses_dropped_total",
                "Responses that found no outstanding call (repeats, or after the timeout)",
                node,
            ),
            calls_timed_out: counter(
                "hrpc_calls_timed_out_total",
                "Call timeouts handed to the application",
                node,
            ),
            dropped,
            store_used: metrics::gauge!("hrpc_store_used_bytes", "node" => node.clone()),
            store_capacity: metrics::gauge!("hrpc_store_capacity_bytes", "node" => node.clone()),
            calls_pending: metrics::gauge!("hrpc_calls_pending", "node" => node.clone()),
        }
    }

    fn publish(&mut self, s: &Stats) {
        self.messages_sent.publish(s.messages_sent);
        self.messages_retransmitted
            .publish(s.messages_retransmitted);
        self.messages_acked.publish(s.messages_acked);
        self.messages_received.publish(s.messages_received);
        self.messages_delivered.publish(s.messages_delivered);
        self.messages_lost.publish(s.messages_lost);
        self.datagrams_sent.publish(s.datagrams_sent);
        self.datagrams_received.publish(s.datagrams_received);
        self.bytes_sent.publish(s.bytes_sent);
        self.bytes_received.publish(s.bytes_received);
        self.timeouts.publish(s.timeouts);
        self.peer_resets.publish(s.peer_resets);
        self.responses_delivered.publish(s.responses_delivered);
        self.responses_dropped.publish(s.responses_dropped);
        self.calls_timed_out.publish(s.calls_timed_out);
        for (c, &n) in self.dropped.iter_mut().zip(&s.dropped_by_reason) {
            c.publish(n);
        }
    }
}

/// One peer's gauges, labelled `node` and `peer`.
struct PeerGauges {
    srtt: Gauge,
    cwnd: Gauge,
    unacked: Gauge,
    in_flight_bytes: Gauge,
    undelivered: Gauge,
}

impl PeerGauges {
    fn register(node: &SharedString, peer: u32) -> PeerGauges {
        let peer = SharedString::from(peer.to_string());
        let gauge = |name: &'static str, unit: Unit, help: &'static str| {
            metrics::describe_gauge!(name, unit, help);
            metrics::gauge!(name, "node" => node.clone(), "peer" => peer.clone())
        };
        PeerGauges {
            srtt: gauge(
                "hrpc_peer_srtt_seconds",
                Unit::Seconds,
                "Smoothed round-trip time to the peer (set once measured)",
            ),
            cwnd: gauge(
                "hrpc_peer_cwnd_bytes",
                Unit::Bytes,
                "Congestion window towards the peer",
            ),
            unacked: gauge(
                "hrpc_peer_unacked_messages",
                Unit::Count,
                "Messages committed to the peer and not yet acknowledged",
            ),
            in_flight_bytes: gauge(
                "hrpc_peer_in_flight_bytes",
                Unit::Bytes,
                "Bytes sent to the peer and awaiting acknowledgement",
            ),
            undelivered: gauge(
                "hrpc_peer_undelivered_messages",
                Unit::Count,
                "Messages from the peer persisted and not yet delivered",
            ),
        }
    }
}
