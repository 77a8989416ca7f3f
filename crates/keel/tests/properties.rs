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

mod confchange_laws {
    use std::collections::BTreeSet;

    use keel::confchange::{apply, ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
    use keel::{ConfState, NodeId};
    use proptest::prelude::*;

    /// A naive model of a configuration: who votes in the incoming and
    /// outgoing halves, who learns, and who learns once the joint state is
    /// left.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Model {
        incoming: BTreeSet<u64>,
        outgoing: BTreeSet<u64>,
        learners: BTreeSet<u64>,
        learners_next: BTreeSet<u64>,
        auto_leave: bool,
    }

    impl Model {
        fn from(conf: &ConfState) -> Self {
            let ids = |set: &BTreeSet<NodeId>| set.iter().map(|id| id.get()).collect();
            Model {
                incoming: ids(&conf.voters),
                outgoing: ids(&conf.voters_outgoing),
                learners: ids(&conf.learners),
                learners_next: ids(&conf.learners_next),
                auto_leave: conf.auto_leave,
            }
        }

        fn role_after(&self, id: u64) -> &'static str {
            if self.incoming.contains(&id) {
                "voter"
            } else if self.learners.contains(&id) || self.learners_next.contains(&id) {
                "learner"
            } else {
                "none"
            }
        }
    }

    /// The reference: what each node's role must be after the change, and
    /// whether the change is allowed, written from the rules rather than
    /// from the implementation.
    fn reference(conf: &ConfState, change: &ConfChange) -> Option<Model> {
        let before = Model::from(conf);
        let joint_before = !before.outgoing.is_empty();
        if change.changes.is_empty() {
            if !joint_before {
                return None;
            }
            let mut after = before.clone();
            after.learners.extend(before.learners_next.iter().copied());
            after.learners_next.clear();
            after.outgoing.clear();
            after.auto_leave = false;
            return Some(after);
        }
        let ids: Vec<u64> = change.changes.iter().map(|single| single.node_id.get()).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        if joint_before || unique.len() != ids.len() || unique.contains(&0) {
            return None;
        }
        let entering_joint = change.changes.len() > 1 || change.transition != ConfChangeTransition::Auto;
        let mut after = before.clone();
        if entering_joint {
            after.outgoing = before.incoming.clone();
            after.auto_leave = change.transition != ConfChangeTransition::JointExplicit;
        }
        for single in &change.changes {
            let id = single.node_id.get();
            after.incoming.remove(&id);
            after.learners.remove(&id);
            after.learners_next.remove(&id);
            match single.kind {
                ConfChangeKind::AddVoter => {
                    after.incoming.insert(id);
                }
                ConfChangeKind::AddLearner if after.outgoing.contains(&id) => {
                    after.learners_next.insert(id);
                }
                ConfChangeKind::AddLearner => {
                    after.learners.insert(id);
                }
                ConfChangeKind::RemoveNode => {}
            }
        }
        if after.incoming.is_empty() {
            return None;
        }
        if !entering_joint && after.incoming.symmetric_difference(&before.incoming).count() > 1 {
            return None;
        }
        Some(after)
    }

    fn conf_state() -> impl Strategy<Value = ConfState> {
        (
            proptest::collection::btree_set(1u64..7, 1..5),
            proptest::collection::btree_set(1u64..7, 0..3),
        )
            .prop_map(|(voters, learners)| {
                let learners: BTreeSet<u64> = learners.difference(&voters).copied().collect();
                ConfState {
                    voters: voters.into_iter().map(NodeId::new).collect(),
                    learners: learners.into_iter().map(NodeId::new).collect(),
                    ..ConfState::default()
                }
            })
    }

    fn conf_change() -> impl Strategy<Value = ConfChange> {
        let single = (0u8..3, 0u64..7).prop_map(|(kind, node)| ConfChangeSingle {
            kind: match kind {
                0 => ConfChangeKind::AddVoter,
                1 => ConfChangeKind::AddLearner,
                _ => ConfChangeKind::RemoveNode,
            },
            node_id: NodeId::new(node),
        });
        let transition = prop_oneof![
            Just(ConfChangeTransition::Auto),
            Just(ConfChangeTransition::JointImplicit),
            Just(ConfChangeTransition::JointExplicit),
        ];
        (transition, proptest::collection::vec(single, 0..4)).prop_map(|(transition, changes)| ConfChange {
            transition,
            changes,
            context: bytes::Bytes::new(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// `apply` agrees with the naive reference on whether a change is
        /// allowed and on everyone's role afterwards, including through a
        /// joint state and out of it.
        #[test]
        fn apply_matches_the_reference(conf in conf_state(), first in conf_change(), second in conf_change()) {
            let mut current = conf;
            for change in [first, second] {
                let expected = reference(&current, &change);
                match apply(&current, &change) {
                    Ok(next) => {
                        prop_assert!(next.validate().is_ok(), "invalid result {next:?}");
                        let model = Model::from(&next);
                        prop_assert_eq!(Some(model.clone()), expected, "change {:?} on {:?}", change, current);
                        for id in 1..7 {
                            let in_change = change.changes.iter().any(|single| single.node_id.get() == id);
                            if !in_change && !change.changes.is_empty() {
                                prop_assert_eq!(model.role_after(id), Model::from(&current).role_after(id));
                            }
                        }
                        current = next;
                    }
                    Err(_) => prop_assert_eq!(expected, None, "refused {:?} on {:?}", change, current),
                }
            }
        }

        /// Encoding round-trips, and arbitrary bytes never panic the decoder.
        #[test]
        fn codec_round_trips_and_rejects_garbage(change in conf_change(), garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded = change.encode();
            prop_assert_eq!(ConfChange::decode(&encoded).unwrap(), change);
            let _ = ConfChange::decode(&bytes::Bytes::from(garbage));
        }
    }
}
