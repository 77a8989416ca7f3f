//! The transport itself: a listener, one writer task per peer, and the
//! connection handlers.
//!
//! # Connections
//!
//! Each node dials each peer it sends to, and uses that connection only to
//! send: messages from A to B travel on a connection A opened, messages from
//! B to A on one B opened. One connection per ordered pair means no
//! simultaneous-dial race to settle and no head-of-line coupling between the
//! two directions; the cost is two sockets per pair instead of one. The
//! dialler closes and re-dials when the connection fails; the listener only
//! reads (plus the one-frame handshake reply). Each snapshot travels on a
//! connection of its own, so a long transfer never delays heartbeats.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use keel::{Envelope, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::codec::{
    self, ConnectionKind, Handshake, HandshakeStatus, FRAME_HEADER_BYTES, HANDSHAKE_BYTES_MAX,
    HANDSHAKE_REPLY_BYTES, PROTOCOL_VERSION,
};
use crate::frame::{FrameError, FrameReader};
use crate::tls::TlsContext;
use crate::{snapshot, NetworkConfig, TlsConfig};

/// The most inbound connections a configuration may allow (a semaphore
/// bound, and far more than a Raft cluster has peers).
pub(crate) const INBOUND_CONNECTIONS_LIMIT: usize = 65_536;

/// What the transport hands to the runtime.
#[derive(Debug)]
pub enum Inbound {
    /// A message from a node of our cluster, addressed to us.
    Message(Envelope),
    /// A message to this peer was dropped: its queue was full, it has no
    /// address, connecting failed, or a write failed. Reports for one peer
    /// are coalesced while the runtime has not taken the last one, so a burst
    /// of drops yields one report. Pass it to `RawNode::report_unreachable`.
    Unreachable(NodeId),
    /// A whole snapshot arrived. `envelope.message` is
    /// [`keel::Message::Snapshot`]; its data is on disk at `data_path`, a
    /// file in `snapshot_dir` that the runtime now owns (and removes once
    /// installed).
    SnapshotReceived {
        /// The snapshot message.
        envelope: Envelope,
        /// The complete, fsynced data.
        data_path: PathBuf,
    },
    /// The outcome of a [`Network::send_snapshot`]: `Delivered` once the
    /// receiver holds the whole data on disk, `Failed` otherwise. Pass it to
    /// `RawNode::report_snapshot`.
    SnapshotSent {
        /// The snapshot's recipient.
        to: NodeId,
        /// Delivered or failed.
        outcome: keel::SnapshotOutcome,
    },
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration field is out of range.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A TLS file could not be loaded or used.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot directory could not be created.
    #[error("cannot create snapshot directory {path}: {source}")]
    SnapshotDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why dialling a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connect and handshake took longer than {0:?}")]
    Timeout(Duration),
    #[error("peer refused the handshake: {0:?} (its protocol version {1})")]
    Refused(HandshakeStatus, u16),
    #[error("bad handshake reply: {0}")]
    Protocol(String),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("the peer's certificate does not name {0} (keel-node-<id>)")]
    Identity(NodeId),
}

/// A byte stream, plain TCP or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub(crate) type BoxStream = Box<dyn Stream>;

/// The transport between this node and its peers. Cheap to clone; when the
/// last clone is dropped the transport shuts down (prefer
/// [`Network::shutdown`], which also waits for connections to close).
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
    runtime: tokio::runtime::Handle,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    unreachable_pending: Mutex<BTreeSet<NodeId>>,
    unreachable_notify: Notify,
    inbound_connections: Arc<Semaphore>,
    /// One permit per snapshot being received (`snapshot_receives_max`).
    pub(crate) snapshot_receives: Semaphore,
    background: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) snapshot_sequence: AtomicU64,
}

struct Peer {
    queue: mpsc::Sender<Envelope>,
    address: watch::Sender<String>,
    task: JoinHandle<()>,
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
}

