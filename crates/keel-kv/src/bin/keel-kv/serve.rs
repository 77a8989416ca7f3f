//! `keel-kv serve`: start one node (after checking its flags against its
//! data directory) and run it until a signal, a fatal error or its removal
//! from the cluster, each with its own exit status.

use std::sync::Arc;
use std::time::Duration;

use keel::NodeId;
use keel_kv::api::{ApiLimits, ApiState};
use keel_kv::cluster_identity::{
    format_cluster_id, resolve_cluster_id, ClusterIdFlags, DEFAULT_INITIAL_CLUSTER_TOKEN,
};
use keel_kv::server::{
    check_data_dir, explain_start_error, start_node, HttpServer, NodeOptions, EXIT_STATUS_FATAL,
    EXIT_STATUS_REMOVED,
};
use keel_kv::store::KvStore;
use keel_node::{Halt, NodeHandle};

use crate::logging::init_logging;
use crate::serve_flags::{parse_initial_cluster, ServeArgs};
use crate::Failure;

/// Runs `keel-kv serve` until it stops; the failure carries the exit
/// status (see `SERVE_EXIT_CODES`).
pub(crate) async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let not_started = |message: String| Failure::new(3, format!("error: {message}"));
    init_logging(&args.log).map_err(not_started)?;
    let options = node_options(&args).map_err(not_started)?;
    // Before any port is bound: a second server on a live node's directory,
    // or one started with another cluster's flags, must stop here.
    check_data_dir(&options).map_err(not_started)?;
    let cluster_id =
        resolve_cluster_id(&args.data_dir, &cluster_id_flags(&args, &options)).map_err(not_started)?;
    let (network, receiver) = start_network(&args, cluster_id).await.map_err(not_started)?;
    let transport: Arc<dyn keel_node::Transport> = Arc::new(network.clone());
    let (node, server) = match start_serving(&args, &options, cluster_id, transport, receiver).await {
        Ok(started) => started,
        Err(message) => {
            network.shutdown().await;
            return Err(not_started(message));
        }
    };
    tracing::info!(
        id = args.id,
        cluster_id = %format_cluster_id(cluster_id),
        client_addr = %server.local_addr(),
        peer_addr = %network.local_addr(),
        "keel-kv serving"
    );
    let outcome = run_until_stopped(&node, args.stay_up_when_removed).await;
    server.shutdown(Duration::from_secs(2)).await;
    node.shutdown().await;
    network.shutdown().await;
    tracing::info!("stopped");
    outcome
}

/// The node's options from the flags, checked: the founding list names
/// this node at its own --peer-addr.
fn node_options(args: &ServeArgs) -> Result<NodeOptions, String> {
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
        check_own_entry(founders, args.id, &args.peer_addr)?;
    }
    options.election_timeout = Duration::from_millis(args.election_timeout_ms);
    options.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    options.request_timeout = Duration::from_millis(args.request_timeout_ms);
    options.snapshot_interval_entries = args.snapshot_interval_entries;
    options.node_config()?;
    Ok(options)
}

/// Peers dial this node at its entry in the founding list, and the
/// cluster id is derived from that list as text: an entry that differs from
/// --peer-addr is a node that peers cannot reach, or whose founders do not
/// agree on the list.
fn check_own_entry(founders: &[(u64, String)], id: u64, peer_addr: &str) -> Result<(), String> {
    match founders.iter().find(|(founder, _)| *founder == id) {
        None => Err(format!("--initial-cluster does not list this node ({id})")),
        Some((_, address)) if address != peer_addr => Err(format!(
            "--peer-addr {peer_addr} differs from this node's entry in --initial-cluster ({id}={address}): peers dial the address in the list, and the cluster id is derived from the list as text, so give the same address in both, written the same way"
        )),
        Some(_) => Ok(()),
    }
}

/// What the flags say about the cluster id (see `cluster_identity`).
fn cluster_id_flags(args: &ServeArgs, options: &NodeOptions) -> ClusterIdFlags {
    match (&options.initial_cluster, args.cluster_id) {
        (Some(founders), _) => ClusterIdFlags::Founders {
            founders: founders.clone(),
            token: args
                .initial_cluster_token
                .clone()
                .unwrap_or_else(|| DEFAULT_INITIAL_CLUSTER_TOKEN.to_string()),
        },
        (None, Some(cluster_id)) => ClusterIdFlags::Given(cluster_id),
        (None, None) => ClusterIdFlags::Absent,
    }
}

/// What the peer network delivers, for the node.
type InboundReceiver = tokio::sync::mpsc::Receiver<keel_node::Inbound>;

