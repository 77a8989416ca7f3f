//! Running a keel-kv node: start the keel node over a transport, serve the
//! HTTP API, and keep the member's client address in the replicated
//! address book.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use keel::NodeId;
use keel_node::{
    AddressBook, Bootstrap, Inbound, MemberChange, MemberInfo, Node, NodeConfig, NodeHandle, StartError,
    Transport,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::api::{router, ApiState, MemberMetadata};
use crate::parse_errors::JsonParseErrors;
use crate::store::KvStore;

/// The exit status of `keel-kv serve` when its node stopped after a fatal
/// error (a failed disk write, a full disk, a panic in the state machine):
/// the process exits so that a supervisor restarts it, and the restarted
/// node recovers from its data directory once the cause is fixed.
///
/// ```
/// assert_eq!(keel_kv::server::EXIT_STATUS_FATAL, 4);
/// ```
pub const EXIT_STATUS_FATAL: u8 = 4;

/// The exit status of `keel-kv serve` when its node learned that it was
/// removed from the cluster: a supervisor should not restart it (on the
/// same data directory it would exit again at once).
///
/// ```
/// assert_eq!(keel_kv::server::EXIT_STATUS_REMOVED, 5);
/// ```
pub const EXIT_STATUS_REMOVED: u8 = 5;

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's id (≥ 1).
    pub id: u64,
    /// Where its log, hard state and snapshots live.
    pub data_dir: PathBuf,
    /// The address peers reach it at.
    pub peer_addr: String,
    /// The address clients reach it at, as recorded for the other members.
    pub client_addr: String,
    /// The founding members (`id`, peer address), or `None` to join.
    pub initial_cluster: Option<Vec<(u64, String)>>,
    /// The election timeout: a follower that hears no leader for between
    /// one and two of these campaigns. Longer means fewer spurious
    /// elections on a loaded machine, slower fail-over.
    pub election_timeout: Duration,
    /// How often the leader sends heartbeats; also the tick of the node.
    pub heartbeat_interval: Duration,
    /// How long a request may wait before it fails with `timeout`.
    pub request_timeout: Duration,
    /// Take a snapshot after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// The most bytes of entries the leader holds uncommitted; proposals
    /// past it are refused (`overloaded`) until replication catches up.
    /// Bounds the leader's memory when followers fall behind.
    pub max_uncommitted_bytes: u64,
}

impl NodeOptions {
    /// The defaults of `keel-kv serve` for node `id`.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>, peer_addr: String, client_addr: String) -> Self {
        NodeOptions {
            id,
            data_dir: data_dir.into(),
            peer_addr,
            client_addr,
            initial_cluster: None,
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            snapshot_interval_entries: 10_000,
            max_uncommitted_bytes: 64 * 1024 * 1024,
        }
    }

    /// The keel-node configuration these options give.
    ///
    /// # Errors
    /// A message when the timings are inconsistent.
    pub fn node_config(&self) -> Result<NodeConfig, String> {
        if self.id == 0 {
            return Err("--id must be at least 1".to_string());
        }
        let heartbeat_ms = self.heartbeat_interval.as_millis() as u64;
        let election_ms = self.election_timeout.as_millis() as u64;
        if heartbeat_ms == 0 || election_ms < 2 * heartbeat_ms {
            return Err(format!(
                "the election timeout ({election_ms} ms) must be at least twice the heartbeat ({heartbeat_ms} ms)"
            ));
        }
        let mut config = NodeConfig::new(NodeId::new(self.id), &self.data_dir);
        config.tick_interval = self.heartbeat_interval;
        config.raft.heartbeat_interval_ticks = 1;
        config.raft.election_timeout_ticks_min = election_ms / heartbeat_ms;
        config.raft.election_timeout_ticks_max = 2 * (election_ms / heartbeat_ms);
        // A restarted node must not replay the same election timeouts as
        // the run before, or as its peers.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos() as u64);
        config.raft.rng_seed = self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos;
        config.request_timeout = self.request_timeout;
        config.raft.max_uncommitted_bytes = self.max_uncommitted_bytes;
        config.snapshot_interval_entries = self.snapshot_interval_entries.max(1);
        config.snapshot_keep_entries = (self.snapshot_interval_entries / 10).max(1);
        Ok(config)
    }

    fn bootstrap(&self) -> Bootstrap {
        match &self.initial_cluster {
            None => Bootstrap::Join,
            Some(founders) => Bootstrap::Founders(
                founders
                    .iter()
                    .map(|(id, peer_addr)| {
                        // Every founder must start with the same book, and
                        // none knows the others' client addresses: each
                        // records its own once a leader is elected (see
                        // `register_client_address`).
                        let info = MemberInfo {
                            peer_address: peer_addr.clone(),
                            metadata: bytes::Bytes::new(),
                        };
                        (NodeId::new(*id), info)
                    })
                    .collect::<AddressBook>(),
            ),
        }
    }
}

/// Checks, before anything else starts, that `options.data_dir` can be
/// this node's: no other process serves from it, and it was not made for
/// another node id. Nothing is held afterwards ([`start_node`] takes the
/// lock for good); the point is to fail before binding any port, with a
/// message that says what to do.
///
/// ```
/// use keel_kv::server::{check_data_dir, NodeOptions};
/// let directory = tempfile::tempdir().unwrap();
/// let options = |id| NodeOptions::new(id, directory.path(), "a:1".into(), "a:2".into());
/// check_data_dir(&options(1)).unwrap();
/// let refused = check_data_dir(&options(9)).unwrap_err();
/// assert!(refused.contains("--id 1"), "{refused}");
/// ```
///
/// # Errors
/// What is wrong and what to do, in terms of `keel-kv serve`'s flags.
pub fn check_data_dir(options: &NodeOptions) -> Result<(), String> {
    keel_node::check_data_directory(&options.data_dir, NodeId::new(options.id))
        .map_err(|error| explain_start_error(&error))
}

