//! Test support: an in-process cluster over **real loopback TCP**
//! (keel-net, ports chosen by the OS) with real keel-log storage in a
//! temporary directory, and hooks to partition, pause, crash and restart
//! nodes. Enabled by the `test-support` feature.
//!
//! ```no_run
//! use std::time::Duration;
//! use keel_node::{testing::TestCluster, Consistency, StateMachine};
//!
//! async fn failover<M: StateMachine + Default>(command: M::Command, query: M::Query) {
//!     let mut cluster = TestCluster::start(3, |_id| M::default()).await;
//!     let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
//!     cluster.handle(leader).write(command).await.unwrap();
//!     cluster.crash(leader).await;
//!     let next = cluster.wait_for_leader_where(Duration::from_secs(5), |id| id != leader).await;
//!     cluster.handle(next).read(query, Consistency::Linearizable).await.unwrap();
//!     cluster.restart(leader).await;
//!     cluster.shutdown().await;
//! }
//! ```
//!
//! What each hook does, precisely:
//!
//! - **Partition** ([`TestCluster::partition`], [`TestCluster::isolate`],
//!   [`TestCluster::heal`]) simulates a partition *at the transport layer*:
//!   every node's transport is wrapped in a filter that consults a shared
//!   set of cut links before sending. A message (or snapshot) on a cut link
//!   is dropped on the sending side and reported to the sender as
//!   [`Inbound::Unreachable`] (or a failed snapshot), exactly as keel-net
//!   reports a peer it cannot reach. The TCP connections stay up; messages
//!   already in flight when the cut is made may still arrive.
//! - **Pause** ([`TestCluster::pause`], [`TestCluster::resume`]) stalls a
//!   node's network: events from its peers are held (not read from
//!   keel-net, so TCP backpressure builds up as for a stopped process) and
//!   delivered in order on resume, and everything it sends is dropped. Its
//!   raft loop is *not* frozen: it keeps ticking and serving its handle
//!   (keel-node has no hook to stop the loop's clock), so a paused node
//!   times out elections it cannot win, as a node whose network stalled
//!   would, rather than waking up believing no time passed.
//! - **Crash** ([`TestCluster::crash`]) stops the node's transport at once
//!   (connections close, in-flight snapshot transfers fail), then its raft
//!   loop. Its data directory is kept. Being in-process, the disk thread
//!   still finishes the writes already queued to it; nothing acknowledged
//!   depends on that.
//! - **Restart** ([`TestCluster::restart`]) starts the node again from the
//!   same data directory, listening on the same address.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Envelope, NodeId, Role, SnapshotOutcome};
use keel_net::{Network, NetworkConfig};
use tokio::sync::{mpsc, watch};

use crate::{
    inbound_channel, AddressBook, Bootstrap, Inbound, MemberInfo, Node, NodeConfig, NodeHandle, StateMachine,
    Transport,
};

/// Makes a fresh, empty state machine for node `id`.
pub type Factory<M> = Arc<dyn Fn(NodeId) -> M + Send + Sync>;

/// Adjusts a node's configuration before it starts.
pub type Configure = Arc<dyn Fn(&mut NodeConfig) + Send + Sync>;

/// The set of cut links `(from, to)`, shared by every node's transport.
#[derive(Clone, Default)]
struct Cuts(Arc<Mutex<BTreeSet<(NodeId, NodeId)>>>);

impl Cuts {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(NodeId, NodeId)>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().contains(&(from, to))
    }
}

/// A [`Transport`] over a keel-net [`Network`] that drops, on the sending
/// side, messages on links in the shared cut set, and everything while the
/// node is paused.
struct FilteredTransport {
    network: Network,
    local: NodeId,
    cuts: Cuts,
    paused: watch::Receiver<bool>,
    /// The node's own inbound queue, for unreachable reports.
    inbound: mpsc::Sender<Inbound>,
}

impl FilteredTransport {
    fn blocked(&self, to: NodeId) -> bool {
        *self.paused.borrow() || self.cuts.is_cut(self.local, to)
    }
}

impl Transport for FilteredTransport {
    fn send(&self, envelope: Envelope) {
        if self.blocked(envelope.to) {
            let _ = self.inbound.try_send(Inbound::Unreachable(envelope.to));
            return;
        }
        self.network.send(envelope);
    }

    fn send_snapshot(&self, envelope: Envelope, data: Box<dyn Read + Send>) {
        if self.blocked(envelope.to) {
            let _ = self.inbound.try_send(Inbound::SnapshotSent {
                to: envelope.to,
                outcome: SnapshotOutcome::Failed,
            });
            return;
        }
        self.network.send_snapshot(envelope, data);
    }

    fn set_peer(&self, id: NodeId, address: &str) {
        self.network.set_peer(id, address.to_string());
    }

    fn remove_peer(&self, id: NodeId) {
        self.network.remove_peer(id);
    }
}

/// A running node of a [`TestCluster`].
struct Running<M: StateMachine> {
    handle: NodeHandle<M>,
    network: Network,
    paused: watch::Sender<bool>,
    forwarder: tokio::task::JoinHandle<()>,
}