async fn start_network(
    args: &ServeArgs,
    cluster_id: u64,
) -> Result<(keel_net::Network, InboundReceiver), String> {
    let listen = tokio::net::lookup_host(&args.peer_addr)
        .await
        .map_err(|error| format!("--peer-addr {}: {error}", args.peer_addr))?
        .next()
        .ok_or_else(|| format!("--peer-addr {} resolves to nothing", args.peer_addr))?;
    let mut config = keel_net::NetworkConfig::new(
        cluster_id,
        NodeId::new(args.id),
        listen,
        args.data_dir.join("incoming-snapshots"),
    );
    // One entry carries at most one value: frames must fit the largest.
    let frame_bytes = (args.value_bytes_max as u64)
        .saturating_mul(2)
        .saturating_add(1024 * 1024);
    config.max_frame_bytes = frame_bytes.clamp(16 * 1024 * 1024, u32::MAX as u64) as u32;
    if let (Some(cert_path), Some(key_path), Some(ca_path)) = (
        args.peer_tls_cert.clone(),
        args.peer_tls_key.clone(),
        args.peer_tls_ca.clone(),
    ) {
        config.tls = Some(keel_net::TlsConfig {
            cert_path,
            key_path,
            ca_path,
            require_node_names: args.peer_tls_require_node_names,
        });
    }
    let (sender, receiver) = keel_node::inbound_channel();
    // keel-node implements its `Transport` for keel-net's `Network`, and
    // the network delivers straight into the node's inbound channel.
    let network = keel_net::Network::start(config, sender)
        .await
        .map_err(|error| format!("starting the peer network: {error}"))?;
    Ok((network, receiver))
}

async fn start_serving(
    args: &ServeArgs,
    options: &NodeOptions,
    cluster_id: u64,
    transport: Arc<dyn keel_node::Transport>,
    receiver: InboundReceiver,
) -> Result<(NodeHandle<KvStore>, HttpServer), String> {
    let node = start_node(options, transport, receiver)
        .await
        .map_err(|error| format!("starting the node: {}", explain_start_error(&error)))?;
    let listener = match tokio::net::TcpListener::bind(&args.client_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            node.shutdown().await;
            return Err(format!(
                "listening on --client-addr {}: {error}",
                args.client_addr
            ));
        }
    };
    let limits = ApiLimits {
        value_bytes_max: args.value_bytes_max,
        requests_in_flight_max: args.requests_in_flight_max,
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        ready_apply_lag_entries_max: args.ready_apply_lag_entries_max,
        ..ApiLimits::default()
    };
    let state = ApiState::new(node.clone(), limits).with_cluster_id(cluster_id);
    match HttpServer::start(listener, state) {
        Ok(server) => Ok((node, server)),
        Err(error) => {
            node.shutdown().await;
            Err(error.to_string())
        }
    }
}

/// Waits for a signal, or for the node to stop serving: after a fatal
/// error the process exits (status 4) so that a supervisor restarts it,
/// rather than staying up as a node that answers every request with an
/// error; a removed node exits (status 5) unless told to stay up.
async fn run_until_stopped(node: &NodeHandle<KvStore>, stay_up_when_removed: bool) -> Result<(), Failure> {
    let halt = tokio::select! {
        signal = wait_for_signal() => {
            tracing::info!(signal, "stopping");
            return Ok(());
        }
        halt = node.halted() => halt,
    };
    match halt {
        Halt::Fatal(reason) => {
            tracing::error!(%reason, status = EXIT_STATUS_FATAL, "the node stopped after a fatal error; exiting so that it is restarted (fix the cause first: it recovers from its data directory)");
            Err(Failure::new(
                EXIT_STATUS_FATAL,
                format!("error: the node stopped after a fatal error: {reason}"),
            ))
        }
        Halt::Removed(removal) if stay_up_when_removed => {
            tracing::warn!(%removal, "this node was removed from the cluster; it keeps serving its view (--stay-up-when-removed)");
            let signal = wait_for_signal().await;
            tracing::info!(signal, "stopping");
            Ok(())
        }
        Halt::Removed(removal) => {
            tracing::error!(%removal, status = EXIT_STATUS_REMOVED, "this node was removed from the cluster; exiting. Do not restart it on this data directory: to bring the machine back, give it an empty --data-dir, start it with --join --cluster-id <id> and add it with `keel-kv members add`");
            Err(Failure::new(
                EXIT_STATUS_REMOVED,
                format!("error: this node was removed from the cluster ({removal})"),
            ))
        }
        Halt::ShutDown => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_founding_list_must_name_this_node_at_its_peer_address() {
        let founders = parse_initial_cluster("1=10.0.0.1:7001, 2=10.0.0.2:7001").unwrap();
        assert_eq!(check_own_entry(&founders, 2, "10.0.0.2:7001"), Ok(()));
        let moved = check_own_entry(&founders, 2, "10.0.0.9:7001").unwrap_err();
        assert!(moved.contains("2=10.0.0.2:7001"), "{moved}");
        let spelled = check_own_entry(&founders, 1, "localhost:7001").unwrap_err();
        assert!(spelled.contains("written the same way"), "{spelled}");
        assert!(check_own_entry(&founders, 3, "10.0.0.3:7001").is_err());
    }
}
