//! `keel-kv`: the replicated key-value server built on keel, its client
//! and its tools. See `keel-kv --help`.

#![warn(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::Method;
use keel::NodeId;
use keel_kv::api::{ApiLimits, ClusterView};
use keel_kv::bench::{self, BenchOptions};
use keel_kv::client::{encode_key, ClientError, HttpResponse, KvClient};
use keel_kv::cluster::{self, ClusterOptions};
use keel_kv::server::{check_data_dir, explain_start_error, start_node, HttpServer, NodeOptions};
use serde_json::json;

const EXIT_CODES: &str = "\
Exit codes of the client commands:
  0  done
  1  a negative answer: key not found, compare-and-set did not match
  2  bad command line
  3  the server answered with an error (printed)
  4  no endpoint could be reached";

/// keel-kv: a replicated key-value store on keel (Raft).
#[derive(Parser)]
#[command(name = "keel-kv", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one node of a cluster.
    Serve(ServeArgs),
    /// Run a local cluster of N nodes on loopback (Ctrl-C stops it).
    Cluster(ClusterArgs),
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value; `-` reads it from standard input.
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ReadConsistency,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Compare-and-set: set KEY to --value (or delete it with --delete) if
    /// it holds --expected (or, without --expected, if it is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold; omit to require it to be absent.
        #[arg(long)]
        expected: Option<String>,
        /// The new value.
        #[arg(long, required_unless_present = "delete", conflicts_with = "delete")]
        value: Option<String>,
        /// Delete the key instead of setting it.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show the cluster: members, roles, leader, indexes.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Add or remove members.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Hand leadership to a voter.
    TransferLeader {
        /// The new leader's id.
        id: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Load-test a cluster (closed loop) and print throughput and latency.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Add a member (start it first with `serve --join`).
    Add {
        /// Its id.
        id: u64,
        /// Its peer address.
        #[arg(long)]
        peer_addr: String,
        /// Its client address.
        #[arg(long)]
        client_addr: String,
        /// Add it as a learner (receives the log, does not vote).
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a member.
    Remove {
        /// Its id.
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// The nodes to talk to (host:port, comma-separated); the first that
    /// accepts a connection answers.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
    )]
    endpoints: Vec<String>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadConsistency {
    /// Confirmed by a heartbeat round to a quorum (ReadIndex).
    Linearizable,
    /// Served by the leader within its lease, without a round trip;
    /// linearizable if the nodes' clocks are monotonic and their rates
    /// differ by at most 10%.
    Lease,
    /// This node's applied state, no round trip: may be stale.
    Stale,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Args)]
