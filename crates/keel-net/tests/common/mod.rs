//! Helpers shared by the integration tests: nodes on loopback with fast
//! backoff, and waiting for inbound events with a deadline.

#![allow(dead_code)] // each test binary uses a subset

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use keel::{Append, Entry, EntryKind, Envelope, Heartbeat, Index, LogId, Message, NodeId, Term};
use keel_net::{Inbound, Network, NetworkConfig};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(5);

pub fn config(cluster_id: u64, id: u64, dir: &Path) -> NetworkConfig {
    let mut config = NetworkConfig::new(
        cluster_id,
        NodeId::new(id),
        "127.0.0.1:0".parse().expect("loopback address"),
        dir.join(format!("snapshots-{id}")),
    );
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 100;
    config.handshake_timeout_ms = 2_000;
    config
}

pub struct Node {
    pub network: Network,
    pub inbound: mpsc::Receiver<Inbound>,
}

pub async fn start(config: NetworkConfig) -> Node {
    let (sender, inbound) = mpsc::channel(4096);
    let network = Network::start(config, sender).await.expect("network starts");
    Node { network, inbound }
}

impl Node {
    pub fn addr(&self) -> String {
        self.network.local_addr().to_string()
    }

    /// The first event that `want` accepts within `WAIT`, skipping others.
    pub async fn expect<T>(&mut self, mut want: impl FnMut(Inbound) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.inbound.recv())
                .await
                .expect("event within the deadline")
                .expect("inbound channel open");
            if let Some(found) = want(event) {
                return found;
            }
        }
    }

    pub async fn expect_message(&mut self) -> Envelope {
        self.expect(|event| match event {
            Inbound::Message(envelope) => Some(envelope),
            _ => None,
        })
        .await
    }

    pub async fn expect_unreachable(&mut self, peer: u64) {
        self.expect(|event| match event {
            Inbound::Unreachable(id) if id == NodeId::new(peer) => Some(()),
            _ => None,
        })
        .await
    }

    /// Asserts that no message arrives for `quiet`.
    pub async fn expect_no_message(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.inbound.recv()).await {
            if let Some(Inbound::Message(envelope)) = event {
                panic!("unexpected message {envelope:?}");
            }
        }
    }
}

pub fn heartbeat(from: u64, to: u64, commit: u64) -> Envelope {
    Envelope::new(
        NodeId::new(from),
        NodeId::new(to),
        Term::new(1),
        Message::Heartbeat(Heartbeat {
            commit: Index::new(commit),
            read_round: None,
        }),
    )
}

pub fn append(from: u64, to: u64, first_index: u64, count: u64, payload_bytes: usize) -> Envelope {
    let payload = Bytes::from(vec![0xab; payload_bytes]);
    Envelope::new(
        NodeId::new(from),
        NodeId::new(to),
        Term::new(2),
        Message::Append(Append {
            prev: LogId::new(Term::new(2), Index::new(first_index - 1)),
            entries: (first_index..first_index + count)
                .map(|index| {
                    Entry::new(
                        Term::new(2),
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
