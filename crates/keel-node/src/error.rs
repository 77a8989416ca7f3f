//! The errors a [`NodeHandle`](crate::NodeHandle) call returns, and how the
//! core's refusals become them.

use keel::{Error as CoreError, NodeId, ProposalError, ReadError, TransferError};

/// Why a request failed. After a write, [`NodeError::outcome_unknown`]
/// says whether the write may still apply; every other error means it was
/// not applied.
///
/// ```
/// use keel_node::NodeError;
/// assert!(NodeError::Timeout.outcome_unknown());
/// assert!(!NodeError::NotMember.outcome_unknown());
/// ```
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
    /// The request was refused as invalid and changed nothing.
    #[error("refused: {0}")]
    Refused(String),
    /// A membership change is already in progress; retry once it is done.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many requests are waiting, or the leader holds too many
    /// uncommitted bytes; nothing was done. Retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// This node is not a member of the cluster (it was removed); nothing
    /// was done. Ask a member.
    #[error("this node is not a member of the cluster")]
    NotMember,
    /// The request names a node that is not a voter (a leadership transfer
    /// to a learner or a stranger); nothing was done.
    #[error("{0} is not a voter")]
    NotVoter(NodeId),
    /// The node stopped after a fatal error (storage failure, a panic in
    /// the state machine); it must be restarted.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl NodeError {
    /// Whether the outcome of a write that failed with this error is
    /// unknown: it may have been applied, or may still be. A write that
    /// was waiting when the node stopped (`ShuttingDown`, `Fatal`) may
    /// have reached the leader's log before.
    ///
    /// ```
    /// use keel_node::NodeError;
    /// assert!(NodeError::ShuttingDown.outcome_unknown());
    /// assert!(!NodeError::Conflict("a change is pending".into()).outcome_unknown());
    /// ```
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            NodeError::Timeout | NodeError::NoLeader | NodeError::ShuttingDown | NodeError::Fatal(_)
        )
    }
}

/// What a caller sees of the core's refusal `error`.
pub(crate) fn from_core(error: &CoreError) -> NodeError {
    match error {
        CoreError::Proposal(ProposalError::NoLeader)
        | CoreError::Read(ReadError::NoLeader)
        | CoreError::Transfer(TransferError::NoLeader)
        // A leader that is handing over, or has not yet committed an entry
        // of its term, serves nothing for now: as good as no leader.
        | CoreError::Proposal(ProposalError::TransferInProgress)
        | CoreError::Read(ReadError::LeaderNotReady) => NodeError::NoLeader,
        CoreError::Proposal(ProposalError::NotLeader { leader }) => NodeError::NotLeader { leader: *leader },
        CoreError::Proposal(ProposalError::ConfChangePending { pending_index }) => {
            NodeError::Conflict(format!("a membership change is in progress (index {pending_index})"))
        }
        CoreError::Proposal(limit @ ProposalError::UncommittedLimit { .. }) => {
            NodeError::Overloaded(limit.to_string())
        }
        CoreError::Proposal(ProposalError::NotMember) => NodeError::NotMember,
        CoreError::Transfer(TransferError::NotVoter(target)) => NodeError::NotVoter(*target),
        error if error.is_fatal() => NodeError::Fatal(error.to_string()),
        error => NodeError::Refused(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use keel::Index;

    use super::*;

    #[test]
    fn refusals_that_are_not_the_callers_fault_are_not_invalid_requests() {
        let uncommitted = ProposalError::UncommittedLimit {
            uncommitted_bytes: 10,
            proposed_bytes: 5,
            limit_bytes: 12,
        };
        assert!(matches!(from_core(&uncommitted.into()), NodeError::Overloaded(_)));
        assert_eq!(from_core(&ProposalError::NotMember.into()), NodeError::NotMember);
        assert_eq!(
            from_core(&TransferError::NotVoter(NodeId::new(4)).into()),
            NodeError::NotVoter(NodeId::new(4))
        );
        assert_eq!(from_core(&ReadError::LeaderNotReady.into()), NodeError::NoLeader);
        assert_eq!(
            from_core(&ProposalError::TransferInProgress.into()),
            NodeError::NoLeader
        );
        let pending = ProposalError::ConfChangePending {
            pending_index: Index::new(3),
        };
        assert!(matches!(from_core(&pending.into()), NodeError::Conflict(_)));
    }

    #[test]
    fn a_malformed_proposal_is_refused_as_invalid() {
        assert!(matches!(
            from_core(&ProposalError::Malformed("empty").into()),
            NodeError::Refused(_)
        ));
    }
}
