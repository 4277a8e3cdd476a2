//! Kill -9 soak of two processes written against the original API (`tests/c/ordered.c`):
//! the sender and the receiver are SIGKILLed at random moments and restarted on the same
//! stores while a paced stream flows. At the end every message has arrived, in order; the
//! only repeats are the documented kind (a message whose handler ran before the receiver
//! was killed, delivered again after the restart: at most one per receiver kill).
//!
//! Short by default (5 s of kills); `HRPC_CAPI_SOAK_SECS=600` runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Proc, check_log, free_port, ordered_program, wait_until};
use rand::{Rng, SeedableRng};

/// Messages per second the sender is held to, so the stream outlasts the kills.
const RATE: u64 = 40_000;

#[test]
fn both_sides_killed_at_random_nothing_lost() {
    let secs: u64 = std::env::var("HRPC_CAPI_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("HRPC_CAPI_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("soak: {secs} s, seed {seed} (HRPC_CAPI_SOAK_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let count = RATE * secs;

    let dir = tempfile::tempdir().unwrap();
    let exe = ordered_program(dir.path());
    let port = free_port().to_string();
    let log = dir.path().join("recv.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let recv_args = ["recv", "recv-store", port.as_str(), log_arg.as_str()];
    let (count_arg, rate_arg) = (count.to_string(), RATE.to_string());
    let send_args = [
        "send",
        "send-store",
        port.as_str(),
        count_arg.as_str(),
        rate_arg.as_str(),
    ];
    let (mut receiver, _) = Proc::start(&exe, &recv_args, dir.path());
    let (mut sender, _) = Proc::start(&exe, &send_args, dir.path());

    let (mut receiver_kills, mut sender_kills) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        let both = rng.random_bool(0.2);
        let kill_receiver = both || rng.random_bool(0.5);
        let kill_sender = both || !kill_receiver;
        if kill_receiver {
            receiver.kill();
            receiver_kills += 1;
        }
        if kill_sender {
            sender.kill();
            sender_kills += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..50)));
        if kill_receiver {
            (receiver, _) = Proc::start(&exe, &recv_args, dir.path());
        }
        if kill_sender {
            let (s, ready) = Proc::start(&exe, &send_args, dir.path());
            sender = s;
            assert!(ready.starts_with("ready "), "{ready}");
        }
        let c = check_log(&log);
        assert!(c.bad.is_none(), "out of order: {c:?}");
    }
    let mid = check_log(&log).contiguous;
    // The stream (paced to end with the kills) drains.
    let complete = wait_until(Duration::from_secs(60 + secs), || {
        let c = check_log(&log);
        c.contiguous >= count || c.bad.is_some()
    });
    let c = check_log(&log);
    drop(sender);
    drop(receiver);
    eprintln!(
        "soak: {receiver_kills} receiver kills, {sender_kills} sender kills; {} of {count} \
         delivered when the kills ended, all {} at the end, {} repeated",
        mid, c.contiguous, c.repeats
    );
    assert!(receiver_kills + sender_kills > 0);
    assert!(c.bad.is_none(), "out of order: {c:?}");
    assert!(complete && c.contiguous == count, "incomplete: {c:?}");
    assert!(
        c.repeats <= receiver_kills,
        "{} repeats for {receiver_kills} receiver kills",
        c.repeats
    );
}
