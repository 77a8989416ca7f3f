//! How a node talks to its peers: the [`Transport`] trait the raft loop
//! sends through, the [`Inbound`] events it receives, and [`LocalNetwork`],
//! an in-process transport for tests and examples.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use keel::{Envelope, NodeId, SnapshotOutcome};
use keel_net::Network;
use tokio::sync::mpsc;

/// What the transport hands to the raft loop: keel-net's events, which
/// [`LocalNetwork`] produces too.
pub use keel_net::Inbound;

/// Sends messages to peers. Implementations never block: a message that
/// cannot be queued is dropped and reported as [`Inbound::Unreachable`].
pub trait Transport: Send + Sync + 'static {
    /// Queues a message for its recipient.
    fn send(&self, envelope: Envelope);
    /// Streams a snapshot (metadata in `envelope`, data from `data`) to its
    /// recipient and reports the outcome as [`Inbound::SnapshotSent`].
    fn send_snapshot(&self, envelope: Envelope, data: Box<dyn Read + Send>);
    /// Learns (or changes) a peer's address.
    fn set_peer(&self, id: NodeId, address: &str);
    /// Forgets a peer.
    fn remove_peer(&self, id: NodeId);
}

/// The bound of a node's inbound queue.
pub const INBOUND_QUEUE_MESSAGES: usize = 4096;

/// A channel for a node's inbound events: give the sender to the
/// transport, the receiver to [`Node::start`](crate::Node::start).
pub fn inbound_channel() -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
    mpsc::channel(INBOUND_QUEUE_MESSAGES)
}

/// An in-process network of nodes, with links that can be cut: for tests
/// and examples. Messages are delivered in order per link.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    inner: Arc<Mutex<LocalNetworkInner>>,
}

#[derive(Default)]
struct LocalNetworkInner {
    nodes: BTreeMap<NodeId, mpsc::Sender<Inbound>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    spool_dir: Option<PathBuf>,
    spooled: u64,
}

impl LocalNetwork {
    /// An empty network that spools snapshots under `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        let network = LocalNetwork::default();
        network.lock().spool_dir = Some(spool_dir.into());
        network
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalNetworkInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connects node `id`: its inbound events go to `inbound`. Returns its
    /// transport.
    pub fn join(&self, id: NodeId, inbound: mpsc::Sender<Inbound>) -> Arc<dyn Transport> {
        self.lock().nodes.insert(id, inbound);
        Arc::new(LocalTransport {
            network: self.clone(),
            local: id,
        })
    }

    /// Disconnects node `id` (it crashed).
    pub fn leave(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&self, id: NodeId) {
        let mut inner = self.lock();
        let others: Vec<NodeId> = inner.nodes.keys().copied().filter(|other| *other != id).collect();
        for other in others {
            inner.cut.insert((id, other));
            inner.cut.insert((other, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn route(&self, from: NodeId, to: NodeId) -> Option<mpsc::Sender<Inbound>> {
        let inner = self.lock();
        if inner.cut.contains(&(from, to)) {
            return None;
        }
        inner.nodes.get(&to).cloned()
    }

    fn report(&self, to: NodeId, event: Inbound) {
        if let Some(sender) = self.lock().nodes.get(&to).cloned() {
            let _ = sender.try_send(event);
        }
    }

    fn spool_path(&self) -> Option<PathBuf> {
        let mut inner = self.lock();
        inner.spooled += 1;
        let count = inner.spooled;
        inner
            .spool_dir
            .as_ref()
            .map(|directory| directory.join(format!("snapshot-{count}.incoming")))
    }
}

struct LocalTransport {
    network: LocalNetwork,
    local: NodeId,
}

impl Transport for LocalTransport {
    fn send(&self, envelope: Envelope) {
        let to = envelope.to;
        let delivered = match self.network.route(self.local, to) {
            Some(sender) => sender.try_send(Inbound::Message(envelope)).is_ok(),
            None => false,
        };
        if !delivered {
            self.network.report(self.local, Inbound::Unreachable(to));
        }
    }

    fn send_snapshot(&self, envelope: Envelope, mut data: Box<dyn Read + Send>) {
        let network = self.network.clone();
        let local = self.local;
        // Copy on a thread, as a real transport streams on its own
        // connection: the raft loop never waits for snapshot IO.
        std::thread::spawn(move || {
            let to = envelope.to;
            let outcome = (|| {
                let sender = network.route(local, to)?;
                let path = network.spool_path()?;
                let mut file = std::fs::File::create(&path).ok()?;
                std::io::copy(&mut data, &mut file).ok()?;
                file.flush().ok()?;
                sender
                    .blocking_send(Inbound::SnapshotReceived {
                        envelope,
                        data_path: path,
                    })
                    .ok()
            })();
            let outcome = match outcome {
                Some(()) => SnapshotOutcome::Delivered,
                None => SnapshotOutcome::Failed,
            };
            network.report(local, Inbound::SnapshotSent { to, outcome });
        });
    }

    fn set_peer(&self, _id: NodeId, _address: &str) {}

    fn remove_peer(&self, _id: NodeId) {}
}

/// The real transport: keel-net's TCP (optionally TLS) network.
impl Transport for Network {
    fn send(&self, envelope: Envelope) {
        Network::send(self, envelope);
    }

    fn send_snapshot(&self, envelope: Envelope, data: Box<dyn Read + Send>) {
        Network::send_snapshot(self, envelope, data);
    }

    fn set_peer(&self, id: NodeId, address: &str) {
        Network::set_peer(self, id, address.to_string());
    }

    fn remove_peer(&self, id: NodeId) {
        Network::remove_peer(self, id);
    }
}
