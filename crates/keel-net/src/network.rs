//! The transport's handle and the state its tasks share.
//!
//! # Connections
//!
//! Each node dials each peer it sends to, and uses that connection only to
//! send: messages from A to B travel on a connection A opened, messages from
//! B to A on one B opened. One connection per ordered pair means no
//! simultaneous-dial race to settle and no head-of-line coupling between the
//! two directions; the cost is two sockets per pair instead of one. The
//! dialler ([`writer`](crate::writer)) closes and re-dials when the
//! connection fails; the listener ([`listener`](crate::listener)) only reads
//! (plus the one-frame handshake reply). Each snapshot travels on a
//! connection of its own, so a long transfer never delays heartbeats.
//!
//! # Membership
//!
//! The listener accepts a handshake only from a member: an id given with
//! [`Network::set_peer`] (or in [`NetworkConfig::peers`]) or with
//! [`Network::set_members`], and not removed since. Everything else is
//! refused at the handshake, so a stranger can neither deliver messages nor
//! hold a member's connection slot, nor make this node learn its address.
//! The one exception is the join path: a node that knows no member at all
//! (started to be added to a cluster) accepts any peer whose handshake
//! carries its cluster id, until the runtime names the members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use keel::{Envelope, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

use crate::admission::{Admission, Connection};
use crate::codec::HandshakeStatus;
use crate::listener::accept_loop;
use crate::refusals::RefusalLog;
use crate::stats::{Counters, NetworkStats};
use crate::tls::TlsContext;
use crate::writer::peer_writer;
use crate::{snapshot, Inbound, NetError, NetworkConfig};

/// The most inbound connections held at once, of every kind together: a
/// ceiling far above what the budgets allow (unauthenticated connections
/// plus two per member), so that it only bounds a runaway membership.
pub(crate) const INBOUND_CONNECTIONS_LIMIT: usize = 65_536;

/// The transport between this node and its peers. Cheap to clone; when the
/// last clone is dropped the transport shuts down (prefer
/// [`Network::shutdown`], which also waits for connections to close).
///
/// ```no_run
/// # async fn run() -> Result<(), keel_net::NetError> {
/// use keel::NodeId;
/// use keel_net::{Network, NetworkConfig};
///
/// let config = NetworkConfig::new(42, NodeId::new(1), "127.0.0.1:7001".parse().unwrap(), "/tmp/incoming".into());
/// let (sender, _inbound) = tokio::sync::mpsc::channel(1024);
/// let network = Network::start(config, sender).await?;
/// network.set_peer(NodeId::new(2), "127.0.0.1:7002".to_string());
/// network.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Network {
    owner: Arc<Owner>,
}

/// Signals shutdown when the last [`Network`] clone goes away. Tasks hold
/// [`Shared`], never `Owner`, so they do not keep the transport alive.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

pub(crate) struct Shared {
    pub(crate) config: NetworkConfig,
    pub(crate) local_addr: SocketAddr,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) tls: Option<TlsContext>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) peers: Mutex<BTreeMap<NodeId, Peer>>,
    unreachable_pending: Mutex<BTreeSet<NodeId>>,
    unreachable_notify: Notify,
    /// The membership and the connections held (taken per connection
    /// event, never per message).
    pub(crate) admission: Mutex<Admission<AbortHandle>>,
    /// One permit per inbound connection task, up to
    /// [`INBOUND_CONNECTIONS_LIMIT`]; shutdown waits for them all.
    pub(crate) inbound_tasks: Arc<Semaphore>,
    pub(crate) refusal_log: Mutex<RefusalLog>,
    pub(crate) counters: Counters,
    /// One permit per snapshot being received (`snapshot_receives_max`).
    pub(crate) snapshot_receives: Semaphore,
    background: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) snapshot_sequence: AtomicU64,
}

/// A peer this node sends to: its queue, its address, its writer task.
pub(crate) struct Peer {
    queue: mpsc::Sender<Envelope>,
    address: watch::Sender<String>,
    task: JoinHandle<()>,
}

/// Sets (or changes) the address of peer `id`, starting its writer on
/// first sight.
pub(crate) fn set_peer_address(shared: &Arc<Shared>, id: NodeId, address: String) {
    let mut peers = lock(&shared.peers);
    if let Some(peer) = peers.get(&id) {
        peer.address.send_replace(address);
        return;
    }
    let (queue, receiver) = mpsc::channel(shared.config.send_queue_messages);
    let (address, address_receiver) = watch::channel(address);
    let task = shared
        .runtime
        .spawn(peer_writer(shared.clone(), id, receiver, address_receiver));
    peers.insert(id, Peer { queue, address, task });
}

/// Locks a mutex, ignoring poison: every critical section here leaves the
/// data consistent, so a panic elsewhere is no reason to stop the transport.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves when shutdown is signalled (or the signal is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

