//! A window with more gaps than one ACK frame can name keeps moving.
//!
//! An ACK names the cumulative seq and at most `MAX_SACK_RANGES` ranges above it. Under
//! steady loss a large window holds many more gaps than that; the sender must still learn
//! of its newest deliveries (they free its congestion window and date its RTT samples), or
//! it sits with a full window of messages the receiver already holds until probe timeouts
//! crawl it forward.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Cluster, Verdict};

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use hrpc_node::proto::CoreConfig;
use hrpc_store::StoreConfig;
use hrpc_wire::MAX_SACK_RANGES;

/// Messages in the stream.
const COUNT: u64 = 200_000;

/// Datagrams the link from sender to receiver carries per 5 ms round.
const LINK_RATE: usize = 200;

/// Message `i`: its index, then filler up to 100 bytes (about 14 to a datagram).
fn body(i: u64) -> [u8; 100] {
    let mut b = [0xa5; 100];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// Invariant: with one datagram in 20 lost from sender to receiver (always more gaps in
/// flight than an ACK can name), every message is delivered once, in order, within a
/// bounded number of 5 ms rounds of virtual time (a few RTTs per window, not a probe
/// timeout per gap), and the sender's smoothed RTT stays near the path's 10 ms instead of
/// growing with the age of messages it learns of late.
#[test]
fn more_gaps_than_sack_ranges_do_not_stall_the_window() {
    let mut c = Cluster::empty();
    for id in [1, 2] {
        let mut store_cfg = StoreConfig::new(id);
        store_cfg.capacity_bytes = 64 << 20;
        c.add(id, store_cfg, CoreConfig::default());
    }
    let producer = c.core(1).producer();
    let mut committed = 0u64;
    // The link carries LINK_RATE datagrams a round out of a drop-tail queue of two
    // rounds' worth, and loses one datagram in 20 of those it carries.
    c.limit(1, 2, LINK_RATE, 2 * LINK_RATE);
    let forwarded = Rc::new(Cell::new(0u64));
    let count = forwarded.clone();
    c.filter(move |p| {
        if p.from != 1 {
            return Verdict::Pass;
        }
        count.set(count.get() + 1);
        if count.get().is_multiple_of(20) {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    let mut max_srtt = Duration::ZERO;
    let (mut delivered_before, mut since_progress, mut longest_stall) = (0, 0, 0);
    let mut rounds = 0;
    while (c.seen(2).got.len() as u64) < COUNT && rounds < 600 {
        while committed < COUNT && producer.send(2, &body(committed)).is_ok() {
            committed += 1;
        }
        c.step();
        rounds += 1;
        let delivered = c.seen(2).got.len();
        if delivered > delivered_before {
            delivered_before = delivered;
            since_progress = 0;
        } else {
            since_progress += 1;
            longest_stall = longest_stall.max(since_progress);
        }
        if let Some(info) = c.core(1).peer_info(2) {
            max_srtt = max_srtt.max(info.srtt.unwrap_or_default());
        }
    }
    let forward = forwarded.get();
    let got: Vec<u64> = c
        .seen(2)
        .got
        .iter()
        .map(|g| u64::from_le_bytes(g.2[..8].try_into().unwrap()))
        .collect();
    assert_eq!(
        got.len() as u64,
        COUNT,
        "delivered {} of {COUNT} in {rounds} rounds; sender: {:?}",
        got.len(),
        c.core(1).peer_info(2)
    );
    assert!(got.iter().copied().eq(0..COUNT), "out of order or repeated");
    // A window of this stream spans several hundred datagrams, so far more than
    // MAX_SACK_RANGES gaps at a time: the test reaches the case it is about.
    assert!(
        forward / 20 > 4 * MAX_SACK_RANGES as u64,
        "{forward} datagrams"
    );
    eprintln!("{rounds} rounds, longest stall {longest_stall}, srtt up to {max_srtt:?}");
    assert!(
        longest_stall <= 20,
        "no delivery for {longest_stall} rounds in a row"
    );
    assert!(
        max_srtt < Duration::from_millis(100),
        "srtt reached {max_srtt:?} on a 10 ms path"
    );
}
