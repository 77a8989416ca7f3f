//! One majority configuration.

use std::collections::BTreeSet;

use crate::quorum::VoteResult;
use crate::types::{Index, NodeId};

/// A set of voters, kept sorted, deciding by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MajorityConfig {
    /// Sorted, without duplicates.
    voters: Vec<NodeId>,
}

/// Configurations up to this size compute on the stack.
pub(crate) const STACK_VOTERS: usize = 16;

/// The highest index a majority of `acked` (one acknowledged index per
/// voter; reordered) reaches: sorted descending, the quorum-th largest is
/// acknowledged by a quorum, it and every index before it. No voters agree
/// to everything (`u64::MAX`).
pub(crate) fn quorum_index(acked: &mut [Index]) -> Index {
    if acked.is_empty() {
        return Index::new(u64::MAX);
    }
    acked.sort_unstable_by(|a, b| b.cmp(a));
    acked[acked.len() / 2]
}

impl MajorityConfig {
    /// A configuration of these voters (duplicates are ignored).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let set: BTreeSet<NodeId> = voters.into_iter().collect();
        MajorityConfig {
            voters: set.into_iter().collect(),
        }
    }

    /// The voters, in id order.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Whether `id` votes here.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index acknowledged by a majority, given each voter's
    /// acknowledged index (`None`: nothing acknowledged). An empty
    /// configuration returns `Index::new(u64::MAX)` (it agrees to everything).
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let count = self.voters.len();
        if count == 0 {
            return Index::new(u64::MAX);
        }
        let mut stack = [Index::ZERO; STACK_VOTERS];
        let mut heap = Vec::new();
        let indexes: &mut [Index] = if count <= STACK_VOTERS {
            &mut stack[..count]
        } else {
            heap.resize(count, Index::ZERO);
            &mut heap
        };
        for (slot, id) in indexes.iter_mut().zip(&self.voters) {
            *slot = acked(*id).unwrap_or(Index::ZERO);
        }
        quorum_index(indexes)
    }

    /// The election result, given each voter's vote (`None`: not yet
    /// answered). An empty configuration wins.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0usize, 0usize);
        for id in &self.voters {
            match vote(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.quorum();
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_of_three_decide() {
        let config = MajorityConfig::new([1, 2, 3].map(NodeId::new));
        let acked = |id: NodeId| Some(Index::new(10 * id.get()));
        // Two of three have acknowledged index 20 or more.
        assert_eq!(config.committed_index(acked), Index::new(20));
        let votes = |id: NodeId| if id.get() == 3 { Some(false) } else { Some(true) };
        assert_eq!(config.vote_result(votes), VoteResult::Won);
    }
}