/// Closes inbound connections handed back by the admission state.
fn close(connections: Vec<Connection<AbortHandle>>) {
    for connection in connections {
        connection.handle.abort();
    }
}

impl Network {
    /// Binds the listener, loads TLS files, creates `snapshot_dir`, and
    /// starts the transport's tasks on the current tokio runtime. Messages,
    /// unreachable reports and snapshots arrive on `inbound`; when it is
    /// full, reading from peers pauses (TCP then slows the senders, whose
    /// queues fill and drop). The members are the ids in `config.peers`
    /// until told otherwise.
    pub async fn start(config: NetworkConfig, inbound: mpsc::Sender<Inbound>) -> Result<Network, NetError> {
        config.validate()?;
        tokio::fs::create_dir_all(&config.snapshot_dir)
            .await
            .map_err(|source| NetError::SnapshotDir {
                path: config.snapshot_dir.clone(),
                source,
            })?;
        let tls = config.tls.as_ref().map(TlsContext::load).transpose()?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| NetError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| NetError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        let peers = config.peers.clone();
        let shared = Arc::new(Shared {
            local_addr,
            inbound,
            tls,
            shutdown: watch::Sender::new(false),
            runtime: tokio::runtime::Handle::current(),
            peers: Mutex::new(BTreeMap::new()),
            unreachable_pending: Mutex::new(BTreeSet::new()),
            unreachable_notify: Notify::new(),
            admission: Mutex::new(Admission::new()),
            inbound_tasks: Arc::new(Semaphore::new(INBOUND_CONNECTIONS_LIMIT)),
            refusal_log: Mutex::new(RefusalLog::new(Instant::now())),
            counters: Counters::default(),
            snapshot_receives: Semaphore::new(config.snapshot_receives_max),
            background: Mutex::new(Vec::new()),
            snapshot_sequence: AtomicU64::new(0),
            config,
        });
        let network = Network {
            owner: Arc::new(Owner {
                shared: shared.clone(),
            }),
        };
        // Members first, so that the first connections are judged by them.
        for (id, address) in peers {
            network.set_peer(id, address);
        }
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        let reporter = tokio::spawn(report_unreachable_loop(shared.clone()));
        lock(&shared.background).extend([accept, reporter]);
        info!(node = %shared.config.node_id, %local_addr, "keel-net listening");
        Ok(network)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Queues `envelope` for its recipient and returns at once. Queued
    /// messages to one peer are written together, one write per batch. If
    /// the peer's queue is full, the peer has no address, or the transport is
    /// shut down, the message is dropped and [`Inbound::Unreachable`] reported.
    ///
    /// A [`keel::Message::Snapshot`] sent here travels as a plain message
    /// without data; use [`Network::send_snapshot`] for snapshots.
    pub fn send(&self, envelope: Envelope) {
        let to = envelope.to;
        let peers = lock(&self.shared().peers);
        let Some(peer) = peers.get(&to) else {
            drop(peers);
            debug!(peer = %to, "dropping message to a peer with no address");
            self.shared().report_unreachable(to);
            return;
        };
        if let Err(error) = peer.queue.try_send(envelope) {
            drop(peers);
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "send queue full",
                mpsc::error::TrySendError::Closed(_) => "transport stopped",
            };
            debug!(peer = %to, reason, "dropping message");
            self.shared().report_unreachable(to);
        }
    }

    /// Streams a snapshot to `envelope.to` on a connection of its own: first
    /// `envelope` (whose message must be [`keel::Message::Snapshot`]), then
    /// `data` read to its end in chunks of `snapshot_chunk_bytes`. `data` is
    /// read on a blocking thread. Returns at once; the outcome arrives as
    /// [`Inbound::SnapshotSent`]: `Delivered` once the receiver has the
    /// whole data on disk, `Failed` on any error (the core retries later).
    pub fn send_snapshot(&self, envelope: Envelope, data: Box<dyn std::io::Read + Send>) {
        let shared = self.shared().clone();
        let address = lock(&shared.peers)
            .get(&envelope.to)
            .map(|peer| peer.address.borrow().clone());
        let runtime = shared.runtime.clone();
        runtime.spawn(snapshot::send(shared, address, envelope, data));
    }

    /// Sets (or changes) the address of peer `id`, and makes it a member:
    /// its connections are accepted. A changed address closes the current
    /// connection; the next message dials the new one.
    pub fn set_peer(&self, id: NodeId, address: String) {
        let shared = self.shared();
        if id == shared.config.node_id || id == NodeId::ZERO {
            warn!(peer = %id, "ignoring set_peer for this node's own or a zero id");
            return;
        }
        lock(&shared.admission).add_member(id);
        set_peer_address(shared, id, address);
    }

