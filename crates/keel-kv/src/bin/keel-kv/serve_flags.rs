//! `keel-kv serve`'s flags and exit codes.

use std::path::PathBuf;

use clap::Args;
use keel_kv::cluster_identity::parse_cluster_id;

use crate::logging::LogArgs;

/// The exit codes of `keel-kv serve`, for its `--help`.
pub(crate) const SERVE_EXIT_CODES: &str = "\
Exit codes:
  0  stopped by SIGINT or SIGTERM
  2  bad command line
  3  could not start: the flags, the data directory or a port (printed)
  4  the node stopped after a fatal error (a failed disk write, a full disk):
     fix the cause and restart it; it recovers from its data directory
  5  the node was removed from the cluster: do not restart it on this data
     directory (it would exit again); see --stay-up-when-removed";

#[derive(Args)]
#[command(after_help = SERVE_EXIT_CODES)]
pub(crate) struct ServeArgs {
    /// This node's id (at least 1).
    #[arg(long)]
    pub(crate) id: u64,
    /// Where the node keeps its log, hard state and snapshots.
    #[arg(long)]
    pub(crate) data_dir: PathBuf,
    /// The address peers reach this node at (host:port); it listens there.
    #[arg(long)]
    pub(crate) peer_addr: String,
    /// The address of the HTTP API (host:port).
    #[arg(long)]
    pub(crate) client_addr: String,
    /// Found a new cluster: `1=host:port,2=host:port,…` (peer addresses),
    /// the same text on every founder; this node's entry must be its
    /// --peer-addr. The cluster id is derived from the list and
    /// --initial-cluster-token on the first start and stored in the data
    /// directory; a restart may omit the list, and is refused if it gives
    /// another one.
    #[arg(long)]
    pub(crate) initial_cluster: Option<String>,
    /// Tells this cluster apart from others founded with the same list (as
    /// etcd's --initial-cluster-token): give each new cluster its own.
    /// [default: keel-cluster]
    #[arg(long, requires = "initial_cluster")]
    pub(crate) initial_cluster_token: Option<String>,
    /// Start with no members and wait to be added (with `keel-kv members
    /// add` on a member). The first start needs --cluster-id.
    #[arg(long, conflicts_with = "initial_cluster")]
    pub(crate) join: bool,
    /// The id of the cluster to join (16 hex digits: `cluster_id` in any
    /// member's GET /v1/cluster). Peers refuse connections that carry
    /// another cluster's id. Needed on a --join node's first start; on a
    /// restart it must match the stored id.
    #[arg(long, value_parser = parse_cluster_id, conflicts_with = "initial_cluster")]
    pub(crate) cluster_id: Option<u64>,
    /// Keep serving after learning that this node was removed from the
    /// cluster (it answers GET /v1/cluster with "removed": true, and
    /// `not_member` to requests that need the cluster) instead of exiting
    /// with status 5.
    #[arg(long)]
    pub(crate) stay_up_when_removed: bool,
    /// Election timeout in milliseconds (a follower campaigns after one
    /// to two of these without a leader).
    #[arg(long, default_value_t = 1000)]
    pub(crate) election_timeout_ms: u64,
    /// Leader heartbeat interval in milliseconds, also the node's tick.
    /// Give every member the same heartbeat and election timeout: lease
    /// reads count time in ticks.
    #[arg(long, default_value_t = 100)]
    pub(crate) heartbeat_ms: u64,
    /// How long a request may wait before it fails with `timeout`.
    #[arg(long, default_value_t = 5000)]
    pub(crate) request_timeout_ms: u64,
    /// The largest value accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) value_bytes_max: usize,
    /// The most HTTP requests handled at once, counted once their body is
    /// read (more wait).
    #[arg(long, default_value_t = 256)]
    pub(crate) requests_in_flight_max: usize,
    /// How long a request body may take to arrive (else 408 body_timeout).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) body_read_timeout_ms: u64,
    /// /readyz says not ready while applied lags commit by more entries.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) ready_apply_lag_entries_max: u64,
    /// Take a snapshot (and compact the log) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) snapshot_interval_entries: u64,
    /// Peer traffic over mutual TLS: this node's certificate chain (PEM,
    /// leaf first), which must name the host of --peer-addr. Needs
    /// --peer-tls-key and --peer-tls-ca; every member must use TLS.
    #[arg(long, requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub(crate) peer_tls_cert: Option<PathBuf>,
    /// This node's private key for peer TLS (PEM).
    #[arg(long, requires = "peer_tls_cert")]
    pub(crate) peer_tls_key: Option<PathBuf>,
    /// The CA certificates peers' certificates must chain to (PEM).
    #[arg(long, requires = "peer_tls_cert")]
    pub(crate) peer_tls_ca: Option<PathBuf>,
    /// Also require every member's certificate to name its node id, as the
    /// DNS name `keel-node-<id>`, so that no member can pose as another.
    #[arg(long, requires = "peer_tls_cert")]
    pub(crate) peer_tls_require_node_names: bool,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Parses `--initial-cluster`: `id=host:port` entries, comma-separated,
/// each id once.
pub(crate) fn parse_initial_cluster(text: &str) -> Result<Vec<(u64, String)>, String> {
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
