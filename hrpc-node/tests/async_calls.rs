//! Request/response through the tokio handle on real sockets and stores: awaited calls get
//! their own responses (many at once, on a multi-threaded runtime), a call nobody answers
//! ends in one timeout, an unawaited call's outcome comes through `recv`, and a reply commits
//! its request.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use hrpc_node::{AsyncNode, CallError, MessageKind, NodeConfig, SendError};
use tokio::time::timeout;

/// Wall-time bound for any step that waits on the network.
const DEADLINE: Duration = Duration::from_secs(60);

/// Callee A (id 1) on loopback and caller B (id 2) knowing it.
fn nodes(dir: &std::path::Path) -> (AsyncNode, AsyncNode) {
    let a = NodeConfig::new(dir.join("a"), 1)
        .bind("127.0.0.1:0".parse().unwrap())
        .open_async()
        .unwrap();
    let b = NodeConfig::new(dir.join("b"), 2)
        .peer(1, a.local_addr())
        .open_async()
        .unwrap();
    (a, b)
}

/// Serves `n` requests on `a`: each answered with its payload reversed, except (with
/// `ignore`) those starting with `ignore`, which are committed unanswered. Returns the
/// requests' payloads.
async fn serve(a: &mut AsyncNode, n: usize, ignore: Option<u8>) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let d = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
        let MessageKind::Request { .. } = d.kind() else {
            panic!("A got {d:?}");
        };
        seen.push(d.payload().to_vec());
        if ignore.is_some() && d.payload().first() == ignore.as_ref() {
            d.commit().unwrap();
        } else {
            let mut r = d.payload().to_vec();
            r.reverse();
            d.reply(&r).await.unwrap();
        }
    }
    seen
}

/// 200 calls awaited at once from spawned tasks: each returns the response to its own request
/// (the request reversed), and the callee handles each request once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaited_calls_get_their_own_responses() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = nodes(dir.path());
    let mut calls = Vec::new();
    for i in 0..200u32 {
        let s = b.sender();
        calls.push(tokio::spawn(async move {
            let req = format!("request {i} {}", "x".repeat(i as usize % 50)).into_bytes();
            let resp = s.call(1, &req, DEADLINE).await.unwrap();
            let MessageKind::Response { call } = resp.kind() else {
                panic!("got {resp:?}");
            };
            let mut want = req.clone();
            want.reverse();
            assert_eq!(resp.payload(), &want[..]);
            resp.commit().unwrap();
            call
        }));
    }
    let seen = serve(&mut a, 200, None).await;
    let mut ids = BTreeSet::new();
    for c in calls {
        assert!(ids.insert(timeout(DEADLINE, c).await.unwrap().unwrap()));
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 200, "each request handled once");
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.core.responses_delivered, 200);
    assert_eq!(b.inspect(|n| n.store().calls_pending()).await.unwrap(), 0);
}

/// A call the callee takes but does not answer ends in `TimedOut` naming it, once; the call
/// is over in the store. A reply to a plain message is refused.
#[tokio::test]
async fn an_unanswered_call_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = nodes(dir.path());
    let s = b.sender();
    let call =
        tokio::spawn(async move { s.call(1, b"?ignored", Duration::from_millis(300)).await });
    serve(&mut a, 1, Some(b'?')).await;
    match timeout(DEADLINE, call).await.unwrap().unwrap() {
        Err(CallError::TimedOut(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let pending = b.inspect(|n| n.store().calls_pending()).await.unwrap();
    assert_eq!(pending, 0, "the timeout ended the call");
    assert_eq!(b.stats().await.unwrap().core.calls_timed_out, 1);

    b.sender().send(1, b"plain").await.unwrap();
    let d = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
    assert!(matches!(
        d.reply(b"no").await,
        Err(SendError::NotARequest { peer: 2, .. })
    ));
}

/// Outcomes of calls nobody awaits come through `recv`, naming the calls: the response of an
/// answered one and the timeout of an unanswered one. A timeout dropped without commit comes
/// again; committed, it never does.
#[tokio::test]
async fn unawaited_outcomes_come_through_recv() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = nodes(dir.path());
    let s = b.sender();
    let answered = s.start_call(1, b"answer me", DEADLINE).await.unwrap();
    let ignored = s
        .start_call(1, b"?ignore me", Duration::from_millis(200))
        .await
        .unwrap();
    serve(&mut a, 2, Some(b'?')).await;
    let mut got = Vec::new();
    let mut dropped_once = false;
    while got.len() < 3 {
        let d = timeout(DEADLINE, b.recv()).await.unwrap().unwrap();
        got.push((d.kind(), d.payload().to_vec()));
        if matches!(d.kind(), MessageKind::CallTimedOut { .. }) && !dropped_once {
            // Dropped untaken: it must come again.
            dropped_once = true;
            drop(d);
        } else {
            d.commit().unwrap();
        }
    }
    let timeouts = got
        .iter()
        .filter(|g| g.0 == MessageKind::CallTimedOut { call: ignored })
        .count();
    assert_eq!(timeouts, 2, "handed again after a drop: {got:?}");
    assert!(got.contains(&(
        MessageKind::Response { call: answered },
        b"em rewsna".to_vec()
    )));
    let pending = b.inspect(|n| n.store().calls_pending()).await.unwrap();
    assert_eq!(pending, 0);
    assert!(timeout(Duration::from_millis(300), b.recv()).await.is_err());
}

/// Requests handled concurrently and answered in reverse order: each reply waits for the
/// requests before it, so the replies are committed in request order (each one consuming its
/// request in turn, which is what keeps the reply atomic with the request's consumption),
/// and every call still gets its own response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replies_commit_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = nodes(dir.path());
    let n = 40u64;
    let mut calls = Vec::new();
    for i in 0..n {
        let s = b.sender();
        calls.push(tokio::spawn(async move {
            let r = s.call(1, &i.to_le_bytes(), DEADLINE).await.unwrap();
            assert_eq!(r.payload(), &(i * 10).to_le_bytes()[..]);
            r.commit().unwrap();
        }));
    }
    let mut handlers = Vec::new();
    for _ in 0..n {
        let d = timeout(DEADLINE, a.recv()).await.unwrap().unwrap();
        let i = u64::from_le_bytes(d.payload().try_into().unwrap());
        let request_seq = d.seq();
        handlers.push(tokio::spawn(async move {
            // Later requests finish their work first.
            tokio::time::sleep(Duration::from_millis(3 * (n - i))).await;
            let reply_seq = d.reply(&(i * 10).to_le_bytes()).await.unwrap();
            (request_seq, reply_seq)
        }));
    }
    let mut pairs = Vec::new();
    for h in handlers {
        pairs.push(timeout(DEADLINE, h).await.unwrap().unwrap());
    }
    for c in calls {
        timeout(DEADLINE, c).await.unwrap().unwrap();
    }
    pairs.sort();
    let reply_seqs: Vec<u64> = pairs.iter().map(|p| p.1).collect();
    let mut sorted = reply_seqs.clone();
    sorted.sort();
    assert_eq!(
        reply_seqs, sorted,
        "replies committed in request order: {pairs:?}"
    );
    let consumed = a.inspect(|n| n.consumed_through(2)).await.unwrap();
    assert_eq!(consumed, n);
}