/// Sets (or changes) the address of peer `id`, starting its writer on
/// first sight.
fn set_peer_address(shared: &Arc<Shared>, id: NodeId, address: String) {
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
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves when shutdown is signalled (or the signal is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

impl Network {
    /// Binds the listener, loads TLS files, creates `snapshot_dir`, and
    /// starts the transport's tasks on the current tokio runtime. Messages,
    /// unreachable reports and snapshots arrive on `inbound`; when it is
    /// full, reading from peers pauses (TCP then slows the senders, whose
    /// queues fill and drop).
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
            inbound_connections: Arc::new(Semaphore::new(config.inbound_connections_max)),
            snapshot_receives: Semaphore::new(config.snapshot_receives_max),
            background: Mutex::new(Vec::new()),
            snapshot_sequence: AtomicU64::new(0),
            config,
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        let reporter = tokio::spawn(report_unreachable_loop(shared.clone()));
        lock(&shared.background).extend([accept, reporter]);
        let network = Network {
            owner: Arc::new(Owner { shared }),
        };
        for (id, address) in peers {
            network.set_peer(id, address);
        }
        info!(node = %network.shared().config.node_id, %local_addr, "keel-net listening");
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

    /// Sets (or changes) the address of peer `id`. A changed address closes
    /// the current connection; the next message dials the new one.
    pub fn set_peer(&self, id: NodeId, address: String) {
        let shared = self.shared();
        if id == shared.config.node_id || id == NodeId::ZERO {
            warn!(peer = %id, "ignoring set_peer for this node's own or a zero id");
            return;
        }
        set_peer_address(shared, id, address);
    }

    /// Forgets peer `id`: drops its queue and closes its connection.
    /// Messages to it are then reported unreachable.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = lock(&self.shared().peers).remove(&id) {
            peer.task.abort();
        }
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
        let all = u32::try_from(shared.config.inbound_connections_max).unwrap_or(u32::MAX);
        if let Ok(Ok(permits)) = tokio::time::timeout(
            Duration::from_secs(1),
            shared.inbound_connections.acquire_many(all),
        )
        .await
        {
            drop(permits);
        }
        info!(node = %shared.config.node_id, "keel-net stopped");
    }
}

impl Shared {
    /// Notes that a message to `id` was dropped; the reporter task delivers
    /// one [`Inbound::Unreachable`] per noted peer.
    pub(crate) fn report_unreachable(&self, id: NodeId) {
        lock(&self.unreachable_pending).insert(id);
        self.unreachable_notify.notify_one();
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }

    /// Dials `address`, runs TLS if configured and the handshake, and
    /// returns the stream ready for frames.
    pub(crate) async fn connect(
        &self,
        address: &str,
        to: NodeId,
        kind: ConnectionKind,
    ) -> Result<FrameReader<BoxStream>, ConnectError> {
        let timeout = self.handshake_timeout();
        tokio::time::timeout(timeout, self.connect_unbounded(address, to, kind))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    async fn connect_unbounded(
        &self,
        address: &str,
        to: NodeId,
        kind: ConnectionKind,
    ) -> Result<FrameReader<BoxStream>, ConnectError> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let mut stream: BoxStream = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = host_of(address);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| ConnectError::ServerName(host.to_string()))?;
                let stream = tls.connector.connect(name, tcp).await?;
                if tls.require_node_names
                    && !crate::tls::names_node(stream.get_ref().1.peer_certificates(), to)
                {
                    return Err(ConnectError::Identity(to));
                }
                Box::new(stream)
            }
        };
        let handshake = Handshake {
            version: PROTOCOL_VERSION,
            kind,
            cluster_id: self.config.cluster_id,
            from: self.config.node_id,
            to,
            advertised_address: self.advertised_address(),
        };
        let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + handshake.encoded_bytes());
        out.put_u32(handshake.encoded_bytes() as u32);
        codec::encode_handshake(&handshake, &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut frames = FrameReader::new(stream, HANDSHAKE_REPLY_BYTES as u32);
        let reply = match frames.next_frame().await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(ConnectError::Protocol("closed before replying".into())),
            Err(error) => return Err(ConnectError::Protocol(error.to_string())),
        };
        let (version, status) = codec::decode_handshake_reply(reply)
            .map_err(|error| ConnectError::Protocol(error.to_string()))?;
        if status != HandshakeStatus::Accepted {
            return Err(ConnectError::Refused(status, version));
        }
        frames.set_max_frame_bytes(self.config.max_frame_bytes);
        Ok(frames)
    }
}

/// The host part of `host:port` (brackets stripped from an IPv6 literal).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
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

// ---------------------------------------------------------------- sending

