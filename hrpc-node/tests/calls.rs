//! Request/response between two real nodes on loopback: each call gets one response or one
//! timeout, a late response is dropped, a response outlives the caller's restart, and a
//! callee's reply consumes its request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::nodes::{DEADLINE, local, pair, pump_until};
use hrpc_node::driver::{Node, NodeConfig, SendError};
use hrpc_node::proto::{CallId, Delivery, MessageKind};

/// Polls `caller` (with `handler`) and `callee`, which receives and persists but hands
/// nothing out, until `done(caller)`.
fn pump_holding(
    caller: &mut Node,
    handler: &mut dyn FnMut(Delivery<'_>),
    callee: &mut Node,
    done: impl Fn(&Node) -> bool,
) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !done(caller) {
        assert!(std::time::Instant::now() < deadline, "deadline passed");
        caller.poll(&mut |_, d| handler(d)).unwrap();
        let r = callee
            .poll_deferred(0, &mut |_, d| panic!("callee handed {d:?}"))
            .unwrap();
        if r.received == 0 {
            caller.wait(Some(Duration::from_millis(2))).unwrap();
        }
    }
}

/// What the caller saw end each call: `Ok(response payload)` or `Err(())` for a timeout.
type Outcomes = BTreeMap<CallId, Vec<Result<Vec<u8>, ()>>>;

fn record(outcomes: &mut Outcomes, kind: MessageKind, payload: &[u8]) {
    match kind {
        MessageKind::Response { call } => {
            outcomes.entry(call).or_default().push(Ok(payload.to_vec()))
        }
        MessageKind::CallTimedOut { call } => outcomes.entry(call).or_default().push(Err(())),
        other => panic!("the caller got {other:?}"),
    }
}

/// B (id 2) makes 300 calls to A (id 1), some larger than a datagram; A answers each with a
/// function of the request. Every call gets exactly one response, the one for its own
/// request; A sees each request once; the counters agree.
#[test]
fn every_call_gets_its_own_response_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let mut made = BTreeMap::new();
    for i in 0..300u32 {
        let len = if i % 50 == 7 {
            5000
        } else {
            4 + i as usize % 40
        };
        let mut req = vec![i as u8; len];
        req[..4].copy_from_slice(&i.to_le_bytes());
        let call = b.call(1, &req, Duration::from_secs(60)).unwrap();
        assert!(made.insert(call, req).is_none(), "call ids are unique");
    }
    let mut served = Vec::new();
    let mut outcomes = Outcomes::new();
    pump_until(
        &mut a,
        &mut |s, d| {
            let MessageKind::Request { call } = d.kind else {
                panic!("A got {:?}", d.kind);
            };
            served.push(call);
            let mut resp = d.payload.to_vec();
            resp.reverse();
            s.reply(&d, &resp).unwrap();
        },
        &mut b,
        &mut |_, d| record(&mut outcomes, d.kind, d.payload),
        |_, b| b.stats().core.responses_delivered >= 300,
    );
    assert_eq!(served.len(), 300, "each request handed once");
    assert_eq!(outcomes.len(), 300);
    for (call, req) in &made {
        let mut want = req.clone();
        want.reverse();
        assert_eq!(outcomes[call], vec![Ok(want)], "{call}");
    }
    assert_eq!(a.consumed_through(2), 300);
    assert_eq!(b.store().calls_pending(), 0);
    assert_eq!(b.stats().core.responses_dropped, 0);
}

/// A call to a node that does not answer in time ends with one timeout; the response that
/// comes later is dropped, not handed out; a reply to something that is not a request is
/// refused.
#[test]
fn a_late_response_is_dropped_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let call = b.call(1, b"slow", Duration::from_millis(300)).unwrap();
    let plain = b.send(1, b"plain").unwrap();
    let mut outcomes = Outcomes::new();
    // A receives (and persists) but does not hand anything out until B gave up.
    pump_holding(
        &mut b,
        &mut |d| record(&mut outcomes, d.kind, d.payload),
        &mut a,
        |b| b.stats().core.calls_timed_out >= 1,
    );
    assert_eq!(outcomes[&call], vec![Err(())]);
    let mut refused = None;
    pump_until(
        &mut a,
        &mut |s, d| match d.kind {
            MessageKind::Request { .. } => {
                s.reply(&d, b"too late").unwrap();
            }
            MessageKind::Message => {
                assert_eq!(d.seq, plain);
                refused = Some(s.reply(&d, b"no"));
            }
            k => panic!("A got {k:?}"),
        },
        &mut b,
        &mut |_, d| record(&mut outcomes, d.kind, d.payload),
        |_, b| b.stats().core.responses_dropped >= 1,
    );
    assert_eq!(outcomes[&call], vec![Err(())], "one outcome: the timeout");
    assert_eq!(b.stats().core.responses_delivered, 0);
    assert!(matches!(
        refused,
        Some(Err(SendError::NotARequest { peer: 2, .. }))
    ));
}

