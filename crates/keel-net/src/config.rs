//! The transport's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use keel::NodeId;

use crate::codec::HANDSHAKE_BYTES;
use crate::network::INBOUND_CONNECTIONS_LIMIT;
use crate::NetError;

/// The most `unauthenticated_connections_max` may be: a small fraction of
/// the ceiling on all inbound connections, so members always find room.
pub(crate) const UNAUTHENTICATED_CONNECTIONS_LIMIT: usize = 4_096;

const _: () = assert!(UNAUTHENTICATED_CONNECTIONS_LIMIT <= INBOUND_CONNECTIONS_LIMIT / 4);

/// Paths of the PEM files for mutual TLS. Every connection, in both
/// directions, is authenticated with certificates issued by the CA in
/// `ca_path`; a peer whose certificate chains to another CA is refused.
///
/// With `require_node_names`, a certificate also vouches for one node id:
/// it must carry the DNS subject alternative name `keel-node-<id>` of the
/// node that presents it (see [`TlsConfig::node_name`]), so that a member
/// holding a valid certificate cannot pose as another member.
///
/// ```
/// use keel::NodeId;
/// assert_eq!(keel_net::TlsConfig::node_name(NodeId::new(3)), "keel-node-3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM, leaf first). It must name, as a
    /// DNS or IP subject alternative name, the host that peers dial.
    pub cert_path: PathBuf,
    /// This node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// The CA certificates that peers' certificates must chain to (PEM).
    pub ca_path: PathBuf,
    /// Whether a peer's certificate must name the node id it claims (the
    /// dialler's in its handshake, the listener's as the node dialled).
    pub require_node_names: bool,
}

impl TlsConfig {
    /// The DNS name a certificate carries to vouch for node `id` (with
    /// `require_node_names`).
    pub fn node_name(id: NodeId) -> String {
        format!("keel-node-{}", id.get())
    }
}

