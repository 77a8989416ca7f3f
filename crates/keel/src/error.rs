//! Errors. "Request rejected" errors ([`ProposalError`], [`StepError`]) leave
//! the node unchanged and usable; [`Error::Storage`] is fatal for the node.

use std::sync::Arc;

use crate::config::ConfigError;
use crate::types::{Index, NodeId};

/// Everything a [`RawNode`](crate::RawNode) call can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The storage failed in a way the protocol cannot work around. The node
    /// is stopped: every later call returns [`Error::Stopped`].
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// A proposal was refused; nothing was appended.
    #[error("proposal refused: {0}")]
    Proposal(#[from] ProposalError),
    /// A message was refused; the node is unchanged.
    #[error("message refused: {0}")]
    Step(#[from] StepError),
    /// A read request was refused.
    #[error("read refused: {0}")]
    Read(#[from] ReadError),
    /// A committed membership change could not be applied; nothing changed.
    #[error("membership change not applied: {0}")]
    ConfChange(#[from] crate::confchange::ConfChangeError),
    /// A leadership transfer was refused.
    #[error("transfer refused: {0}")]
    Transfer(#[from] TransferError),
    /// The node stopped after an earlier fatal error.
    #[error("node stopped after a fatal error: {0}")]
    Stopped(Arc<str>),
}

impl Error {
    /// Whether the node can no longer be used.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::Stopped(_))
    }
}

/// What a [`Storage`](crate::Storage) call can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The entry was compacted into a snapshot and is gone.
    #[error("index {0} is compacted")]
    Compacted(Index),
    /// The index is beyond the last entry.
    #[error("index {0} is beyond the last entry")]
    Unavailable(Index),
    /// A snapshot is being built; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Entries are being loaded; ask again later.
    #[error("log entries temporarily unavailable")]
    LogTemporarilyUnavailable,
    /// The storage itself failed (an IO error, corruption). Fatal.
    #[error("storage failure: {0}")]
    Failed(Arc<str>),
    /// The recovered hard state says entries up to `commit` are committed,
    /// but the log ends at `last_index`: acknowledged entries are missing
    /// from the disk (a lost tail, a disk that lied about a sync). Data loss
    /// to report, not to hide; the node does not start on it.
    #[error("the hard state's commit index {commit} is beyond the log's last index {last_index}: committed entries were lost")]
    CommitBeyondLog {
        /// The recovered commit index.
        commit: Index,
        /// The last index the log holds.
        last_index: Index,
    },
    /// The recovered term is beyond [`Term::LIMIT`](crate::Term::LIMIT):
    /// the hard state is corrupt or was written from a forged message.
    #[error("the recovered term {0} is beyond keel's limit")]
    TermBeyondLimit(crate::Term),
}

impl StorageError {
    /// Whether asking again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StorageError::SnapshotTemporarilyUnavailable | StorageError::LogTemporarilyUnavailable
        )
    }
}

/// Why a proposal was refused. Nothing was appended to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// No leader is known (an election is in progress, or quorum is lost).
    #[error("no leader is known")]
    NoLeader,
    /// This node is not the leader and forwarding is disabled.
    #[error("not the leader (leader: {})", leader.map_or_else(|| "unknown".to_string(), |id| id.to_string()))]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; proposals resume after it.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The leader holds `max_uncommitted_bytes` of uncommitted proposals.
    #[error("too many uncommitted bytes ({uncommitted_bytes} + {proposed_bytes} > {limit_bytes})")]
    UncommittedLimit {
        /// Bytes already uncommitted.
        uncommitted_bytes: u64,
        /// Bytes in the refused proposal.
        proposed_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A membership change is already pending in the log.
    #[error("a membership change is pending at index {pending_index}")]
    ConfChangePending {
        /// The index of the pending change.
        pending_index: Index,
    },
    /// The node is not a member of the cluster (it was removed, or has not
    /// been added yet).
    #[error("this node is not a member of the cluster")]
    NotMember,
    /// The membership change does not apply to the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(crate::confchange::ConfChangeError),
    /// The proposal is empty or malformed.
    #[error("malformed proposal: {0}")]
    Malformed(&'static str),
}

/// Why a message from a peer was refused. The node is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message is addressed to another node.
    #[error("message for {to} delivered to {local}")]
    WrongRecipient {
        /// The addressee.
        to: NodeId,
        /// This node.
        local: NodeId,
    },
    /// A response came from a node that is not a member.
    #[error("response from {0}, which is not a member")]
    UnknownPeer(NodeId),
    /// The message breaks the protocol's rules (for example entries that are
    /// not contiguous, or that contradict committed entries).
    #[error("malformed message from {from}: {reason}")]
    Malformed {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Why a read request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known.
    #[error("no leader is known")]
    NoLeader,
    /// The leader has not yet committed an entry of its term, so it does not
    /// know the commit index (thesis §6.4 step 1); retry shortly.
    #[error("the leader has not committed an entry in its term yet")]
    LeaderNotReady,
    /// Lease reads need check-quorum.
    #[error("lease reads need check_quorum")]
    LeaseWithoutCheckQuorum,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// No leader is known to ask.
    #[error("no leader is known")]
    NoLeader,
    /// The target is a learner or not a member.
    #[error("{0} is not a voter")]
    NotVoter(NodeId),
}
