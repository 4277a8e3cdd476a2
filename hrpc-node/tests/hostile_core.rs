//! Hostile and malformed input at the protocol core (no sockets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Invariant (the `node_datagrams` fuzz target's, in CI without the
    /// fuzzer): arbitrary operation sequences never panic the core; inert
    /// datagrams change no persisted state; deliveries are in order, once.
    #[test]
    fn arbitrary_datagram_sequences(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        hrpc_node::proto::testing::run(dir.path(), &input);
    }
}

/// Replays every input kept under `fuzz/regressions/node_datagrams/`.
#[test]
fn replay_node_datagrams_regressions() {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/node_datagrams");
    let mut replayed = 0;
    for entry in std::fs::read_dir(kept).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        hrpc_node::proto::testing::run(dir.path(), &data);
        replayed += 1;
    }
    assert!(replayed >= 4, "expected the kept inputs, found {replayed}");
}

mod targeted {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use hrpc_node::proto::{Core, CoreConfig, DropReason, StaticResolver};
    use hrpc_store::{Store, StoreConfig};
    use hrpc_wire::{
        AckFrame, DataFrame, DatagramWriter, HeaderFields, HeartbeatFrame, SackRange, SackRanges,
    };

    use super::common::{Seen, Side, drive, side};

    struct Pair {
        a: Core,
        b: Core,
        now: Instant,
        b_addr: SocketAddr,
        dir: tempfile::TempDir,
    }

    fn open(dir: &std::path::Path, id: u32, now: Instant) -> Core {
        let a_addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b_addr: SocketAddr = "127.0.0.2:2".parse().unwrap();
        let resolver = StaticResolver([(1, a_addr), (2, b_addr)].into_iter().collect());
        let store = Store::open(&dir.join(id.to_string()), &StoreConfig::new(id)).unwrap();
        Core::new(store, CoreConfig::default(), Box::new(resolver), now).unwrap()
    }

    impl Pair {
        fn new() -> Pair {
            let dir = tempfile::tempdir().unwrap();
            let now = Instant::now();
            Pair {
                a: open(dir.path(), 1, now),
                b: open(dir.path(), 2, now),
                now,
                b_addr: "127.0.0.2:2".parse().unwrap(),
                dir,
            }
        }

        /// Runs both loops for a round of [`drive`] (a does not deliver; b delivers if
        /// `b_delivers`); returns what b delivered and whether any datagram moved.
        fn round(&mut self, b_delivers: bool) -> (Vec<(u32, u64, Vec<u8>)>, bool) {
            let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
            let mut moved = false;
            drive(
                Side {
                    core: &mut self.a,
                    seen: &mut seen_a,
                    deliver: false,
                },
                Side {
                    deliver: b_delivers,
                    ..side(&mut self.b, &mut seen_b)
                },
                &mut self.now,
                1,
                &mut |_, _| {
                    moved = true;
                    true
                },
            );
            (seen_b.got, moved)
        }

        /// Runs both loops until quiet (bounded); returns b's deliveries.
        fn drive(&mut self) -> Vec<(u32, u64, Vec<u8>)> {
            let mut got = Vec::new();
            for _ in 0..200 {
                let (new, moved) = self.round(true);
                got.extend(new);
                if !moved && !got.is_empty() {
                    break;
                }
            }
            got
        }

        /// The header of a genuine datagram from b to a (both session tokens right).
        fn b_to_a(&self) -> HeaderFields {
            HeaderFields {
                src: 2,
                dst: 1,
                src_epoch: self.b.session_token(1),
                dst_epoch: self.a.session_token(2),
                auth: false,
            }
        }

        /// A datagram "from b" to a, with whatever header fields the test forges.
        fn forge_to_a(
            &mut self,
            header: HeaderFields,
            build: impl FnOnce(&mut DatagramWriter<'_>),
        ) {
            let mut buf = vec![0u8; 1472];
            let mut w = DatagramWriter::new(&mut buf, &header).unwrap();
            build(&mut w);
            let n = w.finish();
            self.a.handle_datagram(self.now, self.b_addr, &buf[..n]);
        }
    }

    /// Invariant: an ACK whose cumulative or SACK ranges cover seqs never
    /// committed is dropped as bogus and frees nothing.
    #[test]
    fn ack_of_unsent_seqs_frees_nothing() {
        let mut p = Pair::new();
        p.a.touch(2, p.now);
        p.drive();
        for i in 0..3u8 {
            p.a.producer().send(2, &[i; 10]).unwrap();
        }
        bogus_acks_free_nothing(
            &mut p,
            &[
                (
                    1,
                    vec![SackRange {
                        first: 5,
                        last: 100,
                    }],
                ),
                (50, vec![]),
            ],
        );
    }

    /// Invariant: an ACK covering seqs that were committed but never sent to
    /// the peer (in this process or, as far as the store says, before it) is
    /// dropped as bogus and frees nothing; the messages still go out.
    #[test]
    fn ack_of_committed_but_unsent_seqs_frees_nothing() {
        let mut p = Pair::new();
        p.a.touch(2, p.now);
        p.drive();
        for i in 0..3u8 {
            p.a.producer().send(2, &[i; 10]).unwrap();
        }
        p.a.sync().unwrap();
        bogus_acks_free_nothing(
            &mut p,
            &[(3, vec![]), (0, vec![SackRange { first: 2, last: 3 }])],
        );
    }

