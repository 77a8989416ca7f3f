//! Laws of membership changes: `confchange::apply` against a naive
//! reference, and the change codec. (The laws of quorum arithmetic and of
//! the inflights window are unit tests beside that private code, in
//! `src/quorum/properties.rs` and `src/tracker/inflights.rs`.)

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
                incoming: ids(conf.voters()),
                outgoing: ids(conf.voters_outgoing()),
                learners: ids(conf.learners()),
                learners_next: ids(conf.learners_next()),
                auto_leave: conf.auto_leave(),
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
                ConfState::new(
                    voters.into_iter().map(NodeId::new),
                    learners.into_iter().map(NodeId::new),
                )
                .expect("learners are not voters")
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
