//! `keel-kv`: the replicated key-value server built on keel, its client
//! and its tools. See `keel-kv --help`.

#![warn(clippy::unwrap_used)]

mod client_commands;
mod logging;
mod serve;
mod serve_flags;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keel_kv::bench::{self, BenchOptions};
use keel_kv::client::ClientError;
use keel_kv::cluster::{self, ClusterOptions};

use crate::client_commands::client_command;
use crate::logging::{log_format_name, LogFormat};
use crate::serve::serve;
use crate::serve_flags::ServeArgs;

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
pub(crate) enum Commands {
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
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
pub(crate) enum MembersCommand {
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
pub(crate) struct Target {
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
pub(crate) enum ReadConsistency {
    /// Confirmed by a heartbeat round to a quorum (ReadIndex).
    Linearizable,
    /// Served by the leader within its lease, without a round trip;
    /// linearizable if the nodes' clocks are monotonic and their rates
    /// differ by at most 10%.
    Lease,
    /// This node's applied state, no round trip: may be stale.
    Stale,
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

pub(crate) fn consistency_name(consistency: ReadConsistency) -> &'static str {
    match consistency {
        ReadConsistency::Linearizable => "linearizable",
        ReadConsistency::Lease => "lease",
        ReadConsistency::Stale => "stale",
    }
}

/// Why a command failed, and its exit code.
pub(crate) struct Failure {
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
        Commands::Serve(args) => serve(*args).await,
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
