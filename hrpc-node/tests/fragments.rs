//! Messages larger than a datagram, up to the maximum size, through two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{addr, open};

use std::time::{Duration, Instant};

/// Invariant: a message of `MAX_MESSAGE_LEN` bytes crosses intact, in one
/// transmission when nothing is lost (no timeout fires while its fragments
/// are still being written), and so does one with every 97th datagram lost.
#[test]
fn max_size_message_crosses() {
    for drop_every in [0usize, 97] {
        let dir = tempfile::tempdir().unwrap();
        let mut now = Instant::now();
        let mut a = open(dir.path(), 1, now);
        let mut b = open(dir.path(), 2, now);
        let msg: Vec<u8> = (0..hrpc_wire::MAX_MESSAGE_LEN)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        a.producer().send(2, &msg).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1472];
        let mut n = 0usize;
        for _ in 0..20_000 {
            // Each step moves at most 64 datagrams: about 90 KB per 100 µs.
            now += Duration::from_micros(100);
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
            if b.poll_timeout().is_some_and(|t| t <= now) {
                b.handle_timeout(now);
            }
            for _ in 0..64 {
                let Some(t) = a.poll_transmit(now, &mut buf) else {
                    break;
                };
                n += 1;
                if drop_every == 0 || !n.is_multiple_of(drop_every) {
                    b.handle_datagram(now, addr(1), &buf[..t.len]);
                }
            }
            b.deliver(usize::MAX, &mut |d| got.push(d.payload.to_vec()))
                .unwrap();
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                a.handle_datagram(now, addr(2), &buf[..t.len]);
            }
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(
            got.len(),
            1,
            "drop_every {drop_every}: {:?} / {:?}",
            a.stats(),
            b.stats()
        );
        assert!(got[0] == msg, "payload differs");
        if drop_every == 0 {
            assert_eq!(a.stats().messages_retransmitted, 0, "{:?}", a.stats());
        }
    }
}