/// Builds a [`TestCluster`].
pub struct TestClusterBuilder<M: StateMachine> {
    size: u64,
    factory: Factory<M>,
    configure: Option<Configure>,
    cluster_id: u64,
}

impl<M: StateMachine> TestClusterBuilder<M> {
    /// How many founding voters (default 3).
    pub fn nodes(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    /// Changes every node's configuration (after the test defaults: 20 ms
    /// ticks, 5 s request timeout, a snapshot every 1,000 entries).
    pub fn configure(mut self, configure: impl Fn(&mut NodeConfig) + Send + Sync + 'static) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The cluster id in keel-net's handshake (default 7).
    pub fn cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = cluster_id;
        self
    }

    /// Starts the founders, nodes `1..=size`.
    ///
    /// # Panics
    /// If a node or its transport cannot start (this is test support).
    pub async fn start(self) -> TestCluster<M> {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = TestCluster {
            directory,
            factory: self.factory,
            configure: self.configure,
            cluster_id: self.cluster_id,
            cuts: Cuts::default(),
            addresses: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        let mut networks = Vec::new();
        for id in 1..=self.size {
            let id = NodeId::new(id);
            let (network, receiver) = cluster.start_network(id, None).await;
            networks.push((id, network, receiver));
        }
        let book = cluster.address_book();
        for (id, network, receiver) in networks {
            cluster
                .start_node(id, network, receiver, Bootstrap::Founders(book.clone()))
                .await;
        }
        cluster
    }
}

/// An in-process cluster over loopback TCP. See the [module](self) docs for
/// what partition, pause, crash and restart do.
pub struct TestCluster<M: StateMachine> {
    directory: tempfile::TempDir,
    factory: Factory<M>,
    configure: Option<Configure>,
    cluster_id: u64,
    cuts: Cuts,
    /// Every node ever started, and where it listens (kept across crashes).
    addresses: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Running<M>>,
}

impl<M: StateMachine> TestCluster<M> {
    /// A builder: `factory` makes each node's empty state machine.
    pub fn builder(factory: impl Fn(NodeId) -> M + Send + Sync + 'static) -> TestClusterBuilder<M> {
        TestClusterBuilder {
            size: 3,
            factory: Arc::new(factory),
            configure: None,
            cluster_id: 7,
        }
    }

    /// Starts `size` founders with the default test configuration.
    pub async fn start(size: u64, factory: impl Fn(NodeId) -> M + Send + Sync + 'static) -> Self {
        Self::builder(factory).nodes(size).start().await
    }

    /// The temporary directory holding every node's data.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.directory.path().join(format!("node-{id}"))
    }

    fn node_config(&self, id: NodeId) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.data_dir(id));
        config.tick_interval = Duration::from_millis(20);
        config.request_timeout = Duration::from_secs(5);
        config.snapshot_interval_entries = 1_000;
        config.snapshot_keep_entries = 100;
        if let Some(configure) = &self.configure {
            configure(&mut config);
        }
        config
    }

    async fn start_network(
        &mut self,
        id: NodeId,
        address: Option<SocketAddr>,
    ) -> (Network, mpsc::Receiver<Inbound>) {
        let spool = self.directory.path().join(format!("spool-{id}"));
        let listen = address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut config = NetworkConfig::new(self.cluster_id, id, listen, spool);
        // Quick reconnects: nodes come and go in tests.
        config.reconnect_backoff_ms_max = 200;
        let (sender, receiver) = inbound_channel();
        let mut attempt = 0;
        let network = loop {
            match Network::start(config.clone(), sender.clone()).await {
                Ok(network) => break network,
                // The old listener's port may take a moment to be free.
                Err(error) if attempt < 50 && address.is_some() => {
                    attempt += 1;
                    tracing::debug!(%id, %error, "rebinding, retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("node {id}: cannot start keel-net: {error}"),
            }
        };
        self.addresses.insert(id, network.local_addr());
        (network, receiver)
    }

    async fn start_node(
        &mut self,
        id: NodeId,
        network: Network,
        mut from_network: mpsc::Receiver<Inbound>,
        bootstrap: Bootstrap,
    ) {
        let (paused_sender, paused) = watch::channel(false);
        let (to_node, inbound) = inbound_channel();
        let transport = Arc::new(FilteredTransport {
            network: network.clone(),
            local: id,
            cuts: self.cuts.clone(),
            paused: paused.clone(),
            inbound: to_node.clone(),
        });
        // Forwards the network's events to the node, holding them while
        // the node is paused.
        let mut pause = paused;
        let forwarder = tokio::spawn(async move {
            loop {
                if *pause.borrow_and_update() {
                    if pause.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    changed = pause.changed() => if changed.is_err() { return },
                    event = from_network.recv() => match event {
                        Some(event) => if to_node.send(event).await.is_err() { return },
                        None => return,
                    },
                }
            }
        });
        let config = self.node_config(id);
        let handle = Node::start(config, (self.factory)(id), bootstrap, transport, inbound)
            .await
            .unwrap_or_else(|error| panic!("node {id}: cannot start: {error}"));
        self.nodes.insert(
            id,
            Running {
                handle,
                network,
                paused: paused_sender,
                forwarder,
            },
        );
    }

    /// Every running node's address book entry, as a founder would list it.
    fn address_book(&self) -> AddressBook {
        self.addresses
            .keys()
            .map(|id| (*id, self.member_info(*id)))
            .collect()
    }

    /// How peers reach node `id`.
    ///
    /// # Panics
    /// If node `id` was never started.
    pub fn member_info(&self, id: NodeId) -> MemberInfo {
        MemberInfo {
            peer_address: self.addresses[&id].to_string(),
            metadata: Bytes::new(),
        }
    }

    /// The ids of running (not crashed) nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s handle.
    ///
    /// # Panics
    /// If node `id` is not running.
    pub fn handle(&self, id: NodeId) -> NodeHandle<M> {
        match self.nodes.get(&id) {
            Some(node) => node.handle.clone(),
            None => panic!("node {id} is not running"),
        }
    }

    /// The leader right now: among running nodes that say they lead, the
    /// one with the highest term (a deposed leader in a minority may not
    /// know yet).
    pub async fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(keel::Term, NodeId)> = None;
        for (id, node) in &self.nodes {
            if let Ok(status) = node.handle.status().await {
                if status.raft.role == Role::Leader
                    && best.is_none_or(|(term, _)| status.raft.hard_state.term > term)
                {
                    best = Some((status.raft.hard_state.term, *id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits up to `timeout` for a leader that a majority of running
    /// nodes agree on (same term, same leader).
    ///
    /// # Panics
    /// If there is none by then.
    pub async fn wait_for_leader(&self, timeout: Duration) -> NodeId {
        self.wait_for_leader_where(timeout, |_| true).await
    }

    /// As [`TestCluster::wait_for_leader`], for a leader that satisfies
    /// `accept` (for example, not the one just crashed or cut off).
    ///
    /// # Panics
    /// If there is none by then.
    pub async fn wait_for_leader_where(&self, timeout: Duration, accept: impl Fn(NodeId) -> bool) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await.filter(|leader| accept(*leader)) {
                let term = self
                    .handle(leader)
                    .status()
                    .await
                    .map(|status| status.raft.hard_state.term);
                let mut agree = 0;
                for node in self.nodes.values() {
                    if let Ok(status) = node.handle.status().await {
                        if status.raft.leader == Some(leader) && Ok(status.raft.hard_state.term) == term {
                            agree += 1;
                        }
                    }
                }
                if agree * 2 > self.nodes.len() {
                    return leader;
                }
            }
            if Instant::now() >= deadline {
                panic!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cuts every link between `group` and the other nodes, both ways.
    pub fn partition(&self, group: &[NodeId]) {
        let mut cuts = self.cuts.lock();
        for a in group {
            for b in self.addresses.keys().filter(|id| !group.contains(id)) {
                cuts.insert((*a, *b));
                cuts.insert((*b, *a));
            }
        }
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&self, id: NodeId) {
        self.partition(&[id]);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut cuts = self.cuts.lock();
        cuts.insert((a, b));
        cuts.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cuts.lock().clear();
    }

    /// Stalls node `id`'s network (see the [module](self) docs): inbound
    /// events are held, outbound messages dropped.
    pub fn pause(&self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id) {
            node.paused.send_replace(true);
        }
    }

    /// Resumes a paused node: held events are delivered in order.
    pub fn resume(&self, id: NodeId) {
        if let Some(node) = self.nodes.get(&id) {
            node.paused.send_replace(false);
        }
    }

    /// Crashes node `id`: its transport stops at once, then its raft loop.
    /// Its data directory and address are kept for [`TestCluster::restart`].
    pub async fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.network.shutdown().await;
            node.handle.shutdown().await;
            node.forwarder.abort();
            let _ = node.forwarder.await;
        }
    }

    /// Restarts a crashed node from its data directory, on its address.
    ///
    /// # Panics
    /// If the node was never started or cannot start.
    pub async fn restart(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "node {id} is running");
        let address = self.addresses[&id];
        let (network, receiver) = self.start_network(id, Some(address)).await;
        self.start_node(id, network, receiver, Bootstrap::Join).await;
    }

    /// Starts a new, empty node (the next free id) that waits to be added
    /// by a membership change, e.g. `add_voter(id, cluster.member_info(id))`.
    pub async fn add_node(&mut self) -> NodeId {
        let next = self.addresses.keys().next_back().map_or(1, |id| id.get() + 1);
        let id = NodeId::new(next);
        let (network, receiver) = self.start_network(id, None).await;
        self.start_node(id, network, receiver, Bootstrap::Join).await;
        id
    }

    /// Stops every node. Call it at the end of a test: dropping the
    /// cluster without it leaves the nodes to die with the runtime.
    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.crash(id).await;
        }
    }
}
