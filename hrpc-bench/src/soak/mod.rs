//! `hrpc-bench soak`: two nodes exchange numbered messages through a chaos
//! [`relay`](crate::relay) while
//! the soak SIGKILLs one or the other at random moments and restarts it on the same store;
//! at the end every delivery is checked against what was sent.
//!
//! # Who sends what
//!
//! Two child processes (`soak-side`), node 1 ("A") and node 2 ("B"), each one node with its
//! own store. Of `--msgs N`, A sends `ceil(N/2)` messages to B and B sends `floor(N/2)` to A,
//! both at once, so both directions carry traffic and every kill hits a sender and a receiver.
//! Message `k` of a side is a [`payload`](crate::payload) message numbered `k` (sender id, `k`, filler,
//! crc32c), sent as the `k`-th message to that peer, so its hrpc seq is `k` too.
//!
//! # The link
//!
//! A [`Relay::link`](crate::relay::Relay::link) joins the two: each side binds a fixed loopback port (reserved by the
//! soak before the first start and bound again after every restart) and knows its peer only
//! by the relay's address for it. The relay drops, duplicates and reorders datagrams with
//! probability `--loss`%, corrupts one in five of that, and cuts the link in both directions
//! for 50–300 ms windows drawn from the seed ([`partition_schedule`](crate::relay::partition_schedule), one per
//! `--partition-every` seconds on average). It lives as long as the soak and never restarts.
//!
//! # Kills and restarts
//!
//! `--kills K` thresholds are drawn uniformly from `0..N` (seeded). Whenever the deliveries
//! logged so far pass the next threshold and both sides are up (they have printed `READY`),
//! the soak waits 0–20 ms more (so the kill lands anywhere in the send/poll/deliver loop),
//! then SIGKILLs a side chosen at random, reaps it and starts it again with the same
//! arguments: same node id, same store directory, same port, same delivery log. Kills left
//! once everything is delivered still happen (restarts with nothing to do). A restarted side
//! resumes sending at `Node::next_outbound_seq(peer)`: everything below it was committed and
//! survives in the store, so nothing is sent twice and nothing is skipped.
//!
//! # The delivery log
//!
//! Each side appends one 16-byte record per delivery to its log, with one `write(2)` inside
//! the handler, before it returns (so before hrpc counts the message consumed): hrpc seq
//! (u64), payload length (u32), a 32-bit FNV-1a [`digest`] of the payload, little-endian. A write that
//! returned is in the page cache and survives SIGKILL; with `--durable` the nodes run
//! [`Durability::Sync`](hrpc_node::Durability::Sync) and the log is `fdatasync`ed after
//! every poll that delivered, before the next group commit persists the consumption, so an OS
//! crash could only add redeliveries. Each start appends a marker record; a record cut short by a kill (never seen
//! so far) is cut off at the next start and a "torn" marker written in its place.
//!
//! # The check
//!
//! After all kills, once both sides report that everything they sent is acknowledged and
//! everything their peer sent is delivered, the soak stops them and reads the logs
//! ([`check_log`]): each record's digest must match the message the sender made for that
//! seq (else corrupt), seqs must come 1, 2, 3, … (a new seq below the highest seen is
//! reordered; one never seen is lost), and a seq seen before is duplicated. The only
//! duplicate the delivery contract allows is the handler-crash kind: the first record after a
//! restart repeating the last record before it (the process died after the handler ran but
//! before the consumption was recorded) — at most one per kill of that receiver. Any other
//! duplicate is counted as unexplained and fails the run.

mod check;
mod child;
mod log;
mod opts;
mod parent;
mod result;

use std::time::Duration;

pub use check::{LogCheck, check_log};
pub use child::{SideOpts, SideReport, side_child};
pub use log::{RECORD, START_MARK, TORN_MARK, digest, record};
pub use opts::SoakOpts;
pub use parent::run;
pub use result::{SoakResult, summary};

/// Node ids of the two sides.
pub const IDS: [u32; 2] = [1, 2];
/// Longest a side may take to start (open its store, bind its port).
const STARTUP: Duration = Duration::from_secs(30);