/// Jittered exponential backoff.
struct Backoff {
    delay_ms_min: u64,
    delay_ms_max: u64,
    delay_ms_next: u64,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    fn new(delay_ms_min: u64, delay_ms_max: u64) -> Self {
        Backoff {
            delay_ms_min,
            delay_ms_max,
            delay_ms_next: delay_ms_min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The next delay: the current step less a random part of up to half of
    /// it; the step then doubles, up to the maximum.
    fn next_delay(&mut self) -> Duration {
        let step = self.delay_ms_next;
        self.delay_ms_next = step.saturating_mul(2).min(self.delay_ms_max);
        self.draws += 1;
        let jitter = self.random.hash_one(self.draws) % (step / 2 + 1);
        Duration::from_millis(step - jitter)
    }

    fn reset(&mut self) {
        self.delay_ms_next = self.delay_ms_min;
    }
}

/// Why a connected writer went back to dialling.
enum Disconnect {
    /// The transport stopped or the peer was removed: end the task.
    Stop,
    /// The connection failed; back off before the next dial.
    Failed,
    /// The peer's address changed: dial the new one right away.
    AddressChanged,
}

/// Owns the connection to one peer: dials when there is something to send,
/// batches the queue into writes, and backs off (dropping what arrives
/// meanwhile) after failures.
async fn peer_writer(
    shared: Arc<Shared>,
    id: NodeId,
    mut queue: mpsc::Receiver<Envelope>,
    mut address: watch::Receiver<String>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(
        shared.config.reconnect_backoff_ms_min,
        shared.config.reconnect_backoff_ms_max,
    );
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            next = queue.recv() => match next {
                Some(envelope) => envelope,
                None => return,
            },
        };
        let target = address.borrow_and_update().clone();
        let stream = match shared.connect(&target, id, ConnectionKind::Messages).await {
            Ok(frames) => frames.into_inner(),
            Err(error) => {
                warn!(node = %shared.config.node_id, peer = %id, address = %target, %error, "cannot connect to peer");
                shared.report_unreachable(id);
                if !drop_during_backoff(&shared, id, &mut queue, &mut shutdown, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        debug!(node = %shared.config.node_id, peer = %id, address = %target, "connected to peer");
        backoff.reset();
        let outcome = write_batches(
            &shared,
            id,
            stream,
            first,
            &mut queue,
            &mut address,
            &mut shutdown,
            &mut batch,
        )
        .await;
        match outcome {
            Disconnect::Stop => return,
            Disconnect::AddressChanged => {}
            Disconnect::Failed => {
                if !drop_during_backoff(&shared, id, &mut queue, &mut shutdown, backoff.next_delay()).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps for `delay`, dropping (and reporting) every message that arrives
/// meanwhile. Returns false if the task should end.
async fn drop_during_backoff(
    shared: &Shared,
    id: NodeId,
    queue: &mut mpsc::Receiver<Envelope>,
    shutdown: &mut watch::Receiver<bool>,
    delay: Duration,
) -> bool {
    // Whatever is queued was meant for the failed connection: drop it now
    // rather than deliver it stale.
    let mut dropped = false;
    while queue.try_recv().is_ok() {
        dropped = true;
    }
    if dropped {
        shared.report_unreachable(id);
    }
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = stopped(shutdown) => return false,
            next = queue.recv() => match next {
                Some(_) => shared.report_unreachable(id),
                None => return false,
            },
        }
    }
}

/// Writes batches to one connection until it fails or the task must stop.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn write_batches(
    shared: &Shared,
    id: NodeId,
    stream: BoxStream,
    first: Envelope,
    queue: &mut mpsc::Receiver<Envelope>,
    address: &mut watch::Receiver<String>,
    shutdown: &mut watch::Receiver<bool>,
    batch: &mut BytesMut,
) -> Disconnect {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut next = Some(first);
    let mut probe = [0u8; 1];
    loop {
        batch.clear();
        let mut messages = 0usize;
        if let Some(envelope) = next.take() {
            messages += push_frame(shared, id, batch, &envelope);
        }
        while batch.len() < shared.config.batch_bytes_max {
            match queue.try_recv() {
                Ok(envelope) => messages += push_frame(shared, id, batch, &envelope),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let written = async {
                writer.write_all(batch).await?;
                writer.flush().await
            }
            .await;
            if let Err(error) = written {
                warn!(node = %shared.config.node_id, peer = %id, %error, messages, "write to peer failed; dropping the batch");
                shared.report_unreachable(id);
                return Disconnect::Failed;
            }
        }
        tokio::select! {
            _ = stopped(shutdown) => return Disconnect::Stop,
            received = queue.recv() => match received {
                Some(envelope) => next = Some(envelope),
                None => return Disconnect::Stop,
            },
            changed = address.changed() => {
                if changed.is_err() {
                    return Disconnect::Stop;
                }
                info!(node = %shared.config.node_id, peer = %id, "peer address changed; reconnecting");
                return Disconnect::AddressChanged;
            }
            // The listener never writes after the handshake: any readable
            // event is the connection closing (or a broken peer).
            read = reader.read(&mut probe) => {
                match read {
                    Ok(0) => debug!(node = %shared.config.node_id, peer = %id, "peer closed the connection"),
                    Ok(_) => warn!(node = %shared.config.node_id, peer = %id, "peer sent unexpected bytes; reconnecting"),
                    Err(error) => debug!(node = %shared.config.node_id, peer = %id, %error, "connection to peer failed"),
                }
                return Disconnect::Failed;
            }
        }
    }
}

/// Appends one frame to the batch; a message over the frame limit is
/// dropped and reported. Returns the number of messages added (0 or 1).
fn push_frame(shared: &Shared, id: NodeId, batch: &mut BytesMut, envelope: &Envelope) -> usize {
    let start = batch.len();
    let body_bytes = codec::encode_framed(envelope, batch);
    if body_bytes > shared.config.max_frame_bytes as usize {
        batch.truncate(start);
        warn!(
            node = %shared.config.node_id,
            peer = %id,
            kind = envelope.message.kind_name(),
            body_bytes,
            limit = shared.config.max_frame_bytes,
            "dropping a message larger than max_frame_bytes"
        );
        shared.report_unreachable(id);
        return 0;
    }
    1
}

// ---------------------------------------------------------------- receiving

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let Ok(permit) = shared.inbound_connections.clone().try_acquire_owned() else {
                    warn!(node = %shared.config.node_id, %remote, limit = shared.config.inbound_connections_max, "refusing connection: too many inbound connections");
                    continue;
                };
                tokio::spawn(serve_inbound(shared.clone(), stream, remote, permit));
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin.
                warn!(node = %shared.config.node_id, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one inbound connection to its end; every way it ends is logged.
async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let timeout = shared.handshake_timeout();
    let accepted = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        accepted = tokio::time::timeout(timeout, accept_handshake(&shared, stream)) => accepted,
    };
    let (mut frames, handshake) = match accepted {
        Err(_) => {
            warn!(node = %shared.config.node_id, %remote, "closing connection: no handshake within {timeout:?}");
            return;
        }
        Ok(Err(reason)) => {
            warn!(node = %shared.config.node_id, %remote, "refusing connection: {reason}");
            return;
        }
        Ok(Ok(accepted)) => accepted,
    };
    debug!(node = %shared.config.node_id, %remote, peer = %handshake.from, kind = ?handshake.kind, "accepted connection");
    learn_peer_address(&shared, &handshake);
    let result = match handshake.kind {
        ConnectionKind::Messages => receive_messages(&shared, &mut frames, &handshake, &mut shutdown).await,
        ConnectionKind::Snapshot => snapshot::receive(&shared, &mut frames, &handshake, &mut shutdown).await,
    };
    match result {
        Ok(()) => debug!(node = %shared.config.node_id, %remote, peer = %handshake.from, "connection closed"),
        Err(reason) => {
            warn!(node = %shared.config.node_id, %remote, peer = %handshake.from, "closing connection: {reason}")
        }
    }
}

/// TLS (if configured), then the handshake frame, judged and answered.
/// Returns a refusal reason for the log on any failure.
async fn accept_handshake(
    shared: &Shared,
    tcp: TcpStream,
) -> Result<(FrameReader<BoxStream>, Handshake), String> {
    tcp.set_nodelay(true)
        .map_err(|error| format!("set_nodelay: {error}"))?;
    // With node names required: the identities the dialler's certificate
    // vouches for are checked against its handshake below.
    let mut vouched: Option<Vec<rustls::pki_types::CertificateDer<'static>>> = None;
    let stream: BoxStream = match &shared.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let stream = tls
                .acceptor
                .accept(tcp)
                .await
                .map_err(|error| format!("TLS handshake failed: {error}"))?;
            if tls.require_node_names {
                let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
                vouched = Some(chain.iter().map(|cert| cert.clone().into_owned()).collect());
            }
            Box::new(stream)
        }
    };
    let mut frames = FrameReader::new(stream, HANDSHAKE_BYTES_MAX as u32);
    let body = match frames.next_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return Err("closed before the handshake".into()),
        Err(error) => return Err(format!("bad handshake frame: {error}")),
    };
    let handshake = codec::decode_handshake(body).map_err(|error| format!("bad handshake: {error}"))?;
    let mut status = judge(&shared.config, &handshake);
    if let Some(chain) = &vouched {
        if status == HandshakeStatus::Accepted && !crate::tls::names_node(Some(chain), handshake.from) {
            warn!(node = %shared.config.node_id, peer = %handshake.from, "refusing connection: the certificate does not name {}", TlsConfig::node_name(handshake.from));
            status = HandshakeStatus::WrongNode;
        }
    }
    let mut reply = BytesMut::with_capacity(FRAME_HEADER_BYTES + HANDSHAKE_REPLY_BYTES);
    reply.put_u32(HANDSHAKE_REPLY_BYTES as u32);
    codec::encode_handshake_reply(status, &mut reply);
    let written = async {
        frames.stream_mut().write_all(&reply).await?;
        frames.stream_mut().flush().await
    }
    .await;
    if status != HandshakeStatus::Accepted {
        return Err(format!(
            "{status:?}: handshake from {} for {} in cluster {} (version {}); we are {} in cluster {} (version {PROTOCOL_VERSION})",
            handshake.from,
            handshake.to,
            handshake.cluster_id,
            handshake.version,
            shared.config.node_id,
            shared.config.cluster_id,
        ));
    }
    written.map_err(|error| format!("handshake reply failed: {error}"))?;
    frames.set_max_frame_bytes(shared.config.max_frame_bytes);
    Ok((frames, handshake))
}

/// A peer this node has no address for (it joined, or was told nothing of
/// the dialler) learns the dialler's advertised address, so it can answer.
/// A known address is never replaced: configuration wins over hearsay.
fn learn_peer_address(shared: &Arc<Shared>, handshake: &Handshake) {
    if handshake.kind != ConnectionKind::Messages || handshake.advertised_address.is_empty() {
        return;
    }
    let known = lock(&shared.peers).contains_key(&handshake.from);
    if !known {
        info!(node = %shared.config.node_id, peer = %handshake.from, address = %handshake.advertised_address, "learned a peer's address from its handshake");
        set_peer_address(shared, handshake.from, handshake.advertised_address.clone());
    }
}

/// Whether a handshake may open a connection to this node.
fn judge(config: &NetworkConfig, handshake: &Handshake) -> HandshakeStatus {
    if handshake.version != PROTOCOL_VERSION {
        HandshakeStatus::UnsupportedVersion
    } else if handshake.cluster_id != config.cluster_id {
        HandshakeStatus::WrongCluster
    } else if handshake.to != config.node_id
        || handshake.from == NodeId::ZERO
        || handshake.from == config.node_id
    {
        HandshakeStatus::WrongNode
    } else {
        HandshakeStatus::Accepted
    }
}

/// Reads message frames until the peer closes; any bad frame ends the
/// connection with the reason.
async fn receive_messages(
    shared: &Shared,
    frames: &mut FrameReader<BoxStream>,
    handshake: &Handshake,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let frame = tokio::select! {
            _ = stopped(shutdown) => return Ok(()),
            frame = frames.next_frame() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) => return Err(frame_error_reason(&error)),
        };
        let envelope = codec::decode(frame).map_err(|error| format!("malformed message: {error}"))?;
        check_route(shared, handshake, &envelope)?;
        tokio::select! {
            _ = stopped(shutdown) => return Ok(()),
            sent = shared.inbound.send(Inbound::Message(envelope)) => {
                if sent.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

pub(crate) fn frame_error_reason(error: &FrameError) -> String {
    format!("bad frame: {error}")
}

/// A message must come from the node that did the handshake and be for us.
pub(crate) fn check_route(shared: &Shared, handshake: &Handshake, envelope: &Envelope) -> Result<(), String> {
    if envelope.from != handshake.from || envelope.to != shared.config.node_id {
        return Err(format!(
            "refusing {} message from {} to {} on a connection from {} to {}",
            envelope.message.kind_name(),
            envelope.from,
            envelope.to,
            handshake.from,
            shared.config.node_id,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("localhost:7000"), "localhost");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        // Goal: each delay lies in [step/2, step], and the step doubles to
        // the maximum, then resets.
        let mut backoff = Backoff::new(100, 1_000);
        for step in [100u64, 200, 400, 800, 1_000, 1_000] {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(delay <= step && delay >= step - step / 2, "{delay} vs {step}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
