//! Counters and gauges of a node, readable at any time without asking the
//! raft loop.

use std::sync::atomic::{AtomicU64, Ordering};

use keel::{Index, Role, Status};

/// Live counters, shared by the raft loop and every handle.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) proposals: AtomicU64,
    pub(crate) readies: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    applied_index: AtomicU64,
    commit_index: AtomicU64,
    term: AtomicU64,
    is_leader: AtomicU64,
    last_index: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_applied(&self, index: Index) {
        self.applied_index.store(index.get(), Ordering::Relaxed);
    }

    pub(crate) fn record_status(&self, status: &Status) {
        self.commit_index
            .store(status.hard_state.commit.get(), Ordering::Relaxed);
        self.term.store(status.hard_state.term.get(), Ordering::Relaxed);
        self.last_index.store(status.last_index.get(), Ordering::Relaxed);
        self.is_leader
            .store(u64::from(status.role == Role::Leader), Ordering::Relaxed);
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
}
