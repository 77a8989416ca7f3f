//! Micro benchmark: appends of 128-byte entries from one node to another
//! over loopback, batched by the transport. Prints messages/s, entries/s
//! and payload MiB/s for a few entries-per-message settings.
//!
//! `cargo run --release -p keel-net --example throughput`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use keel::{Append, Entry, EntryKind, Envelope, Index, LogId, Message, NodeId, Term};
use keel_net::{Inbound, Network, NetworkConfig};
use tokio::sync::mpsc;

const ENTRY_BYTES: usize = 128;
/// Messages in flight at most: the sender waits for the receiver to catch up
/// rather than overflow the queue (the queue would drop, not block).
const WINDOW_MESSAGES: u64 = 4096;

fn append(first_index: u64, entries: u64, payload: &Bytes) -> Envelope {
    Envelope::new(
        NodeId::new(1),
        NodeId::new(2),
        Term::new(1),
        Message::Append(Append {
            prev: LogId::new(Term::new(1), Index::new(first_index - 1)),
            entries: (first_index..first_index + entries)
                .map(|index| {
                    Entry::new(
                        Term::new(1),
                        Index::new(index),
                        EntryKind::Normal,
                        payload.clone(),
                    )
                })
                .collect(),
            commit: Index::new(first_index - 1),
        }),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut sender_config =
        NetworkConfig::new(1, NodeId::new(1), "127.0.0.1:0".parse()?, dir.path().join("a"));
    sender_config.send_queue_messages = 2 * WINDOW_MESSAGES as usize;
    let receiver_config = NetworkConfig::new(1, NodeId::new(2), "127.0.0.1:0".parse()?, dir.path().join("b"));
    let (a_inbound, mut a_events) = mpsc::channel(1024);
    let (b_inbound, mut b_events) = mpsc::channel(8192);
    let a = Network::start(sender_config, a_inbound).await?;
    let b = Network::start(receiver_config, b_inbound).await?;
    a.set_peer(NodeId::new(2), b.local_addr().to_string());
    // `b` only ever receives: it admits node 1 without knowing its address.
    b.set_members([NodeId::new(1)]);

    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Some(event) = b_events.recv().await {
            if let Inbound::Message(_) = event {
                counter.fetch_add(1, Ordering::Release);
            }
        }
    });
    let drops = Arc::new(AtomicU64::new(0));
    let drop_counter = drops.clone();
    tokio::spawn(async move {
        while let Some(event) = a_events.recv().await {
            if let Inbound::Unreachable(_) = event {
                drop_counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let payload = Bytes::from(vec![0x5a; ENTRY_BYTES]);
    println!(
        "{:>16} {:>10} {:>14} {:>14} {:>10}",
        "entries/message", "messages", "messages/s", "entries/s", "MiB/s"
    );
    let mut index = 1;
    for (entries_per_message, messages) in [(1u64, 300_000u64), (4, 150_000), (16, 50_000), (64, 15_000)] {
        let base = received.load(Ordering::Acquire);
        let started = Instant::now();
        for sent in 0..messages {
            while sent - (received.load(Ordering::Acquire) - base) >= WINDOW_MESSAGES {
                tokio::task::yield_now().await;
            }
            a.send(append(index, entries_per_message, &payload));
            index += entries_per_message;
        }
        while received.load(Ordering::Acquire) - base < messages {
            tokio::task::yield_now().await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let entries = (messages * entries_per_message) as f64;
        println!(
            "{:>16} {:>10} {:>14.0} {:>14.0} {:>10.1}",
            entries_per_message,
            messages,
            messages as f64 / seconds,
            entries / seconds,
            entries * ENTRY_BYTES as f64 / seconds / (1024.0 * 1024.0)
        );
    }
    println!("dropped (unreachable reports): {}", drops.load(Ordering::Relaxed));
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
