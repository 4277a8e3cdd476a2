//! A receiver whose acknowledgements stop for a while (a paused process, a stalled return
//! path) costs the sender probes, not a second copy of its whole window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Cluster, Verdict};

use std::time::Duration;

/// Messages in the stream.
const COUNT: u64 = 20_000;

/// Invariant: when every acknowledgement from the receiver is held back for 300 ms of
/// virtual time (the data itself arrives and is persisted), the sender's probe timeouts
/// back off and send a probe each, and the window is not declared lost wholesale: once the
/// acknowledgements arrive, everything is delivered once, in order, and the messages sent
/// again during the stall are a few probes' worth, not the thousands the window held.
#[test]
fn a_stall_of_acks_is_probed_not_resent_wholesale() {
    let mut c = Cluster::new([1, 2]);
    let producer = c.core(1).producer();
    let mut committed = 0u64;
    let fill = |c: &mut Cluster, committed: &mut u64| {
        while *committed < COUNT && producer.send(2, &[7u8; 100]).is_ok() {
            *committed += 1;
        }
        c.step();
    };
    // Until the stream runs at full window.
    let mut rounds = 0;
    while c
        .core(1)
        .peer_info(2)
        .is_none_or(|p| p.in_flight_messages < 1000 || p.srtt.is_none())
    {
        assert!(rounds < 1000, "{:?}", c.core(1).peer_info(2));
        fill(&mut c, &mut committed);
        rounds += 1;
    }
    let in_flight = c.core(1).peer_info(2).unwrap().in_flight_messages;
    let before = c.core(1).stats().messages_retransmitted;
    let timeouts_before = c.core(1).stats().timeouts;
    c.filter(|p| {
        if p.from == 2 {
            Verdict::Hold
        } else {
            Verdict::Pass
        }
    });
    c.run_for(Duration::from_millis(300));
    let timeouts = c.core(1).stats().timeouts - timeouts_before;
    c.clear_filter();
    c.release_held();
    rounds = 0;
    while (c.seen(2).got.len() as u64) < COUNT && rounds < 2000 {
        fill(&mut c, &mut committed);
        rounds += 1;
    }
    let seqs: Vec<u64> = c.seen(2).got.iter().map(|g| g.1).collect();
    assert!(
        seqs.iter().copied().eq(1..=COUNT),
        "delivered {} of {COUNT}, or out of order or twice",
        seqs.len()
    );
    let resent = c.core(1).stats().messages_retransmitted - before;
    // Backed off: 300 ms of 2 ms minimum timeouts would be 150 without backoff.
    assert!(
        (3..=12).contains(&timeouts),
        "{timeouts} probe timeouts during the stall"
    );
    assert!(
        resent * 10 < in_flight,
        "{resent} messages sent again for a stall of acks with {in_flight} in flight"
    );
}
