//! The README example: open, commit, sync, release, inbound, reset, reopen.
#![allow(clippy::unwrap_used)]

use hrpc_store::{Durability, OutboundOnReset, Store, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = StoreConfig {
        durability: Durability::Sync,
        ..StoreConfig::new(1)
    };
    let mut store = Store::open(dir.path(), &cfg)?;

    // Any thread: reserve, fill in place, commit. Seqs are 1, 2, ... per peer.
    let producer = store.producer();
    let mut r = producer.reserve(2, 11)?;
    r.payload_mut().copy_from_slice(b"hello peer2");
    let seq = r.commit()?;
    assert_eq!(seq, 1);

    // Poll thread: group commit once per iteration (no-op in Process mode).
    store.sync()?;
    store.maintain();

    // Retransmit from the store; free when the peer acknowledges.
    assert_eq!(
        store.outbound_message(2, seq).unwrap().payload(),
        b"hello peer2"
    );
    store.release_outbound_through(2, seq)?;

    // Inbound, assembled fragment by fragment, published only when complete.
    let msg = b"fragmented message";
    let slot = store.begin_inbound(2, 1, msg.len() as u32, crc32c::crc32c(msg), 0)?;
    store.write_inbound(&slot, 10, &msg[10..])?;
    store.write_inbound(&slot, 0, &msg[..10])?;
    store.commit_inbound(slot)?;
    store.sync()?; // now it is safe to acknowledge it to the peer
    assert_eq!(store.inbound_message(2, 1).unwrap().payload(), msg);
    store.consume_inbound(2, 1)?;

    // The peer restarted with an empty store: drop its state.
    store.set_peer_epoch(2, 0xabc)?;
    store.reset_peer(2, 0xdef, OutboundOnReset::Drop)?;

    // Reopen: everything is recovered.
    drop(store);
    let store = Store::open(dir.path(), &cfg)?;
    println!("{:#?}", store.inspect());
    Ok(())
}