/// The caller dies (its node dropped without a close) after its request left; the callee
/// answers meanwhile. The caller comes back on another port, with nothing to send: it speaks
/// to the callee first (it owes it responses), and is handed the response of the call it
/// made before, under the same call id.
#[test]
fn a_response_outlives_the_callers_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let call = b.call(1, b"question", Duration::from_secs(60)).unwrap();
    // Until A holds the request (B's store has it acknowledged).
    pump_holding(&mut b, &mut |d| panic!("B got {d:?}"), &mut a, |b| {
        b.acked_through(1) >= 1
    });
    let a_addr = a.local_addr();
    drop(b);
    // A answers while B is gone.
    let mut answered = false;
    for _ in 0..1000 {
        a.poll(&mut |s, d| {
            s.reply(&d, b"answer").unwrap();
            answered = true;
        })
        .unwrap();
        if answered {
            break;
        }
        a.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(answered);
    let mut b = NodeConfig::new(dir.path().join("b"), 2)
        .bind(local())
        .peer(1, a_addr)
        .open()
        .unwrap();
    assert_eq!(b.store().call(call.0).map(|c| c.peer), Some(1));
    let mut outcomes = Outcomes::new();
    pump_until(
        &mut b,
        &mut |_, d| record(&mut outcomes, d.kind, d.payload),
        &mut a,
        &mut |_, _| {},
        |b, _| b.stats().core.responses_delivered >= 1,
    );
    assert_eq!(outcomes[&call], vec![Ok(b"answer".to_vec())]);
    assert_eq!(b.store().calls_pending(), 0);
}

/// `call_and_wait` returns the response's payload while other deliveries reach the handler,
/// and a timeout as `CallError::TimedOut` when nobody answers; the call is over either way.
#[test]
fn call_and_wait_returns_the_response_or_the_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let answer = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (answering, halt) = (answer.clone(), stop.clone());
    let server = std::thread::spawn(move || {
        while !halt.load(Ordering::Relaxed) {
            a.poll(&mut |s, d| {
                if let MessageKind::Request { .. } = d.kind {
                    if answering.load(Ordering::Relaxed) {
                        let mut r = d.payload.to_vec();
                        r.reverse();
                        s.reply(&d, &r).unwrap();
                    }
                    // Also a plain message, which the caller's handler must get.
                    s.send(2, b"aside").unwrap();
                }
            })
            .unwrap();
            a.wait(Some(Duration::from_millis(2))).unwrap();
        }
    });
    let mut others = Vec::new();
    let got = b
        .call_and_wait(1, b"abc", Duration::from_secs(30), &mut |_, d| {
            others.push((d.kind, d.payload.to_vec()));
        })
        .unwrap();
    assert_eq!(got, b"cba");
    answer.store(false, Ordering::Relaxed);
    let late = b.call_and_wait(1, b"no answer", Duration::from_millis(300), &mut |_, d| {
        others.push((d.kind, d.payload.to_vec()));
    });
    assert!(
        matches!(late, Err(hrpc_node::CallError::TimedOut(_))),
        "{late:?}"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(
        others
            .iter()
            .all(|o| o == &(MessageKind::Message, b"aside".to_vec()))
    );
    assert!(!others.is_empty(), "the handler got the other deliveries");
    assert_eq!(b.store().calls_pending(), 0);
    assert_eq!(b.stats().core.responses_delivered, 1);
}