    /// Forges each `(cumulative, sacks)` ACK from b to a (whose three pending messages 1..=3
    /// b has not received): every one is dropped as bogus, a's store is unchanged, and b
    /// still receives 1, 2, 3 in order.
    fn bogus_acks_free_nothing(p: &mut Pair, acks: &[(u64, Vec<SackRange>)]) {
        let before = p.a.store().inspect();
        let header = p.b_to_a();
        for (cumulative, sacks) in acks {
            p.forge_to_a(header, |w| {
                w.push_ack(&AckFrame {
                    cumulative: *cumulative,
                    ack_delay_us: 0,
                    window_msgs: 10,
                    window_bytes: 1000,
                    sacks: SackRanges::Native(sacks),
                })
                .unwrap();
            });
        }
        assert_eq!(p.a.stats().dropped(DropReason::BogusAck), acks.len() as u64);
        assert_eq!(before, p.a.store().inspect());
        let got = p.drive();
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    /// Invariant: a LOST range reaching past any possible stream (up to
    /// `u64::MAX`) or a heartbeat skipping that far is refused or bounded: no
    /// overflow, no panic, and the real stream still works afterwards.
    #[test]
    fn huge_lost_ranges_and_skips_are_bounded() {
        use hrpc_wire::LostFrame;
        let mut p = Pair::new();
        p.a.touch(2, p.now);
        p.b.touch(1, p.now);
        p.drive();
        let header = p.b_to_a();
        p.forge_to_a(header, |w| {
            w.push_lost(&LostFrame {
                first: 1,
                last: u64::MAX,
            })
            .unwrap();
        });
        assert_eq!(p.a.stats().dropped(DropReason::Malformed), 1);
        p.forge_to_a(header, |w| {
            w.push_heartbeat(&HeartbeatFrame {
                reply_requested: false,
                next_seq: u64::MAX,
                first_pending: u64::MAX,
                expected: 1,
                timestamp_us: 1,
                echo_us: u64::MAX,
            })
            .unwrap();
        });
        p.a.sync().unwrap();
        p.a.deliver(usize::MAX, &mut |_| {}).unwrap();
        p.a.check_receive_state().unwrap();
        // a's own stream to b is untouched.
        p.a.producer().send(2, b"still here").unwrap();
        let got = p.drive();
        assert_eq!(
            got.iter().map(|g| g.2.clone()).collect::<Vec<_>>(),
            vec![b"still here".to_vec()]
        );
    }

    /// Invariant: a datagram claiming a new session for a known peer resets nothing, whether
    /// it knows this node's token for the peer or not (an off-path forger, a stale packet):
    /// it is only answered with a challenge; queued messages stay queued and are delivered.
    #[test]
    fn forged_epoch_does_not_wipe_queue() {
        let mut p = Pair::new();
        p.a.touch(2, p.now);
        p.drive();
        p.a.producer().send(2, b"keep me").unwrap();
        let before = p.a.store().inspect();
        for dst_epoch in [0, 12345] {
            let header = HeaderFields {
                src: 2,
                dst: 1,
                src_epoch: p.b.session_token(1) ^ 1,
                dst_epoch,
                auth: false,
            };
            p.forge_to_a(header, |w| {
                w.push_heartbeat(&HeartbeatFrame {
                    reply_requested: true,
                    next_seq: 1,
                    first_pending: 1,
                    expected: 1,
                    timestamp_us: 1,
                    echo_us: 0,
                })
                .unwrap();
            });
        }
        // Another session, even with this node's token for the peer, needs a round trip.
        let header = HeaderFields {
            src: 2,
            dst: 1,
            src_epoch: p.b.session_token(1) ^ 2,
            dst_epoch: p.a.session_token(2),
            auth: false,
        };
        p.forge_to_a(header, |w| {
            w.push_data(&DataFrame {
                flags: 0,
                seq: 1,
                msg_len: 1,
                offset: 0,
                msg_crc: crc32c::crc32c(b"x"),
                payload: b"x",
            })
            .unwrap();
        });
        assert_eq!(p.a.stats().dropped(DropReason::UnknownEpoch), 1);
        assert_eq!(p.a.stats().dropped(DropReason::WrongEpoch), 1);
        assert_eq!(p.a.stats().dropped(DropReason::UnvalidatedRestart), 1);
        assert_eq!(p.a.stats().peer_resets, 0);
        assert_eq!(before, p.a.store().inspect());
        let got = p.drive();
        assert_eq!(got, vec![(1, 1, b"keep me".to_vec())]);
    }

    /// Invariant: data beyond the advertised window, for another node, or
    /// with a checksum that does not match its message is dropped and not
    /// persisted.
    #[test]
    fn out_of_window_misaddressed_and_corrupt_data_is_not_persisted() {
        let mut p = Pair::new();
        p.b.touch(1, p.now);
        p.drive();
        let before = p.a.store().inspect();
        let good = p.b_to_a();
        let far = DataFrame {
            flags: 0,
            seq: 1 << 40,
            msg_len: 1,
            offset: 0,
            msg_crc: crc32c::crc32c(b"x"),
            payload: b"x",
        };
        p.forge_to_a(good, |w| w.push_data(&far).unwrap());
        let bad_crc = DataFrame {
            flags: 0,
            seq: 1,
            msg_len: 1,
            offset: 0,
            msg_crc: 7,
            payload: b"x",
        };
        p.forge_to_a(good, |w| w.push_data(&bad_crc).unwrap());
        let elsewhere = HeaderFields { dst: 9, ..good };
        let ok = DataFrame {
            flags: 0,
            seq: 1,
            msg_len: 1,
            offset: 0,
            msg_crc: crc32c::crc32c(b"x"),
            payload: b"x",
        };
        p.forge_to_a(elsewhere, |w| w.push_data(&ok).unwrap());
        assert_eq!(p.a.stats().dropped(DropReason::BeyondWindow), 1);
        assert_eq!(p.a.stats().dropped(DropReason::CorruptMessage), 1);
        assert_eq!(p.a.stats().dropped(DropReason::WrongDestination), 1);
        assert_eq!(before, p.a.store().inspect());
    }

    /// Invariant (the documented redelivery): if the receiving handler dies
    /// before returning, that message was not consumed and is delivered
    /// again after restart; the ones before it are not.
    #[test]
    fn crash_inside_handler_redelivers_that_message_once() {
        let mut p = Pair::new();
        for i in 0..3u8 {
            p.a.producer().send(2, &[i]).unwrap();
        }
        // Get them persisted at b without delivering.
        for _ in 0..50 {
            p.round(false);
        }
        let mut seen = Vec::new();
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.b.deliver(usize::MAX, &mut |d| {
                seen.push(d.seq);
                if d.seq == 2 {
                    panic!("handler dies");
                }
            })
        }));
        assert!(crashed.is_err());
        assert_eq!(seen, vec![1, 2]);
        // Restart b on the same store.
        let Pair { b, dir, now, .. } = p;
        drop(b);
        let mut b = open(dir.path(), 2, now);
        let mut again = Vec::new();
        b.deliver(usize::MAX, &mut |d| again.push(d.seq)).unwrap();
        assert_eq!(again, vec![2, 3]);
    }

    /// Invariant: half-assembled messages are bounded per peer; a sender
    /// that starts messages and never finishes them blocks new ones only
    /// until the stalled ones have been idle long enough to be evicted.
    #[test]
    fn stalled_reassemblies_are_bounded_then_evicted() {
        let mut p = Pair::new();
        p.b.touch(1, p.now);
        p.drive();
        let header = p.b_to_a();
        let max = CoreConfig::default().max_reassemblies_per_peer as u64;
        // The first fragment of a 10 000-byte message `seq`, never followed.
        let start = |p: &mut Pair, seq: u64| {
            p.forge_to_a(header, |w| {
                let part = [7u8; 100];
                w.push_data(&DataFrame {
                    flags: 0,
                    seq,
                    msg_len: 10_000,
                    offset: 0,
                    msg_crc: 0,
                    payload: &part,
                })
                .unwrap()
            })
        };
        for seq in 1..=max + 1 {
            start(&mut p, seq);
        }
        assert_eq!(
            p.a.stats().dropped(DropReason::NoSpace),
            1,
            "one over the bound"
        );
        p.now += Duration::from_secs(6);
        start(&mut p, max + 2);
        assert_eq!(
            p.a.stats().dropped(DropReason::NoSpace),
            1,
            "idle assemblies were evicted to make room"
        );
    }

    /// Invariant: a heartbeat's `expected` acknowledges (frees) what it
    /// covers but takes no RTT sample: when a heartbeat goes out says nothing
    /// about how long a message's round trip took.
    #[test]
    fn heartbeat_acknowledgement_takes_no_rtt_sample() {
        let mut p = Pair::new();
        p.a.producer().send(2, b"measured").unwrap();
        p.drive();
        let srtt =
            p.a.peer_info(2)
                .unwrap()
                .srtt
                .expect("sampled from a real ack");
        // A second message goes out; b's ack for it is lost. A second later
        // b's heartbeat says it has everything.
        p.a.producer().send(2, b"late").unwrap();
        let mut buf = vec![0u8; 1472];
        while p.a.poll_transmit(p.now, &mut buf).is_some() {}
        p.now += Duration::from_secs(1);
        let header = p.b_to_a();
        p.forge_to_a(header, |w| {
            w.push_heartbeat(&HeartbeatFrame {
                reply_requested: false,
                next_seq: 1,
                first_pending: 1,
                expected: 3,
                timestamp_us: 1,
                echo_us: 0,
            })
            .unwrap()
        });
        let info = p.a.peer_info(2).unwrap();
        assert_eq!(info.unacked_messages, 0, "the heartbeat acknowledged seq 2");
        assert_eq!(info.srtt, Some(srtt), "and took no RTT sample");
    }
}
