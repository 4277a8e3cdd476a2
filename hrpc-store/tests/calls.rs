//! Request/response records: outstanding calls and replies that consume their request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hrpc_store::{Durability, FLAG_CALL, Store, StoreConfig};

fn cfg() -> StoreConfig {
    StoreConfig::new(1)
}

fn request(store: &Store, peer: u32, payload: &[u8], deadline_ms: u64) -> (u64, u64) {
    let p = store.producer();
    let id = p.new_call_id();
    let mut r = p.reserve(peer, payload.len()).unwrap();
    r.payload_mut().copy_from_slice(payload);
    let seq = r.commit_request(id, deadline_ms).unwrap();
    (id, seq)
}

/// A call is outstanding from its commit until `finish_call`, across reopens (a drop is the
/// process-death path); the request is an ordinary outbound message flagged as a call; ids
/// are never reused, even after every call ended and the store was reopened.
#[test]
fn calls_outlive_restarts_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        (a, _) = request(&store, 7, b"first", 5_000);
        (b, _) = request(&store, 8, b"second", 1_000);
        store.producer().send(7, b"plain").unwrap();
        assert_ne!(a, b);
        assert_eq!(store.calls_pending(), 2);
    }
    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.calls_pending(), 2);
    let call = store.call(a).unwrap();
    assert_eq!((call.peer, call.deadline_ms), (7, 5_000));
    assert_eq!(store.next_call_deadline(), Some(1_000));
    let expired: Vec<u64> = store
        .expired_calls(4_999, 10)
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(expired, vec![b]);
    let out = store.outbound_message(7, 1).unwrap();
    assert_eq!((out.payload(), out.flags()), (&b"first"[..], FLAG_CALL));
    assert_eq!(store.outbound_message(7, 2).unwrap().flags(), 0);
    // Acknowledging the request does not end the call.
    store.release_outbound_through(7, 1).unwrap();
    assert!(store.call(a).is_some());
    assert!(store.finish_call(b).unwrap());
    assert!(!store.finish_call(b).unwrap(), "a call ends once");
    drop(store);

    let mut store = Store::open(dir.path(), &cfg()).unwrap();
    assert!(store.call(b).is_none(), "a finished call stays finished");
    assert!(store.call(a).is_some());
    assert!(store.finish_call(a).unwrap());
    drop(store);
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.calls_pending(), 0);
    let (c, _) = request(&store, 7, b"third", 9);
    assert!(c != a && c != b);
}

/// An inbound message's call flag survives persisting and reopening, on both receive paths.
#[test]
fn inbound_flags_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        store
            .put_inbound_checked(3, 1, b"req", crc32c::crc32c(b"req"), FLAG_CALL)
            .unwrap();
        let slot = store
            .begin_inbound(3, 2, 4, crc32c::crc32c(b"frag"), FLAG_CALL)
            .unwrap();
        store.write_inbound(&slot, 0, b"frag").unwrap();
        store.commit_inbound(slot).unwrap();
        store.put_inbound(3, 3, b"plain").unwrap();
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let flags: Vec<u8> = (1..=3)
        .map(|s| store.inbound_message(3, s).unwrap().flags())
        .collect();
    assert_eq!(flags, vec![FLAG_CALL, FLAG_CALL, 0]);
}

/// Invariant: committing a reply is the commit point of its request's consumption. After a
/// crash between the reply's commit and the consumption record (here: no consumption at
/// all), recovery consumes every request answered by a held reply that follows the consumed
/// cursor without a hole, and no other message; a reply past a hole consumes nothing.
#[test]
fn a_reply_consumes_its_request_across_a_crash() {
    for durability in [Durability::Process, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            durability,
            ..cfg()
        };
        {
            let mut store = Store::open(dir.path(), &cfg).unwrap();
            for seq in 1..=5 {
                store.put_inbound(4, seq, b"request").unwrap();
            }
            store.consume_inbound(4, 1).unwrap();
            store.sync().unwrap();
            let p = store.producer();
            // Replies to 2 and 3 (in order), and to 5 past the unanswered 4.
            for consumes in [2, 3, 5] {
                let mut r = p.reserve(4, 5).unwrap();
                r.payload_mut().copy_from_slice(b"reply");
                r.commit_reply(consumes).unwrap();
            }
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), &cfg).unwrap();
        assert_eq!(store.inbound_consumed(4), 3, "{durability:?}");
        assert_eq!(store.inbound_seqs(4), vec![4, 5], "{durability:?}");
        assert_eq!(store.outbound_seqs(4), vec![1, 2, 3]);
        assert_eq!(store.outbound_message(4, 1).unwrap().flags(), FLAG_CALL);
        drop(store);
        // Idempotent: a second open finds the same state.
        let store = Store::open(dir.path(), &cfg).unwrap();
        assert_eq!(store.inbound_consumed(4), 3);
    }
}

/// A reply whose request's stream was reset since (a new inbound incarnation) consumes
/// nothing of the new stream.
#[test]
fn a_reply_from_before_a_reset_consumes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), &cfg()).unwrap();
        store.put_inbound(4, 1, b"old request").unwrap();
        let p = store.producer();
        let mut r = p.reserve(4, 1).unwrap();
        r.payload_mut().copy_from_slice(b"r");
        r.commit_reply(1).unwrap();
        store
            .reset_peer(4, 0, hrpc_store::OutboundOnReset::Keep)
            .unwrap();
        store.put_inbound(4, 1, b"new request").unwrap();
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.inbound_consumed(4), 0);
    assert_eq!(
        store.inbound_message(4, 1).unwrap().payload(),
        b"new request"
    );
}

/// A call id of 0, or of a call still outstanding, is refused and publishes nothing: a call
/// slot's seq is its id, and one id stands for one call.
#[test]
fn call_ids_zero_or_in_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        let (id, _) = request(&store, 7, b"first", 5_000);
        let p = store.producer();
        for bad in [0, id] {
            let mut r = p.reserve(7, 1).unwrap();
            r.payload_mut().copy_from_slice(b"x");
            assert!(r.commit_request(bad, 9_000).is_err(), "id {bad} accepted");
        }
        assert_eq!(store.calls_pending(), 1);
        assert_eq!(store.outbound_seqs(7), vec![1]);
        assert_eq!(store.call(id).map(|c| c.deadline_ms), Some(5_000));
    }
    // And the store still opens undamaged.
    assert_eq!(Store::open(dir.path(), &cfg()).unwrap().calls_pending(), 1);
}