/// With deferred delivery, a call has one outcome however long the application holds it: a
/// response handed and not yet consumed stops the call's clock (no timeout follows it), and
/// a timeout handed and not yet ended makes a later response a dropped one.
#[test]
fn deferred_outcomes_are_one_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let answered = b.call(1, b"quick", Duration::from_millis(200)).unwrap();
    let mut handed: Vec<(MessageKind, u64)> = Vec::new();
    let started = std::time::Instant::now();
    let deadline = started + DEADLINE;
    // Past the deadline three times over, holding the response unconsumed.
    while started.elapsed() < Duration::from_millis(600) || handed.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        a.poll(&mut |s, d| {
            s.reply(&d, b"fast").unwrap();
        })
        .unwrap();
        b.poll_deferred(16, &mut |_, d| handed.push((d.kind, d.seq)))
            .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(handed[0].0, MessageKind::Response { call: answered });
    assert_eq!(b.consume(1, handed[0].1).unwrap(), 1);
    assert_eq!(b.store().calls_pending(), 0);
    assert_eq!(b.stats().core.calls_timed_out, 0);

    // Now the other way round: the timeout first, held; the response after it is dropped.
    let late = b.call(1, b"slow", Duration::from_millis(100)).unwrap();
    let mut handed = Vec::new();
    pump_holding(
        &mut b,
        &mut |d| panic!("B got {d:?} through poll"),
        &mut a,
        |b| b.acked_through(1) >= 2,
    );
    while handed.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        b.poll_deferred(16, &mut |_, d| handed.push(d.kind))
            .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    assert_eq!(handed, vec![MessageKind::CallTimedOut { call: late }]);
    while b.stats().core.responses_dropped == 0 {
        assert!(std::time::Instant::now() < deadline);
        a.poll(&mut |s, d| {
            s.reply(&d, b"too late").unwrap();
        })
        .unwrap();
        b.poll_deferred(16, &mut |_, d| handed.push(d.kind))
            .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert!(b.finish_call(late).unwrap());
    assert_eq!(b.store().calls_pending(), 0);
}

/// A timeout handed by deferred delivery and held unended is no reason to wake: the node
/// sleeps in `wait` rather than spinning on a deadline already past.
#[test]
fn a_held_timeout_does_not_make_the_node_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, mut b) = pair(dir.path());
    let call = b.call(1, b"unheard", Duration::from_millis(30)).unwrap();
    let mut handed = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while handed.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        b.poll_deferred(16, &mut |_, d| handed.push(d.kind))
            .unwrap();
        b.wait(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(handed, vec![MessageKind::CallTimedOut { call }]);
    let start = std::time::Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < Duration::from_millis(400) {
        b.poll_deferred(16, &mut |_, d| handed.push(d.kind))
            .unwrap();
        b.wait(Some(Duration::from_millis(100))).unwrap();
        rounds += 1;
    }
    assert_eq!(handed.len(), 1, "handed once: {handed:?}");
    // Retransmissions of the unheard request wake it a few times; a spin would be thousands.
    assert!(rounds < 200, "{rounds} rounds in 400 ms");
    assert!(b.finish_call(call).unwrap());
}

/// A callee that answers one request twice (two `reply_to`s) still gives its caller one
/// response under deferred delivery; and a timeout handed by `poll_deferred` and left unended
/// is handed again by a plain `poll`, which then ends it, as messages are.
#[test]
fn deferred_hand_offs_keep_one_outcome_and_poll_takes_them_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path());
    let call = b.call(1, b"twice", Duration::from_secs(30)).unwrap();
    let mut handed = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut replied = false;
    // Both replies reach B; the first is handed and held, then consumed; the second is
    // dropped once it is next, never handed.
    let mut step = |a: &mut hrpc_node::Node,
                    b: &mut hrpc_node::Node,
                    handed: &mut Vec<(MessageKind, u64, Vec<u8>)>| {
        assert!(std::time::Instant::now() < deadline, "{handed:?}");
        a.poll(&mut |s, d| {
            if let MessageKind::Request { call } = d.kind {
                s.reply_to(d.peer, d.seq, call, b"first").unwrap();
                s.reply_to(d.peer, d.seq, call, b"second").unwrap();
                replied = true;
            }
        })
        .unwrap();
        b.poll_deferred(16, &mut |_, d| {
            handed.push((d.kind, d.seq, d.payload.to_vec()))
        })
        .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    };
    while b.store().inbound_seqs(1).len() < 2 {
        step(&mut a, &mut b, &mut handed);
    }
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(b.consume(1, handed[0].1).unwrap(), 1);
    while b.stats().core.responses_dropped == 0 {
        step(&mut a, &mut b, &mut handed);
    }
    assert!(replied);
    let got: Vec<_> = handed.iter().map(|h| (h.0, h.2.clone())).collect();
    assert_eq!(
        got,
        vec![(MessageKind::Response { call }, b"first".to_vec())]
    );

    let late = b.call(1, b"?", Duration::from_millis(20)).unwrap();
    let mut timeouts = 0;
    while timeouts == 0 {
        assert!(std::time::Instant::now() < deadline);
        b.poll_deferred(16, &mut |_, d| {
            timeouts += usize::from(d.kind == MessageKind::CallTimedOut { call: late })
        })
        .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    let mut again = 0;
    while again == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "poll never handed the timeout again"
        );
        b.poll(&mut |_, d| {
            again += usize::from(d.kind == MessageKind::CallTimedOut { call: late })
        })
        .unwrap();
        b.wait(Some(Duration::from_millis(2))).unwrap();
    }
    assert!(b.store().call(late.0).is_none(), "poll ended the call");
}
