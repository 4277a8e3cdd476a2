//! Deterministic simulation of hrpc nodes in virtual time.
//!
//! Real stores on disk and the real protocol core; the network between them
//! is data: a seeded RNG decides loss, duplication, delay (and so reordering),
//! partitions, and drops of oversized datagrams. Nodes crash (their core and
//! store are dropped between two calls, as a killed process leaves them) and
//! restart on the same store.
//!
//! Invariant checked after every run: every message a node committed is
//! delivered to its destination exactly once, in commit order per
//! (sender, receiver), byte-for-byte, and nothing else is delivered. When a
//! node loses its store (the store-loss scenario), what it had acknowledged
//! and not yet delivered may be gone with it; every message committed after
//! the loss, in either direction, is still delivered exactly once, in order,
//! and no stream stalls.
//!
//! Scenarios: random faults with small and medium messages; large messages
//! (up to 4 MiB) with reverse-path outages and sender crashes mid-message;
//! a peer losing its store after long streams and selectively acknowledged
//! gaps. Maps are ordered, so a seed replays bit for bit.
//!
//! `HRPC_SIM_SEEDS=N` sets how many seeds each test runs (short by default);
//! `HRPC_SIM_SEED=S` replays one seed. A failing seed is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sim::net::Scenario;
use common::sim::run_seeds;
use hrpc_store::Durability;

/// Two nodes, both directions, random faults and crashes: exactly-once in-order delivery.
#[test]
fn pair() {
    run_seeds(
        "pair",
        1000,
        2,
        60,
        Durability::Process,
        Scenario::default(),
    );
}

/// Three nodes all-to-all: exactly-once in-order delivery per (sender, receiver).
#[test]
fn three_nodes() {
    run_seeds(
        "three_nodes",
        150,
        3,
        40,
        Durability::Process,
        Scenario::default(),
    );
}

/// Sync (group commit) mode with simulated power loss at every crash: the
/// same invariant for every message committed before a sync, with the
/// documented redelivery of what was consumed after the last sync.
#[test]
fn pair_sync_mode_power_loss() {
    run_seeds(
        "pair_sync_mode_power_loss",
        150,
        2,
        40,
        Durability::Sync,
        Scenario::default(),
    );
}

/// Large messages (up to 4 MiB) with a reverse-path outage and crashes that
/// restart a sender in the middle of a message: exactly-once in-order
/// delivery, no stall.
#[test]
fn pair_large_messages() {
    let large = Scenario {
        large: true,
        ..Scenario::default()
    };
    run_seeds("pair_large_messages", 25, 2, 25, Durability::Process, large);
}

/// Node 2 loses its store at a random moment of long streams with loss (so
/// after selectively acknowledged gaps, and often after more messages than
/// its receive window): both streams go on; every message committed after
/// the loss is delivered exactly once, in order; nothing is duplicated.
#[test]
fn pair_peer_store_loss() {
    let loss = Scenario {
        store_loss: true,
        ..Scenario::default()
    };
    run_seeds(
        "pair_peer_store_loss",
        60,
        2,
        300,
        Durability::Process,
        loss,
    );
}
