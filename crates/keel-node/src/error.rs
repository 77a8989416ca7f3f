//! The errors a [`NodeHandle`](crate::NodeHandle) call returns.

use keel::NodeId;

/// Why a request failed. `Timeout` and `NoLeader` after a write mean the
/// outcome is unknown (the write may still apply); every other error means
/// it was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// This node cannot serve the request; the leader may.
    #[error("not the leader (leader: {})", leader.map_or_else(|| "unknown".to_string(), |id| id.to_string()))]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// No leader is known: an election is under way or quorum is lost.
    #[error("no leader is known")]
    NoLeader,
    /// Not done in time; the outcome is unknown.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The request was refused and changed nothing.
    #[error("refused: {0}")]
    Refused(String),
    /// A membership change is already in progress; retry once it is done.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many requests are waiting; nothing was done. Retry later.
    #[error("overloaded: too many pending requests")]
    Overloaded,
    /// The node stopped after a fatal error (storage failure, a panic in
    /// the state machine); it must be restarted.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl NodeError {
    /// Whether the outcome of a write that failed with this error is
    /// unknown.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, NodeError::Timeout | NodeError::NoLeader)
    }
}
