//! The settings of a node.

use std::path::PathBuf;
use std::time::Duration;

use keel::NodeId;

/// The settings of one node of a keel cluster.
///
/// ```
/// use keel::NodeId;
/// use keel_node::NodeConfig;
/// let config = NodeConfig::new(NodeId::new(1), "/tmp/keel-node-1");
/// assert_eq!(config.tick_interval.as_millis(), 100);
/// ```
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Where the log, hard state and snapshots live. A running node holds
    /// it exclusively (a lock on `LOCK`) and it is recorded as this node's
    /// (`NODE_ID`): see [`check_data_directory`](crate::check_data_directory).
    pub data_dir: PathBuf,
    /// The protocol settings; `id` is overwritten with [`NodeConfig::id`].
    pub raft: keel::Config,
    /// How often the node ticks. Election timeouts and heartbeats are
    /// counted in ticks (see [`keel::Config`]): with 100 ms and the default
    /// 10–20 election ticks, a failed leader is replaced in 1–2 s.
    pub tick_interval: Duration,
    /// How long a request may wait before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// Take a snapshot after this many entries were applied since the
    /// last one. Bounds both the log on disk and the replay on restart.
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind a snapshot, so a slightly slow
    /// follower catches up from the log instead of a snapshot.
    pub snapshot_keep_entries: u64,
    /// The most requests (writes, reads) waiting for the raft loop; more
    /// are refused, so a flood of clients cannot exhaust memory.
    pub max_pending_requests: usize,
    /// The log's segment size.
    pub segment_size_bytes: u64,
}

impl NodeConfig {
    /// Defaults for a LAN: 100 ms ticks, 5 s request timeout, a snapshot
    /// every 10,000 entries keeping 1,000 behind it.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        let mut raft = keel::Config::new(id);
        raft.async_storage_writes = true;
        NodeConfig {
            id,
            data_dir: data_dir.into(),
            raft,
            tick_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            snapshot_interval_entries: 10_000,
            snapshot_keep_entries: 1_000,
            max_pending_requests: 65_536,
            segment_size_bytes: 64 * 1024 * 1024,
        }
    }
}
