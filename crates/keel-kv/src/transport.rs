//! The glue between keel-node and keel-net: a [`Transport`] that sends
//! through a [`keel_net::Network`], and a task that hands what the network
//! receives to the node.

use std::io::Read;
use std::sync::Arc;

use keel::{Envelope, NodeId};
use keel_net::{NetError, Network, NetworkConfig};
use keel_node::{Inbound, Transport};
use tokio::sync::mpsc;

/// How many received events may wait between the network and the node's
/// inbound queue; when both are full, the network stops reading from
/// peers and TCP slows them down.
const FORWARD_QUEUE_EVENTS: usize = 1024;

/// A [`Transport`] over TCP (keel-net).
#[derive(Clone)]
pub struct NetTransport {
    network: Network,
}

impl NetTransport {
    /// Starts the network and a task that forwards what it receives into
    /// `node_inbound` (the sender half of the node's inbound channel).
    ///
    /// # Errors
    /// [`NetError`] when the listener cannot bind or the configuration is
    /// invalid.
    pub async fn start(config: NetworkConfig, node_inbound: mpsc::Sender<Inbound>) -> Result<Self, NetError> {
        let (sender, mut received) = mpsc::channel(FORWARD_QUEUE_EVENTS);
        let network = Network::start(config, sender).await?;
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if node_inbound.send(convert(event)).await.is_err() {
                    break; // the node stopped
                }
            }
        });
        Ok(NetTransport { network })
    }

    /// The network, for its address and its shutdown.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// This transport as the node wants it.
    pub fn shared(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }
}

fn convert(event: keel_net::Inbound) -> Inbound {
    match event {
        keel_net::Inbound::Message(envelope) => Inbound::Message(envelope),
        keel_net::Inbound::Unreachable(id) => Inbound::Unreachable(id),
        keel_net::Inbound::SnapshotReceived { envelope, data_path } => {
            Inbound::SnapshotReceived { envelope, data_path }
        }
        keel_net::Inbound::SnapshotSent { to, outcome } => Inbound::SnapshotSent { to, outcome },
    }
}

impl Transport for NetTransport {
    fn send(&self, envelope: Envelope) {
        self.network.send(envelope);
    }

    fn send_snapshot(&self, envelope: Envelope, data: Box<dyn Read + Send>) {
        self.network.send_snapshot(envelope, data);
    }

    fn set_peer(&self, id: NodeId, address: &str) {
        self.network.set_peer(id, address.to_string());
    }

    fn remove_peer(&self, id: NodeId) {
        self.network.remove_peer(id);
    }
}
