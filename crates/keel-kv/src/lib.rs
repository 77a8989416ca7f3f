//! # keel-kv
//!
//! The replicated key-value server built on keel: an ordered map
//! replicated with Raft, served over HTTP (see `docs/KV_API.md` in the repository for the
//! contract), with a CLI, a local cluster runner and a load generator.
//!
//! The pieces:
//! - [`store`]: the state machine (`KvStore`): put, delete, compare-and-set,
//!   streamed snapshots.
//! - [`api`]: the HTTP routes, limits and error bodies.
//! - [`server`]: starting a node and serving its API.
//! - [`client`]: a small HTTP client for the API.
//! - [`metrics`]: the Prometheus text of `/metrics`.
//! - [`cluster`]: `keel-kv cluster`, a local cluster of child processes.
//! - [`cluster_identity`]: which cluster a node belongs to (the cluster id
//!   in `<data dir>/CLUSTER_ID`).
//! - [`bench`](mod@bench): `keel-kv bench`, a closed-loop load generator.
//!
//! A one-node server in a test, over keel-node's in-process network:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use keel_kv::api::{ApiLimits, ApiState};
//! use keel_kv::server::{start_node, HttpServer, NodeOptions};
//!
//! let network = keel_node::LocalNetwork::new("/tmp/kv-spool");
//! let (sender, receiver) = keel_node::inbound_channel();
//! let transport = network.join(keel::NodeId::new(1), sender);
//! let mut options = NodeOptions::new(1, "/tmp/kv-1", "local:1".into(), "127.0.0.1:8001".into());
//! options.initial_cluster = Some(vec![(1, "local:1".into())]);
//! let node = start_node(&options, transport, receiver).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8001").await?;
//! let server = HttpServer::start(listener, ApiState::new(node, ApiLimits::default()))?;
//! println!("serving on {}", server.local_addr());
//! # Ok(())
//! # }
//! ```

#![warn(clippy::unwrap_used)]

pub mod api;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod cluster_identity;
pub mod metrics;
mod parse_errors;
pub mod server;
pub mod store;
