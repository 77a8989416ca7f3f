//! `keel-net`: the transport between keel peers.
//!
//! TCP on tokio, optionally with mutual TLS (rustls); a versioned, compact
//! binary [`codec`]; length-prefixed frames under a size limit; bounded
//! per-peer send queues whose messages are batched into one write; reconnects
//! with jittered exponential backoff; and snapshots streamed in chunks on
//! connections of their own so heartbeats keep flowing.
//!
//! # Use
//!
//! The runtime starts a [`Network`] with a channel for [`Inbound`] events,
//! hands every outgoing message of a `Ready` to [`Network::send`] (which
//! never blocks), and feeds what arrives back to the core:
//!
//! ```no_run
//! # async fn run() -> Result<(), keel_net::NetError> {
//! use keel::{Envelope, Message, NodeId, Term};
//! use keel_net::{Inbound, Network, NetworkConfig};
//!
//! let mut config = NetworkConfig::new(
//!     42,                                     // cluster id
//!     NodeId::new(1),                         // this node
//!     "127.0.0.1:7001".parse().unwrap(),      // listen address
//!     "/var/lib/keel/incoming".into(),        // where received snapshots go
//! );
//! config.peers.insert(NodeId::new(2), "127.0.0.1:7002".to_string());
//! let (inbound_sender, mut inbound) = tokio::sync::mpsc::channel(1024);
//! let network = Network::start(config, inbound_sender).await?;
//!
//! network.send(Envelope::new(NodeId::new(1), NodeId::new(2), Term::new(1), Message::TimeoutNow));
//! while let Some(event) = inbound.recv().await {
//!     match event {
//!         Inbound::Message(envelope) => { /* raw_node.step(envelope) */ }
//!         Inbound::Unreachable(peer) => { /* raw_node.report_unreachable(peer) */ }
//!         Inbound::SnapshotReceived { envelope, data_path } => { /* restore, then step */ }
//!         Inbound::SnapshotSent { to, outcome } => { /* raw_node.report_snapshot(to, outcome) */ }
//!         Inbound::Refused { peer, status } => { /* NotMember from most voters: removed */ }
//!     }
//! }
//! network.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Connections and trust
//!
//! Each node dials each peer it sends to and only writes on that connection
//! (so a pair of nodes uses two connections, one per direction; see
//! [`Network`]). Every connection opens with a handshake naming the protocol
//! version, the cluster id and both node ids; the listener refuses a
//! handshake of another version, from another cluster (a
//! [`derive_cluster_id`] per cluster keeps clusters on shared hosts apart),
//! for another node, or from a node that is not a member (see
//! [`Network::set_members`]), and closes a connection on any malformed or
//! oversized frame, or on a message whose sender or recipient differs from
//! the handshake's. With TLS, both sides must present certificates from the
//! configured CA; unless [`TlsConfig::require_node_names`] is set, the node
//! id in the handshake is not bound to the certificate: any holder of a
//! certificate from the CA is trusted to say who it is.
//!
//! # Hostile peers
//!
//! What a peer can make a node hold is bounded, and strangers never compete
//! with members (the numbers are [`NetworkConfig`] fields):
//!
//! - Before its handshake is accepted, a connection holds one of
//!   `unauthenticated_connections_max` slots (the oldest is closed when a
//!   new one needs room), for at most `handshake_timeout_ms`, with a read
//!   buffer the size of a handshake frame: large frames are read only from
//!   members.
//! - A member holds at most one connection per kind (messages, snapshot):
//!   a newer one replaces the older. One silent for
//!   `inbound_idle_timeout_ms` is closed.
//! - Read buffers grow with the bytes that arrive, never with the length a
//!   frame declares, up to `max_frame_bytes`.
//! - Refusals are logged at a bounded rate: once per peer and reason per
//!   interval, and a handful of lines per interval in all.
//!
//! [`Network::stats`] reports the connections and bytes held and the
//! refusals, for metrics.

#![warn(clippy::unwrap_used)]

mod admission;
mod cluster_id;
pub mod codec;
mod config;
mod dial;
mod error;
mod frame;
mod inbound;
mod listener;
mod network;
mod refusals;
mod snapshot;
mod stats;
mod tls;
mod writer;

pub use cluster_id::derive_cluster_id;
pub use codec::CodecError;
pub use config::{NetworkConfig, TlsConfig};
pub use error::NetError;
pub use frame::FrameError;
pub use inbound::Inbound;
pub use network::Network;
pub use stats::NetworkStats;