/// A start error in terms of `keel-kv serve`'s flags.
///
/// ```
/// use keel::NodeId;
/// use keel_node::StartError;
/// let error = StartError::WrongNode {
///     path: "/data/n1".into(),
///     stored: NodeId::new(1),
///     configured: NodeId::new(9),
/// };
/// let message = keel_kv::server::explain_start_error(&error);
/// assert!(message.contains("--id 1") && message.contains("--data-dir"), "{message}");
/// ```
pub fn explain_start_error(error: &StartError) -> String {
    match error {
        StartError::DataDirectoryInUse {
            path,
            holder_process_id,
        } => {
            let holder = holder_process_id.map_or_else(|| "another process".to_string(), |id| format!("process {id}"));
            format!(
                "--data-dir {} is in use: {holder} is running a node on it. Only one node may use a data directory: stop the other one first, or give this node its own --data-dir",
                path.display()
            )
        }
        StartError::WrongNode {
            path,
            stored,
            configured,
        } => format!(
            "--data-dir {} belongs to node {}, not node {}: to restart node {} run `keel-kv serve --id {}` on it; to start node {}, give it an empty --data-dir of its own",
            path.display(),
            stored.get(),
            configured.get(),
            stored.get(),
            stored.get(),
            configured.get()
        ),
        other => other.to_string(),
    }
}

/// Starts the keel node of `options` over `transport`.
///
/// # Errors
/// [`StartError`] when the data directory is unusable or the options are
/// inconsistent.
pub async fn start_node(
    options: &NodeOptions,
    transport: Arc<dyn Transport>,
    inbound: mpsc::Receiver<Inbound>,
) -> Result<NodeHandle<KvStore>, StartError> {
    let config = options.node_config().map_err(StartError::Config)?;
    let node = Node::start(config, KvStore::new(), options.bootstrap(), transport, inbound).await?;
    tokio::spawn(register_client_address(
        node.clone(),
        NodeId::new(options.id),
        options.peer_addr.clone(),
        options.client_addr.clone(),
    ));
    Ok(node)
}

/// Makes sure the replicated address book records this node's client
/// address: founders start knowing only their own, and a node may restart
/// with a new one. Re-adding a member with its current role is a
/// membership change that changes no vote, only the recorded addresses.
async fn register_client_address(
    node: NodeHandle<KvStore>,
    id: NodeId,
    peer_addr: String,
    client_addr: String,
) {
    let wanted = MemberMetadata {
        client_addr: client_addr.clone(),
    };
    let pause = Duration::from_millis(200 + 97 * (id.get() % 7));
    loop {
        tokio::time::sleep(pause).await;
        let status = match node.status().await {
            Ok(status) => status,
            Err(keel_node::NodeError::ShuttingDown) => return,
            Err(_) => continue,
        };
        if status.fatal.is_some() {
            return;
        }
        let Some(info) = status.members.get(&id) else {
            continue; // not a member yet (joining)
        };
        if MemberMetadata::decode(&info.metadata).as_ref() == Some(&wanted) && info.peer_address == peer_addr
        {
            return;
        }
        if status.raft.leader.is_none() {
            continue;
        }
        let info = MemberInfo {
            peer_address: peer_addr.clone(),
            metadata: wanted.encode(),
        };
        let change = if status.raft.conf_state.voters().contains(&id) {
            MemberChange::AddVoter(id, info)
        } else if status.raft.conf_state.learners().contains(&id) {
            MemberChange::AddLearner(id, Some(info))
        } else {
            continue; // in a joint configuration: wait until it is left
        };
        match node.change_membership(vec![change]).await {
            Ok(()) => tracing::info!(node = %id, client_addr, "recorded this node's client address"),
            Err(keel_node::NodeError::ShuttingDown) => return,
            Err(error) => tracing::debug!(node = %id, %error, "recording the client address; will retry"),
        }
    }
}

/// Limits of the HTTP server's connections.
const CONNECTIONS_MAX: usize = 4096;
const CONNECTION_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// A running HTTP server; dropping it stops it.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Serves the API of `state` (a node, its limits) on `listener`.
    ///
    /// ```no_run
    /// # async fn run(node: keel_node::NodeHandle<keel_kv::store::KvStore>) -> std::io::Result<()> {
    /// use keel_kv::api::{ApiLimits, ApiState};
    /// use keel_kv::server::HttpServer;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = HttpServer::start(listener, ApiState::new(node, ApiLimits::default()))?;
    /// println!("serving on {}", server.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(listener: TcpListener, state: ApiState) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let header_read_timeout = state.limits().header_read_timeout;
        let app = router(state);
        let task = tokio::spawn(accept_loop(listener, app, header_read_timeout, stopped));
        Ok(HttpServer {
            local_addr,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish for up to
    /// `grace`, then closes every connection.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stopped.changed() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(%error, "accepting a client connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stopped.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(CONNECTION_BUFFER_BYTES_MAX);
            let stream = TokioIo::new(JsonParseErrors::new(stream));
            let connection = builder.serve_connection(stream, service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    while connections.join_next().await.is_some() {}
}
