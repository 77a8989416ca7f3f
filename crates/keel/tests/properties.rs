//! Laws of the pieces with laws: quorum arithmetic against a naive
//! reference, and the inflights window against a model.

use std::collections::{BTreeMap, VecDeque};

use keel::quorum::{JointConfig, MajorityConfig, VoteResult};
use keel::tracker::Inflights;
use keel::{Index, NodeId};
use proptest::prelude::*;

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

#[derive(Clone, Debug)]
enum InflightOperation {
    Add(u64),
    FreeUpTo(u64),
    FreeOldest,
    Reset,
}

fn inflight_operation() -> impl Strategy<Value = InflightOperation> {
    prop_oneof![
        4 => (1u64..200).prop_map(InflightOperation::Add),
        2 => (0u64..60).prop_map(InflightOperation::FreeUpTo),
        1 => Just(InflightOperation::FreeOldest),
        1 => Just(InflightOperation::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The window behaves like a simple queue with count and byte limits.
    #[test]
    fn inflights_behave_like_a_bounded_queue(
        max_messages in 1usize..8,
        max_bytes in 1u64..600,
        operations in proptest::collection::vec(inflight_operation(), 0..80),
    ) {
        let mut inflights = Inflights::new(max_messages, max_bytes);
        let mut model: VecDeque<(u64, u64)> = VecDeque::new();
        let mut next_index = 1u64;
        for operation in operations {
            match operation {
                InflightOperation::Add(bytes) => {
                    let model_bytes: u64 = model.iter().map(|(_, bytes)| bytes).sum();
                    let full = model.len() >= max_messages || model_bytes >= max_bytes;
                    prop_assert_eq!(inflights.is_full(), full);
                    if !full {
                        inflights.add(Index::new(next_index), bytes);
                        model.push_back((next_index, bytes));
                    }
                    next_index += 1 + bytes % 3;
                }
                InflightOperation::FreeUpTo(index) => {
                    inflights.free_up_to(Index::new(index));
                    while model.front().is_some_and(|(last, _)| *last <= index) {
                        model.pop_front();
                    }
                }
                InflightOperation::FreeOldest => {
                    inflights.free_oldest();
                    model.pop_front();
                }
                InflightOperation::Reset => {
                    inflights.reset();
                    model.clear();
                }
            }
            prop_assert_eq!(inflights.count(), model.len());
            prop_assert_eq!(inflights.bytes(), model.iter().map(|(_, bytes)| bytes).sum::<u64>());
            // Never more than the limits allow (bytes may overshoot by the
            // last message, which is what lets one large message through).
            prop_assert!(inflights.count() <= max_messages);
        }
    }
}
