//! The soak's options: how many messages and kills, how lossy the link, and how each side's
//! share of the messages is counted.

/// Options of `hrpc-bench soak`.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    /// Messages in all, both directions together (A sends the odd one).
    pub msgs: u64,
    /// SIGKILLs to deliver.
    pub kills: u32,
    /// Relay drop/duplicate/reorder probability in percent (corruption: a fifth of it).
    pub loss: f64,
    /// Nodes in [`Durability::Sync`](hrpc_node::Durability::Sync), logs `fdatasync`ed after
    /// each delivering poll.
    pub durable: bool,
    /// Message size in bytes (at least [`payload::MIN_SIZE`](crate::payload::MIN_SIZE)).
    pub size: usize,
    /// Seed of the kill schedule and the relay.
    pub seed: u64,
    /// Mean seconds between partition windows (0: none).
    pub partition_every: f64,
    /// Hard limit on the whole soak; the run fails if it is reached.
    pub max_secs: u64,
}

impl SoakOpts {
    /// `msgs` messages and `kills` kills, 64-byte messages, no loss, seed 1, a partition
    /// every 2 s on average, at most 30 minutes.
    pub fn new(msgs: u64, kills: u32) -> Self {
        SoakOpts {
            msgs,
            kills,
            loss: 0.0,
            durable: false,
            size: 64,
            seed: 1,
            partition_every: 2.0,
            max_secs: 1800,
        }
    }

    /// Messages side `i` (0 = A, 1 = B) sends to the other.
    pub fn quota(&self, i: usize) -> u64 {
        if i == 0 {
            self.msgs.div_ceil(2)
        } else {
            self.msgs / 2
        }
    }
}
