//! Two majority configurations that must both agree.

use std::collections::BTreeSet;

use crate::quorum::{MajorityConfig, VoteResult};
use crate::types::{Index, NodeId};

/// The incoming and outgoing voters of a (possibly) joint configuration. When
/// not joint, `outgoing` is empty and only `incoming` decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct JointConfig {
    incoming: MajorityConfig,
    outgoing: MajorityConfig,
}

impl JointConfig {
    /// A configuration deciding by both halves.
    pub fn new(incoming: MajorityConfig, outgoing: MajorityConfig) -> Self {
        JointConfig { incoming, outgoing }
    }

    /// The incoming (or only) voters.
    pub fn incoming(&self) -> &MajorityConfig {
        &self.incoming
    }

    /// The outgoing voters; empty when not joint.
    pub fn outgoing(&self) -> &MajorityConfig {
        &self.outgoing
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half, each once.
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .voters()
            .iter()
            .chain(self.outgoing.voters())
            .copied()
            .collect()
    }

    /// The highest index acknowledged by a majority of both halves.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let incoming = self.incoming.committed_index(&acked);
        let outgoing = self.outgoing.committed_index(&acked);
        incoming.min(outgoing)
    }

    /// The election result: won only if both halves won, lost if either lost.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = self.incoming.vote_result(&vote);
        let outgoing = self.outgoing.vote_result(&vote);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outgoing_half_holds_the_commit_index_back() {
        let joint = JointConfig::new(
            MajorityConfig::new([1, 2, 3].map(NodeId::new)),
            MajorityConfig::new([3, 4, 5].map(NodeId::new)),
        );
        // Nodes 1, 2 and 3 acknowledged 9; 4 and 5 only 5.
        let acked = |id: NodeId| Some(Index::new(if id.get() <= 3 { 9 } else { 5 }));
        assert_eq!(joint.committed_index(acked), Index::new(5));
    }
}