    /// Replaces the membership: the ids whose connections are accepted,
    /// with or without a known address (this node's own id is ignored).
    /// Connections from ids left out are closed at once; their addresses
    /// stay known until [`Network::remove_peer`].
    ///
    /// The runtime calls it whenever its membership changes, with every id
    /// of the configuration: voters, learners, and in a joint configuration
    /// the outgoing voters too. [`Network::set_peer`] adds one member and
    /// [`Network::remove_peer`] removes one, so a runtime that gives every
    /// member's address with `set_peer` and removes former members with
    /// `remove_peer` needs no more.
    ///
    /// A node that waits to join a cluster and knows no member yet accepts
    /// any peer with its cluster id (the join path); giving it the current
    /// members' ids here (or their addresses in [`NetworkConfig::peers`])
    /// makes it strict at once. It learns the addresses of members that
    /// dial it from their handshakes. A member that lags behind the log does not know of nodes
    /// added since and refuses them: a runtime should admit the ids of
    /// every configuration in its log, applied or not.
    ///
    /// ```no_run
    /// # fn run(network: keel_net::Network) {
    /// use keel::NodeId;
    /// // Joining a cluster of nodes 1, 2 and 3 (addresses learned later).
    /// network.set_members([1, 2, 3].map(NodeId::new));
    /// # }
    /// ```
    pub fn set_members(&self, members: impl IntoIterator<Item = NodeId>) {
        let shared = self.shared();
        let own = shared.config.node_id;
        let members: BTreeSet<NodeId> = members
            .into_iter()
            .filter(|id| *id != own && *id != NodeId::ZERO)
            .collect();
        let closed = lock(&shared.admission).set_members(members);
        if !closed.is_empty() {
            info!(node = %own, connections = closed.len(), "closing connections of former members");
        }
        close(closed);
    }

    /// Forgets peer `id`: drops its queue, closes its connections in both
    /// directions, and removes it from the membership. Messages to it are
    /// then reported unreachable, and its connections refused.
    pub fn remove_peer(&self, id: NodeId) {
        let shared = self.shared();
        if let Some(peer) = lock(&shared.peers).remove(&id) {
            peer.task.abort();
        }
        let closed = lock(&shared.admission).remove_member(id);
        close(closed);
    }

    /// What the listener holds now and has refused so far: see
    /// [`NetworkStats`].
    ///
    /// ```no_run
    /// # fn run(network: keel_net::Network) {
    /// let stats = network.stats();
    /// assert!(stats.member_connections <= 2 * 5, "two per member of a five-node cluster");
    /// # }
    /// ```
    pub fn stats(&self) -> NetworkStats {
        let shared = self.shared();
        let (unauthenticated, members) = lock(&shared.admission).counts();
        shared.counters.snapshot(unauthenticated, members)
    }

    /// Stops listening, closes every connection (in-flight snapshot
    /// transfers fail) and waits, up to about a second, for the connection
    /// tasks to finish. Idempotent.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.shutdown.send_replace(true);
        let peers = std::mem::take(&mut *lock(&shared.peers));
        for peer in peers.values() {
            peer.task.abort();
        }
        for (_, peer) in peers {
            let _ = peer.task.await;
        }
        let background = std::mem::take(&mut *lock(&shared.background));
        for task in background {
            let _ = task.await;
        }
        // Every inbound connection holds a permit until its task ends.
        if let Ok(Ok(permits)) = tokio::time::timeout(
            Duration::from_secs(1),
            shared
                .inbound_tasks
                .acquire_many(INBOUND_CONNECTIONS_LIMIT as u32),
        )
        .await
        {
            drop(permits);
        }
        info!(node = %shared.config.node_id, "keel-net stopped");
    }
}

impl Shared {
    /// What this node tells peers to dial: the configured advertise
    /// address, else the bound address unless it is unspecified.
    pub(crate) fn advertised_address(&self) -> String {
        match &self.config.advertise_address {
            Some(address) => address.clone(),
            None if self.local_addr.ip().is_unspecified() => String::new(),
            None => self.local_addr.to_string(),
        }
    }

    /// Notes that a message to `id` was dropped; the reporter task delivers
    /// one [`Inbound::Unreachable`] per noted peer.
    pub(crate) fn report_unreachable(&self, id: NodeId) {
        lock(&self.unreachable_pending).insert(id);
        self.unreachable_notify.notify_one();
    }

    /// Tells the runtime that `peer` refused our handshake with `status`.
    /// Dropped if the inbound queue is full: the next dial reports again,
    /// and a refusal must never hold up a writer.
    pub(crate) fn report_refused(&self, peer: NodeId, status: HandshakeStatus) {
        if self.inbound.try_send(Inbound::Refused { peer, status }).is_err() {
            debug!(peer = %peer, ?status, "inbound queue full; refusal not reported");
        }
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }

    pub(crate) fn inbound_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.inbound_idle_timeout_ms)
    }
}

async fn report_unreachable_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = shared.unreachable_notify.notified() => {}
        }
        let pending = std::mem::take(&mut *lock(&shared.unreachable_pending));
        for id in pending {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                sent = shared.inbound.send(Inbound::Unreachable(id)) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