/// Everything the transport needs to know. Build one with
/// [`NetworkConfig::new`] and change fields as needed.
///
/// ```
/// use keel::NodeId;
/// use keel_net::NetworkConfig;
/// let mut config = NetworkConfig::new(7, NodeId::new(1), "127.0.0.1:0".parse().unwrap(), "/tmp/snapshots".into());
/// config.peers.insert(NodeId::new(2), "127.0.0.1:7002".to_string());
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The cluster this node belongs to. Connections from nodes of another
    /// cluster are refused at the handshake, so two clusters that share
    /// hosts cannot corrupt each other. Derive it once when the cluster is
    /// founded, with [`derive_cluster_id`](crate::derive_cluster_id), and
    /// keep it with the node's data: a constant shared by every cluster
    /// protects nothing.
    pub cluster_id: u64,
    /// This node's id (`>= 1`).
    pub node_id: NodeId,
    /// Where to listen for peers; port 0 picks a free port (see
    /// [`Network::local_addr`](crate::Network::local_addr)).
    pub listen_addr: SocketAddr,
    /// The address peers should dial to reach this node, sent in every
    /// handshake so a peer that does not know it yet (a node that just
    /// joined) can answer. `None`: the bound listen address, unless it is
    /// unspecified (`0.0.0.0`), in which case nothing is advertised.
    pub advertise_address: Option<String>,
    /// The peers' addresses, `host:port`. Change them at run time with
    /// [`Network::set_peer`](crate::Network::set_peer). These peers are the
    /// first members: only members' connections are accepted (see
    /// [`Network::set_members`](crate::Network::set_members)), so a node
    /// that joins a cluster lists the current members here, or gives their
    /// ids to `set_members`.
    pub peers: BTreeMap<NodeId, String>,
    /// Mutual TLS, or `None` for plain TCP.
    pub tls: Option<TlsConfig>,
    /// The largest frame body accepted or sent. A larger incoming frame
    /// closes the connection before anything is allocated for it; a larger
    /// outgoing message is dropped and reported unreachable. It bounds the
    /// memory a connection may hold, and must exceed the core's
    /// `max_size_per_msg` plus a little header.
    pub max_frame_bytes: u32,
    /// Messages queued per peer before [`Network::send`](crate::Network::send)
    /// drops and reports the peer unreachable. Larger absorbs bursts; smaller
    /// bounds memory and tells the core sooner that a peer is slow.
    pub send_queue_messages: usize,
    /// The first reconnect delay after a failure, in milliseconds.
    pub reconnect_backoff_ms_min: u64,
    /// The largest reconnect delay, in milliseconds. Each failure doubles the
    /// delay up to this cap; each delay is jittered down by up to half so that
    /// peers do not retry in lockstep.
    pub reconnect_backoff_ms_max: u64,
    /// Where received snapshots are spooled, one file each. The receiver of
    /// [`Inbound::SnapshotReceived`](crate::Inbound::SnapshotReceived) owns
    /// the file and removes it once installed.
    pub snapshot_dir: PathBuf,
    /// How long connecting plus the handshake (TLS included) may take, in
    /// milliseconds, in either direction. Bounds how long a silent peer can
    /// hold an unauthenticated connection slot.
    pub handshake_timeout_ms: u64,
    /// Inbound connections held at once before their handshake is accepted
    /// (strangers and members alike); when all are held, the oldest is
    /// closed to make room for the newest. Each holds a read buffer the
    /// size of a handshake frame (under 300 bytes) plus TLS state, for at
    /// most `handshake_timeout_ms`. Members' accepted connections do not
    /// count against it: each member holds at most one connection per kind
    /// (messages, snapshot), a newer one replacing the older, so strangers
    /// can never crowd members out. Larger tolerates more simultaneous
    /// dialling; smaller bounds what strangers can make this node hold.
    pub unauthenticated_connections_max: usize,
    /// How long an accepted inbound connection may stay silent, in
    /// milliseconds, before it is closed (after between one and two of
    /// these). Frees the slots and buffers of peers that vanished without
    /// closing (power loss, a partition) or that stall in the middle of a
    /// frame. Must comfortably exceed the leader's heartbeat interval, or
    /// connections that carry heartbeats are closed and re-dialled; a link
    /// that is only quiet (between two followers) is closed and re-dialled
    /// at its next message without harm.
    pub inbound_idle_timeout_ms: u64,
    /// The most bytes of messages gathered into one write per peer. Larger
    /// batches mean fewer syscalls; smaller mean less latency behind a big
    /// append.
    pub batch_bytes_max: usize,
    /// The size of one snapshot data chunk, in bytes (at most
    /// `max_frame_bytes - 1`).
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot accepted from a peer, in bytes: a stream that
    /// goes past it is cut off, its file removed, and its sender told it
    /// failed. Bounds the disk one peer can fill.
    pub snapshot_bytes_max: u64,
    /// Snapshots received at once; a further stream is refused (its sender
    /// reports failure and the core tries again later). Bounds the disk and
    /// file handles that peers can make us hold.
    pub snapshot_receives_max: usize,
}

impl NetworkConfig {
    /// A configuration with no peers, no TLS and the default limits: 16 MiB
    /// frames, 1024 queued messages per peer, 50 ms..5 s backoff, 5 s
    /// handshakes, 64 unauthenticated connections, 60 s idle timeout, 1 MiB
    /// batches, 256 KiB snapshot chunks, snapshots of at most 64 GiB
    /// received two at a time.
    pub fn new(cluster_id: u64, node_id: NodeId, listen_addr: SocketAddr, snapshot_dir: PathBuf) -> Self {
        NetworkConfig {
            cluster_id,
            node_id,
            listen_addr,
            advertise_address: None,
            peers: BTreeMap::new(),
            tls: None,
            max_frame_bytes: 16 * 1024 * 1024,
            send_queue_messages: 1024,
            reconnect_backoff_ms_min: 50,
            reconnect_backoff_ms_max: 5_000,
            snapshot_dir,
            handshake_timeout_ms: 5_000,
            unauthenticated_connections_max: 64,
            inbound_idle_timeout_ms: 60_000,
            batch_bytes_max: 1024 * 1024,
            snapshot_chunk_bytes: 256 * 1024,
            snapshot_bytes_max: 64 << 30,
            snapshot_receives_max: 2,
        }
    }

