//! Laws of quorum arithmetic, checked against a naive reference written
//! from the definitions (a majority acknowledged it; a quorum granted or
//! can no longer grant).

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::quorum::{JointConfig, MajorityConfig, VoteResult};
use crate::types::{Index, NodeId};

/// Voter ids with their acknowledged index (`None`: never acknowledged).
fn acks() -> impl Strategy<Value = BTreeMap<NodeId, Option<u64>>> {
    proptest::collection::btree_map(
        (1u64..12).prop_map(NodeId::new),
        proptest::option::of(0u64..20),
        0..9,
    )
}

/// Naive committed index: the largest `i` such that more than half the
/// voters acknowledged at least `i`.
fn naive_committed(voters: &[NodeId], acked: &BTreeMap<NodeId, Option<u64>>) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut best = 0;
    for candidate in 0..=20u64 {
        let count = voters
            .iter()
            .filter(|id| acked.get(id).copied().flatten().unwrap_or(0) >= candidate)
            .count();
        if count * 2 > voters.len() {
            best = candidate;
        }
    }
    best
}

/// Naive vote result by enumerating how the missing votes could go.
fn naive_vote(voters: &[NodeId], votes: &BTreeMap<NodeId, Option<bool>>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let granted = voters
        .iter()
        .filter(|id| votes.get(id) == Some(&Some(true)))
        .count();
    let missing = voters
        .iter()
        .filter(|id| !matches!(votes.get(id), Some(Some(_))))
        .count();
    let majority = |count: usize| count * 2 > voters.len();
    if majority(granted) {
        VoteResult::Won
    } else if majority(granted + missing) {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

fn votes() -> impl Strategy<Value = BTreeMap<NodeId, Option<bool>>> {
    proptest::collection::btree_map(
        (1u64..12).prop_map(NodeId::new),
        proptest::option::of(any::<bool>()),
        0..9,
    )
}

fn lookup_ack(acked: &BTreeMap<NodeId, Option<u64>>) -> impl Fn(NodeId) -> Option<Index> + '_ {
    |id| acked.get(&id).copied().flatten().map(Index::new)
}

fn lookup_vote(votes: &BTreeMap<NodeId, Option<bool>>) -> impl Fn(NodeId) -> Option<bool> + '_ {
    |id| votes.get(&id).copied().flatten()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn majority_committed_index_matches_the_naive_reference(
        voters in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..8),
        acked in acks(),
    ) {
        let voters: Vec<NodeId> = voters.into_iter().collect();
        let config = MajorityConfig::new(voters.iter().copied());
        prop_assert_eq!(config.committed_index(lookup_ack(&acked)).get(), naive_committed(&voters, &acked));
    }

    #[test]
    fn joint_committed_index_is_the_minimum_of_both_halves(
        incoming in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..6),
        outgoing in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..6),
        acked in acks(),
    ) {
        let incoming: Vec<NodeId> = incoming.into_iter().collect();
        let outgoing: Vec<NodeId> = outgoing.into_iter().collect();
        let joint = JointConfig::new(
            MajorityConfig::new(incoming.iter().copied()),
            MajorityConfig::new(outgoing.iter().copied()),
        );
        let expected = naive_committed(&incoming, &acked).min(naive_committed(&outgoing, &acked));
        prop_assert_eq!(joint.committed_index(lookup_ack(&acked)).get(), expected);
        // A joint configuration with an empty outgoing half is its incoming half.
        let simple = JointConfig::new(MajorityConfig::new(incoming.iter().copied()), MajorityConfig::default());
        prop_assert_eq!(
            simple.committed_index(lookup_ack(&acked)),
            MajorityConfig::new(incoming.iter().copied()).committed_index(lookup_ack(&acked))
        );
    }

    #[test]
    fn majority_vote_result_matches_the_naive_reference(
        voters in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..8),
        votes in votes(),
    ) {
        let voters: Vec<NodeId> = voters.into_iter().collect();
        let config = MajorityConfig::new(voters.iter().copied());
        prop_assert_eq!(config.vote_result(lookup_vote(&votes)), naive_vote(&voters, &votes));
    }

    #[test]
    fn joint_vote_needs_both_halves(
        incoming in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..6),
        outgoing in proptest::collection::btree_set((1u64..12).prop_map(NodeId::new), 0..6),
        votes in votes(),
    ) {
        let incoming: Vec<NodeId> = incoming.into_iter().collect();
        let outgoing: Vec<NodeId> = outgoing.into_iter().collect();
        let joint = JointConfig::new(
            MajorityConfig::new(incoming.iter().copied()),
            MajorityConfig::new(outgoing.iter().copied()),
        );
        let (a, b) = (naive_vote(&incoming, &votes), naive_vote(&outgoing, &votes));
        let expected = if a == VoteResult::Lost || b == VoteResult::Lost {
            VoteResult::Lost
        } else if a == VoteResult::Won && b == VoteResult::Won {
            VoteResult::Won
        } else {
            VoteResult::Pending
        };
        prop_assert_eq!(joint.vote_result(lookup_vote(&votes)), expected);
    }
}
