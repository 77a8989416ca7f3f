//! `keel-kv serve`: its flags and running one node until a signal.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use keel::NodeId;
use keel_kv::api::ApiLimits;
use keel_kv::server::{check_data_dir, explain_start_error, start_node, HttpServer, NodeOptions};

use crate::logging::{init_logging, LogArgs};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// This node's id (at least 1).
    #[arg(long)]
    id: u64,
    /// Where the node keeps its log, hard state and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// The address peers reach this node at (host:port); it listens there.
    #[arg(long)]
    peer_addr: String,
    /// The address of the HTTP API (host:port).
    #[arg(long)]
    client_addr: String,
    /// Bootstrap a new cluster: `1=host:port,2=host:port,…` (peer
    /// addresses), the same on every founder; ignored on restart.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Start with no members and wait to be added.
    #[arg(long, conflicts_with = "initial_cluster")]
    join: bool,
    /// Election timeout in milliseconds (a follower campaigns after one
    /// to two of these without a leader).
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Leader heartbeat interval in milliseconds, also the node's tick.
    /// Give every member the same heartbeat and election timeout: lease
    /// reads count time in ticks.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// How long a request may wait before it fails with `timeout`.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// The largest value accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    value_bytes_max: usize,
    /// The most HTTP requests handled at once, counted once their body is
    /// read (more wait).
    #[arg(long, default_value_t = 256)]
    requests_in_flight_max: usize,
    /// How long a request body may take to arrive (else 408 body_timeout).
    #[arg(long, default_value_t = 10_000)]
    body_read_timeout_ms: u64,
    /// /readyz says not ready while applied lags commit by more entries.
    #[arg(long, default_value_t = 1_000)]
    ready_apply_lag_entries_max: u64,
    /// Take a snapshot (and compact the log) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval_entries: u64,
    /// Must be the same on every member; connections from another cluster
    /// are refused.
    #[arg(long, default_value_t = 0x6b65_656c)]
    cluster_id: u64,
    /// Peer traffic over mutual TLS: this node's certificate chain (PEM,
    /// leaf first), which must name the host of --peer-addr. Needs
    /// --peer-tls-key and --peer-tls-ca; every member must use TLS.
    #[arg(long, requires_all = ["peer_tls_key", "peer_tls_ca"])]
    peer_tls_cert: Option<PathBuf>,
    /// This node's private key for peer TLS (PEM).
    #[arg(long, requires = "peer_tls_cert")]
    peer_tls_key: Option<PathBuf>,
    /// The CA certificates peers' certificates must chain to (PEM).
    #[arg(long, requires = "peer_tls_cert")]
    peer_tls_ca: Option<PathBuf>,
    /// Also require every member's certificate to name its node id, as the
    /// DNS name `keel-node-<id>`, so that no member can pose as another.
    #[arg(long, requires = "peer_tls_cert")]
    peer_tls_require_node_names: bool,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_initial_cluster(text: &str) -> Result<Vec<(u64, String)>, String> {
    let mut members = Vec::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (id, address) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {part:?} is not id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--initial-cluster id {id:?} is not a number"))?;
        if id == 0 || members.iter().any(|(other, _)| *other == id) {
            return Err(format!("--initial-cluster id {id} is zero or repeated"));
        }
        members.push((id, address.trim().to_string()));
    }
    if members.is_empty() {
        return Err("--initial-cluster is empty".to_string());
    }
    Ok(members)
}

pub(crate) async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args.log)?;
    let mut options = NodeOptions::new(
        args.id,
        &args.data_dir,
        args.peer_addr.clone(),
        args.client_addr.clone(),
    );
    options.initial_cluster = args
        .initial_cluster
        .as_deref()
        .map(parse_initial_cluster)
        .transpose()?;
    if let Some(founders) = &options.initial_cluster {
        if !founders.iter().any(|(id, _)| *id == args.id) {
            return Err(format!("--initial-cluster does not list this node ({})", args.id));
        }
    } else if !args.join {
        tracing::info!("no --initial-cluster: recovering from the data directory or waiting to be added");
    }
    options.election_timeout = Duration::from_millis(args.election_timeout_ms);
    options.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    options.request_timeout = Duration::from_millis(args.request_timeout_ms);
    options.snapshot_interval_entries = args.snapshot_interval_entries;
    options.node_config()?;
    // Before any port is bound: a second server on a live node's directory
    // must stop here, saying so.
    check_data_dir(&options)?;
    let listen = tokio::net::lookup_host(&args.peer_addr)
        .await
        .map_err(|error| format!("--peer-addr {}: {error}", args.peer_addr))?
        .next()
        .ok_or_else(|| format!("--peer-addr {} resolves to nothing", args.peer_addr))?;
    let mut network = keel_net::NetworkConfig::new(
        args.cluster_id,
        NodeId::new(args.id),
        listen,
        args.data_dir.join("incoming-snapshots"),
    );
    // One entry carries at most one value: frames must fit the largest.
    let frame_bytes = (args.value_bytes_max as u64)
        .saturating_mul(2)
        .saturating_add(1024 * 1024);
    network.max_frame_bytes = frame_bytes.clamp(16 * 1024 * 1024, u32::MAX as u64) as u32;
    if let (Some(cert_path), Some(key_path), Some(ca_path)) = (
        args.peer_tls_cert.clone(),
        args.peer_tls_key.clone(),
        args.peer_tls_ca.clone(),
    ) {
        network.tls = Some(keel_net::TlsConfig {
            cert_path,
            key_path,
            ca_path,
            require_node_names: args.peer_tls_require_node_names,
        });
    }
    let (sender, receiver) = keel_node::inbound_channel();
    // keel-node implements its `Transport` for keel-net's `Network`, and
    // the network delivers straight into the node's inbound channel.
    let network = keel_net::Network::start(network, sender)
        .await
        .map_err(|error| format!("starting the peer network: {error}"))?;
    let transport: std::sync::Arc<dyn keel_node::Transport> = std::sync::Arc::new(network.clone());
    let node = start_node(&options, transport, receiver)
        .await
        .map_err(|error| format!("starting the node: {}", explain_start_error(&error)))?;
    let listener = tokio::net::TcpListener::bind(&args.client_addr)
        .await
        .map_err(|error| format!("listening on --client-addr {}: {error}", args.client_addr))?;
    let limits = ApiLimits {
        value_bytes_max: args.value_bytes_max,
        requests_in_flight_max: args.requests_in_flight_max,
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        ready_apply_lag_entries_max: args.ready_apply_lag_entries_max,
        ..ApiLimits::default()
    };
    let server = HttpServer::start(listener, node.clone(), limits).map_err(|error| error.to_string())?;
    tracing::info!(
        id = args.id,
        client_addr = %server.local_addr(),
        peer_addr = %network.local_addr(),
        "keel-kv serving"
    );
    let signal = wait_for_signal().await;
    tracing::info!(signal, "stopping");
    server.shutdown(Duration::from_secs(2)).await;
    node.shutdown().await;
    network.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = terminate.recv() => "terminate",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupt"
        }
    }
}