struct ServeArgs {
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

#[derive(Args, Clone)]
struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Args)]
struct ClusterArgs {
    /// How many nodes (for a new cluster).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the cluster's data and logs go.
    #[arg(long, default_value = "./keel-data")]
    data_dir: PathBuf,
    /// The first client port to try; peers use ports 1000 below.
    #[arg(long, default_value_t = 8001)]
    client_port_base: u16,
    /// The nodes' log format.
    #[arg(long, value_enum, default_value = "pretty")]
    log_format: LogFormat,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run: `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// The size of written values.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// The share of reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// How many distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Read consistency.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: ReadConsistency,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn consistency_name(consistency: ReadConsistency) -> &'static str {
    match consistency {
        ReadConsistency::Linearizable => "linearizable",
        ReadConsistency::Lease => "lease",
        ReadConsistency::Stale => "stale",
    }
}

fn log_format_name(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    }
}

fn init_logging(args: &LogArgs) -> Result<(), String> {
    let level: tracing_subscriber::filter::LevelFilter = args
        .log_level
        .parse()
        .map_err(|_| format!("bad --log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|error| format!("cannot set up logging: {error}"))
}

/// Why a command failed, and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = if matches!(error, ClientError::Connect { .. }) {
            4
        } else {
            3
        };
        Failure::new(code, error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("{}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

async fn run(command: Commands) -> Result<(), Failure> {
    match command {
        Commands::Serve(args) => serve(args)
            .await
            .map_err(|message| Failure::new(3, format!("error: {message}"))),
        Commands::Cluster(args) => {
            let options = ClusterOptions {
                nodes: args.nodes,
                data_dir: args.data_dir,
                client_port_base: args.client_port_base,
                log_format: log_format_name(args.log_format).to_string(),
            };
            cluster::run(&options)
                .await
                .map_err(|message| Failure::new(3, format!("error: {message}")))
        }
        Commands::Bench(args) => run_bench(args).await,
        other => client_command(other).await,
    }
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

async fn serve(args: ServeArgs) -> Result<(), String> {
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

async fn run_bench(args: BenchArgs) -> Result<(), Failure> {
    let options = BenchOptions {
        endpoints: args.target.endpoints.clone(),
        clients: args.clients,
        duration: args.duration,
        value_bytes: args.value_bytes,
        read_ratio: args.read_ratio,
        keys: args.keys,
        consistency: consistency_name(args.consistency).to_string(),
        progress: true,
    };
    println!(
        "bench: {} clients, {:?}, {}-byte values, read ratio {}, {} keys, endpoints {}",
        options.clients,
        options.duration,
        options.value_bytes,
        options.read_ratio,
        options.keys,
        options.endpoints.join(",")
    );
    let report = bench::run(&options)
        .await
        .map_err(|message| Failure::new(2, message))?;
    print!("{}", report.table());
    if report.ok == 0 {
        return Err(Failure::new(3, "error: no request succeeded"));
    }
    Ok(())
}

fn client_for(target: &Target) -> KvClient {
    KvClient::new(&target.endpoints, Duration::from_millis(target.timeout_ms))
}

/// Turns an error answer into a failure with exit code 3.
fn server_error(response: &HttpResponse) -> Failure {
    match response.json() {
        Some(body) if body.get("error").is_some() => {
            let leader = body["leader"]
                .as_u64()
                .map_or_else(String::new, |leader| format!(" (leader: node {leader})"));
            Failure::new(
                3,
                format!(
                    "error: {}: {}{leader}",
                    body["error"].as_str().unwrap_or("?"),
                    body["message"].as_str().unwrap_or("")
                ),
            )
        }
        _ => Failure::new(3, format!("error: HTTP {}: {}", response.status, response.text())),
    }
}

async fn client_command(command: Commands) -> Result<(), Failure> {
    match command {
        Commands::Put { key, value, target } => {
            let value = if value == "-" {
                let mut buffer = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
                    .map_err(|error| Failure::new(2, format!("error: reading standard input: {error}")))?;
                Bytes::from(buffer)
            } else {
                Bytes::from(value)
            };
            let response = client_for(&target)
                .request(Method::PUT, &format!("/v1/kv/{}", encode_key(&key)), value)
                .await?;
            match response.status {
                200 => {
                    let index = response
                        .json()
                        .and_then(|body| body["index"].as_u64())
                        .unwrap_or(0);
                    println!("OK (index {index})");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Get {
            key,
            consistency,
            target,
        } => {
            let path = format!(
                "/v1/kv/{}?consistency={}",
                encode_key(&key),
                consistency_name(consistency)
            );
            let response = client_for(&target)
                .request(Method::GET, &path, Bytes::new())
                .await?;
            match response.status {
                200 => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(&response.body);
                    if !response.body.ends_with(b"\n") {
                        let _ = stdout.write_all(b"\n");
                    }
                    Ok(())
                }
                404 if response.error_code().as_deref() == Some("not_found") => {
                    Err(Failure::new(1, format!("not found: {key}")))
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Delete { key, target } => {
            let path = format!("/v1/kv/{}", encode_key(&key));
            let response = client_for(&target)
                .request(Method::DELETE, &path, Bytes::new())
                .await?;
            match (response.status, response.json()) {
                (200, Some(body)) => {
                    let index = body["index"].as_u64().unwrap_or(0);
                    if body["deleted"] == true {
                        println!("deleted (index {index})");
                    } else {
                        println!("not present (index {index})");
                    }
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Cas {
            key,
            expected,
            value,
            delete,
            target,
        } => {
            let value = if delete { None } else { value };
            let body = json!({ "expected": expected, "value": value }).to_string();
            let path = format!("/v1/kv/{}/cas", encode_key(&key));
            let response = client_for(&target)
                .request(Method::POST, &path, Bytes::from(body))
                .await?;
            match (response.status, response.json()) {
                (200, Some(body)) => {
                    println!("OK (index {})", body["index"].as_u64().unwrap_or(0));
                    Ok(())
                }
                (409, Some(body)) if body.get("ok").is_some() => {
                    let current = match body["current"].as_str() {
                        Some(current) => format!("{current:?}"),
                        None => "absent".to_string(),
                    };
                    Err(Failure::new(
                        1,
                        format!("no match: the current value is {current}"),
                    ))
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Status { target } => status(&target).await,
        Commands::Members { command } => members(command).await,
        Commands::TransferLeader { id, target } => {
            let body = json!({ "id": id }).to_string();
            let response = client_for(&target)
                .request(Method::POST, "/v1/cluster/leader", Bytes::from(body))
                .await?;
            match response.status {
                200 => {
                    println!("node {id} now leads");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Serve(_) | Commands::Cluster(_) | Commands::Bench(_) => Ok(()),
    }
}

async fn members(command: MembersCommand) -> Result<(), Failure> {
    match command {
        MembersCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
            target,
        } => {
            let role = if learner { "learner" } else { "voter" };
            let body = json!({ "id": id, "peer_addr": peer_addr, "client_addr": client_addr, "role": role });
            let response = client_for(&target)
                .request(Method::POST, "/v1/cluster/members", Bytes::from(body.to_string()))
                .await?;
            match response.status {
                200 => {
                    println!("node {id} added as a {role}");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        MembersCommand::Remove { id, target } => {
            let response = client_for(&target)
                .request(Method::DELETE, &format!("/v1/cluster/members/{id}"), Bytes::new())
                .await?;
            match response.status {
                200 => {
                    println!("node {id} removed");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
    }
}

/// Prints one line per member, asking each member for its own view.
async fn status(target: &Target) -> Result<(), Failure> {
    let client = client_for(target);
    let response = client.request(Method::GET, "/v1/cluster", Bytes::new()).await?;
    if response.status != 200 {
        return Err(server_error(&response));
    }
    let view: ClusterView = serde_json::from_slice(&response.body)
        .map_err(|error| Failure::new(3, format!("error: unreadable cluster view: {error}")))?;
    let leader = view
        .leader
        .map_or_else(|| "none known".to_string(), |leader| format!("node {leader}"));
    println!(
        "leader: {leader}   term: {}   commit index: {}",
        view.term, view.commit_index
    );
    println!(
        "{:<4} {:<8} {:<14} {:<22} {:<22} {:>8} {:>8}",
        "id", "member", "role", "client", "peer", "term", "applied"
    );
    for member in &view.members {
        let client_addr = member.client_addr.clone().unwrap_or_else(|| "?".to_string());
        let own = match &member.client_addr {
            Some(address) => client
                .request_to(address, Method::GET, "/v1/cluster", Bytes::new())
                .await
                .ok()
                .filter(|response| response.status == 200)
                .and_then(|response| serde_json::from_slice::<ClusterView>(&response.body).ok()),
            None => None,
        };
        let (role, term, applied) = match own {
            Some(own) => (own.role, own.term.to_string(), own.applied_index.to_string()),
            None => ("unreachable".to_string(), "-".to_string(), "-".to_string()),
        };
        println!(
            "{:<4} {:<8} {:<14} {:<22} {:<22} {:>8} {:>8}",
            member.id,
            member.role,
            role,
            client_addr,
            member.peer_addr.clone().unwrap_or_else(|| "?".to_string()),
            term,
            applied
        );
    }
    Ok(())
}
