//! Counters and gauges of a node, readable at any time without asking the
//! raft loop, and also emitted through the [`metrics`] crate's facade.
//!
//! # Metrics emitted through the `metrics` facade
//!
//! Install any `metrics` recorder (a Prometheus exporter, for example) in
//! the process and every node reports the following, each labelled
//! `node = "<id>"`. Without a recorder they cost next to nothing.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `keel_term` | gauge | the current term |
//! | `keel_commit_index` | gauge | the highest index known committed |
//! | `keel_applied_index` | gauge | the highest index applied to the state machine |
//! | `keel_last_index` | gauge | the last index of the log |
//! | `keel_is_leader` | gauge | 1 on the leader, 0 elsewhere |
//! | `keel_peer_lag_entries` | gauge | on the leader, per `peer` label: `last_index - matched` |
//! | `keel_proposals_total` | counter | writes proposed through this node |
//! | `keel_readies_total` | counter | `Ready`s handled |
//! | `keel_messages_sent_total` | counter | messages handed to the transport |
//! | `keel_leader_changes_total` | counter | changes of the known leader seen by this node |
//! | `keel_elections_total` | counter | elections this node started (became candidate) |
//! | `keel_snapshots_taken_total` | counter | snapshots taken by this node's applier |
//! | `keel_snapshots_sent_total` | counter | snapshots delivered to a follower (`outcome` label: `delivered` or `failed`) |
//! | `keel_snapshots_installed_total` | counter | snapshots received from a leader and installed |
//! | `keel_append_seconds` | histogram | one group commit on the disk thread: the log write with its fsync, plus the in-memory mirror |
//! | `keel_log_write_seconds` | histogram | keel-log's `LogStore::write` alone: encoding, the append and the fsync |
//! | `keel_fsync_seconds` | histogram | the `fdatasync` of each log write alone (the disk's share) |
//! | `keel_apply_seconds` | histogram | applying one batch of committed entries to the state machine |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel::{Index, NodeId, Role, Status};

/// Names of the metrics emitted through the `metrics` facade.
pub mod names {
    /// Gauge: the current term.
    pub const TERM: &str = "keel_term";
    /// Gauge: the highest index known committed.
    pub const COMMIT_INDEX: &str = "keel_commit_index";
    /// Gauge: the highest index applied.
    pub const APPLIED_INDEX: &str = "keel_applied_index";
    /// Gauge: the last index of the log.
    pub const LAST_INDEX: &str = "keel_last_index";
    /// Gauge: 1 on the leader, 0 elsewhere.
    pub const IS_LEADER: &str = "keel_is_leader";
    /// Gauge (leader only, label `peer`): entries the peer is behind.
    pub const PEER_LAG: &str = "keel_peer_lag_entries";
    /// Counter: writes proposed through this node.
    pub const PROPOSALS: &str = "keel_proposals_total";
    /// Counter: `Ready`s handled.
    pub const READIES: &str = "keel_readies_total";
    /// Counter: messages handed to the transport.
    pub const MESSAGES_SENT: &str = "keel_messages_sent_total";
    /// Counter: changes of the known leader.
    pub const LEADER_CHANGES: &str = "keel_leader_changes_total";
    /// Counter: elections started by this node.
    pub const ELECTIONS: &str = "keel_elections_total";
    /// Counter: snapshots taken.
    pub const SNAPSHOTS_TAKEN: &str = "keel_snapshots_taken_total";
    /// Counter (label `outcome`): snapshot transfers to followers.
    pub const SNAPSHOTS_SENT: &str = "keel_snapshots_sent_total";
    /// Counter: snapshots received and installed.
    pub const SNAPSHOTS_INSTALLED: &str = "keel_snapshots_installed_total";
    /// Histogram (seconds): one group commit on the disk thread.
    pub const APPEND_SECONDS: &str = "keel_append_seconds";
    /// Histogram (seconds): `LogStore::write` (encoding, append and fsync).
    pub const LOG_WRITE_SECONDS: &str = "keel_log_write_seconds";
    /// Histogram (seconds): the `fdatasync` of one log write.
    pub const FSYNC_SECONDS: &str = "keel_fsync_seconds";
    /// Histogram (seconds): applying one batch of committed entries.
    pub const APPLY_SECONDS: &str = "keel_apply_seconds";
}