    /// Checks the fields and the relations between them.
    pub fn validate(&self) -> Result<(), NetError> {
        let invalid = |reason: String| Err(NetError::InvalidConfig(reason));
        if self.node_id == NodeId::ZERO {
            return invalid("node_id must be >= 1".into());
        }
        if self.peers.contains_key(&NodeId::ZERO) {
            return invalid("peer id 0 is not valid".into());
        }
        if (self.max_frame_bytes as usize) < HANDSHAKE_BYTES.max(1024) {
            return invalid(format!(
                "max_frame_bytes {} is below the minimum of 1024",
                self.max_frame_bytes
            ));
        }
        if self.send_queue_messages == 0 {
            return invalid("send_queue_messages must be >= 1".into());
        }
        if self.reconnect_backoff_ms_min == 0 || self.reconnect_backoff_ms_min > self.reconnect_backoff_ms_max
        {
            return invalid(format!(
                "reconnect backoff must satisfy 1 <= min ({}) <= max ({})",
                self.reconnect_backoff_ms_min, self.reconnect_backoff_ms_max
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("handshake_timeout_ms must be >= 1".into());
        }
        if self.unauthenticated_connections_max == 0
            || self.unauthenticated_connections_max > UNAUTHENTICATED_CONNECTIONS_LIMIT
        {
            return invalid(format!(
                "unauthenticated_connections_max {} must be in 1..={UNAUTHENTICATED_CONNECTIONS_LIMIT}",
                self.unauthenticated_connections_max
            ));
        }
        if self.inbound_idle_timeout_ms == 0 {
            return invalid("inbound_idle_timeout_ms must be >= 1".into());
        }
        if self.batch_bytes_max == 0 {
            return invalid("batch_bytes_max must be >= 1".into());
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes >= self.max_frame_bytes as usize {
            return invalid(format!(
                "snapshot_chunk_bytes {} must be in 1..max_frame_bytes ({})",
                self.snapshot_chunk_bytes, self.max_frame_bytes
            ));
        }
        if self.snapshot_bytes_max == 0 {
            return invalid("snapshot_bytes_max must be >= 1".into());
        }
        if self.snapshot_receives_max == 0 {
            return invalid("snapshot_receives_max must be >= 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Spoil = fn(&mut NetworkConfig);

    fn valid() -> NetworkConfig {
        NetworkConfig::new(
            1,
            NodeId::new(1),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            PathBuf::from("snapshots"),
        )
    }

    #[test]
    fn defaults_are_valid_and_each_bad_field_is_named() {
        assert!(valid().validate().is_ok());
        let cases: [(Spoil, &str); 11] = [
            (|config| config.node_id = NodeId::ZERO, "node_id"),
            (|config| config.max_frame_bytes = 100, "max_frame_bytes"),
            (|config| config.send_queue_messages = 0, "send_queue_messages"),
            (|config| config.reconnect_backoff_ms_min = 10_000, "backoff"),
            (
                |config| config.unauthenticated_connections_max = 0,
                "unauthenticated_connections_max",
            ),
            (
                |config| config.unauthenticated_connections_max = 1 << 20,
                "unauthenticated_connections_max",
            ),
            (
                |config| config.inbound_idle_timeout_ms = 0,
                "inbound_idle_timeout_ms",
            ),
            (
                |config| config.snapshot_chunk_bytes = 16 * 1024 * 1024,
                "snapshot_chunk_bytes",
            ),
            (|config| config.handshake_timeout_ms = 0, "handshake_timeout_ms"),
            (|config| config.snapshot_bytes_max = 0, "snapshot_bytes_max"),
            (|config| config.snapshot_receives_max = 0, "snapshot_receives_max"),
        ];
        for (spoil, field) in cases {
            let mut config = valid();
            spoil(&mut config);
            match config.validate() {
                Err(NetError::InvalidConfig(reason)) => assert!(reason.contains(field), "{reason}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