/// Live counters, shared by the raft loop and every handle.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    node: String,
    pub(crate) proposals: AtomicU64,
    pub(crate) readies: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_installed: AtomicU64,
    applied_index: AtomicU64,
    commit_index: AtomicU64,
    term: AtomicU64,
    is_leader: AtomicU64,
    last_index: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(id: NodeId) -> Self {
        Metrics {
            node: id.get().to_string(),
            ..Metrics::default()
        }
    }

    pub(crate) fn count_proposal(&self) {
        self.proposals.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::PROPOSALS, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn count_ready(&self) {
        self.readies.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::READIES, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn count_message_sent(&self) {
        self.count_messages_sent(1);
    }

    /// Counts `count` messages at once: the disk thread's batches cost one
    /// counter update, not one per message.
    pub(crate) fn count_messages_sent(&self, count: u64) {
        self.messages_sent.fetch_add(count, Ordering::Relaxed);
        metrics::counter!(names::MESSAGES_SENT, "node" => self.node.clone()).increment(count);
    }

    pub(crate) fn count_leader_change(&self) {
        metrics::counter!(names::LEADER_CHANGES, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn count_election(&self) {
        metrics::counter!(names::ELECTIONS, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn count_snapshot_taken(&self) {
        metrics::counter!(names::SNAPSHOTS_TAKEN, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn count_snapshot_sent(&self, delivered: bool) {
        if delivered {
            self.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = if delivered { "delivered" } else { "failed" };
        metrics::counter!(names::SNAPSHOTS_SENT, "node" => self.node.clone(), "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn count_snapshot_installed(&self) {
        self.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::SNAPSHOTS_INSTALLED, "node" => self.node.clone()).increment(1);
    }

    pub(crate) fn record_append(&self, elapsed: Duration) {
        metrics::histogram!(names::APPEND_SECONDS, "node" => self.node.clone()).record(elapsed.as_secs_f64());
    }

    pub(crate) fn record_log_write(&self, elapsed: Duration) {
        metrics::histogram!(names::LOG_WRITE_SECONDS, "node" => self.node.clone())
            .record(elapsed.as_secs_f64());
    }

    pub(crate) fn record_fsync(&self, elapsed: Duration) {
        metrics::histogram!(names::FSYNC_SECONDS, "node" => self.node.clone()).record(elapsed.as_secs_f64());
    }

    pub(crate) fn record_apply(&self, elapsed: Duration) {
        metrics::histogram!(names::APPLY_SECONDS, "node" => self.node.clone()).record(elapsed.as_secs_f64());
    }

    pub(crate) fn record_applied(&self, index: Index) {
        self.applied_index.store(index.get(), Ordering::Relaxed);
        metrics::gauge!(names::APPLIED_INDEX, "node" => self.node.clone()).set(index.get() as f64);
    }

    pub(crate) fn record_status(&self, status: &Status) {
        let commit = status.hard_state.commit.get();
        let term = status.hard_state.term.get();
        let last = status.last_index.get();
        let leader = status.role == Role::Leader;
        self.commit_index.store(commit, Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
        self.last_index.store(last, Ordering::Relaxed);
        self.is_leader.store(u64::from(leader), Ordering::Relaxed);
        let node = &self.node;
        metrics::gauge!(names::COMMIT_INDEX, "node" => node.clone()).set(commit as f64);
        metrics::gauge!(names::TERM, "node" => node.clone()).set(term as f64);
        metrics::gauge!(names::LAST_INDEX, "node" => node.clone()).set(last as f64);
        metrics::gauge!(names::IS_LEADER, "node" => node.clone()).set(if leader { 1.0 } else { 0.0 });
        if leader {
            for peer in status.peers.iter().filter(|peer| peer.id != status.id) {
                let lag = last.saturating_sub(peer.matched.get());
                metrics::gauge!(names::PEER_LAG, "node" => node.clone(), "peer" => peer.id.get().to_string())
                    .set(lag as f64);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> NodeMetrics {
        NodeMetrics {
            proposals_total: self.proposals.load(Ordering::Relaxed),
            readies_total: self.readies.load(Ordering::Relaxed),
            messages_sent_total: self.messages_sent.load(Ordering::Relaxed),
            applied_index: self.applied_index.load(Ordering::Relaxed),
            commit_index: self.commit_index.load(Ordering::Relaxed),
            last_index: self.last_index.load(Ordering::Relaxed),
            term: self.term.load(Ordering::Relaxed),
            is_leader: self.is_leader.load(Ordering::Relaxed) == 1,
            snapshots_sent_total: self.snapshots_sent.load(Ordering::Relaxed),
            snapshots_installed_total: self.snapshots_installed.load(Ordering::Relaxed),
        }
    }
}

/// A reading of a node's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Writes proposed through this node.
    pub proposals_total: u64,
    /// `Ready`s handled.
    pub readies_total: u64,
    /// Messages handed to the transport.
    pub messages_sent_total: u64,
    /// The highest index applied to the state machine.
    pub applied_index: u64,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The last index of the log.
    pub last_index: u64,
    /// The current term.
    pub term: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Snapshots delivered to followers.
    pub snapshots_sent_total: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed_total: u64,
}
