//! Bad input from peers: each kind is refused with an error or ignored per
//! the protocol, the node stays consistent, and nothing panics. The last
//! test throws random messages at nodes in every role.

use bytes::Bytes;
use keel::testing::{entries, Cluster, ClusterOptions};
use keel::{
    Append, AppendResponse, ElectionReason, Entry, EntryKind, Envelope, Error, Heartbeat, HeartbeatResponse,
    Index, LogId, Message, NodeId, ReadIndexRequest, Role, SnapshotMetadata, StepError, Term, VoteKind,
    VoteRequest, VoteResponse,
};
use proptest::prelude::*;

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// A settled three-node cluster led by node 1 in term 1: the bootstrap
/// snapshot at index 1, then entries 2 (the leader's empty entry) to 4.
fn led_cluster() -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions::voters(3)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    for round in 0..2 {
        cluster.propose(id(1), Bytes::from(format!("v{round}"))).unwrap();
        cluster.stabilize().unwrap();
    }
    cluster
}

fn append(from: u64, to: u64, term: u64, prev: LogId, entries: Vec<Entry>, commit: u64) -> Envelope {
    Envelope::new(
        id(from),
        id(to),
        Term::new(term),
        Message::Append(Append {
            prev,
            entries,
            commit: Index::new(commit),
        }),
    )
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Term::new(term), Index::new(index))
}

#[test]
fn message_for_another_node_is_refused_and_changes_nothing() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(2)).status();
    let envelope = append(1, 3, 1, log_id(1, 3), entries(1, 4, 4), 3);
    let error = cluster.node_mut(id(2)).step(envelope).unwrap_err();
    assert!(
        matches!(error, Error::Step(StepError::WrongRecipient { .. })),
        "{error}"
    );
    assert_eq!(cluster.node(id(2)).status(), before);
    assert!(!cluster.node(id(2)).has_ready());
}

#[test]
fn message_claiming_to_come_from_the_node_itself_is_refused() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(2)).status();
    let envelope = append(2, 2, 9, log_id(1, 3), Vec::new(), 3);
    let error = cluster.node_mut(id(2)).step(envelope).unwrap_err();
    assert!(
        matches!(error, Error::Step(StepError::Malformed { .. })),
        "{error}"
    );
    assert_eq!(cluster.node(id(2)).status(), before);
}

#[test]
fn response_from_a_non_member_is_refused() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(1)).status();
    let response = Envelope::new(
        id(9),
        id(1),
        Term::new(1),
        Message::AppendResponse(AppendResponse::Accepted {
            last_index: Index::new(3),
        }),
    );
    let error = cluster.node_mut(id(1)).step(response).unwrap_err();
    assert_eq!(
        error.to_string(),
        Error::Step(StepError::UnknownPeer(id(9))).to_string()
    );
    assert_eq!(cluster.node(id(1)).status(), before);
}

#[test]
fn acknowledgement_beyond_the_leaders_log_is_refused() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(1)).status();
    let response = Envelope::new(
        id(2),
        id(1),
        Term::new(1),
        Message::AppendResponse(AppendResponse::Accepted {
            last_index: Index::new(1_000),
        }),
    );
    let error = cluster.node_mut(id(1)).step(response).unwrap_err();
    assert!(
        matches!(error, Error::Step(StepError::Malformed { .. })),
        "{error}"
    );
    assert_eq!(cluster.node(id(1)).status(), before);
}

#[test]
fn append_with_gaps_or_bad_terms_is_refused_and_the_log_is_unchanged() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(2)).status();
    let gap = append(1, 2, 1, log_id(1, 3), vec![keel::testing::entry(1, 5)], 3);
    let future_term = append(1, 2, 1, log_id(1, 3), entries(7, 4, 4), 3);
    let decreasing = append(1, 2, 1, log_id(1, 3), vec![keel::testing::entry(0, 4)], 3);
    for envelope in [gap, future_term, decreasing] {
        let error = cluster.node_mut(id(2)).step(envelope).unwrap_err();
        assert!(
            matches!(error, Error::Step(StepError::Malformed { .. })),
            "{error}"
        );
        cluster.check_invariants();
    }
    assert_eq!(cluster.node(id(2)).status(), before);
}

#[test]
fn append_beyond_the_log_is_rejected_with_a_hint_not_a_panic() {
    let mut cluster = led_cluster();
    let envelope = append(1, 2, 1, log_id(1, 50), entries(1, 51, 52), 52);
    cluster.node_mut(id(2)).step(envelope).unwrap();
    cluster.check_invariants();
    let ready = cluster.node_mut(id(2)).ready().unwrap();
    let response = ready
        .persisted_messages()
        .iter()
        .find_map(|envelope| match envelope.message {
            Message::AppendResponse(response) => Some(response),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        response,
        AppendResponse::Rejected {
            rejected: Index::new(50),
            hint: log_id(1, 4),
        }
    );
    assert_eq!(cluster.node(id(2)).status().last_index, Index::new(4));
}

#[test]
fn entries_rewriting_committed_entries_are_ignored() {
    let mut cluster = led_cluster();
    let committed = cluster.node(id(2)).status().hard_state.commit;
    assert_eq!(committed, Index::new(4));
    let before = cluster.node(id(2)).storage().all_entries();
    // A "leader" of term 2 claims index 1 matches and rewrites committed
    // indexes 2 to 4. Committed entries never change: the follower only
    // answers with its commit index.
    let rewrite = append(3, 2, 2, log_id(1, 1), entries(2, 2, 4), 4);
    cluster.node_mut(id(2)).step(rewrite).unwrap();
    cluster.check_invariants();
    let ready = cluster.node_mut(id(2)).ready().unwrap();
    assert!(ready.entries().is_empty());
    let response = ready
        .persisted_messages()
        .iter()
        .find_map(|envelope| match envelope.message {
            Message::AppendResponse(response) => Some(response),
            _ => None,
        });
    assert_eq!(
        response,
        Some(AppendResponse::Accepted {
            last_index: committed
        })
    );
    assert_eq!(cluster.node(id(2)).storage().all_entries(), before);
}

#[test]
fn heartbeat_commit_beyond_the_log_is_capped() {
    let mut cluster = led_cluster();
    let heartbeat = Envelope::new(
        id(1),
        id(2),
        Term::new(1),
        Message::Heartbeat(Heartbeat {
            commit: Index::new(999),
            read_round: None,
        }),
    );
    cluster.node_mut(id(2)).step(heartbeat).unwrap();
    cluster.check_invariants();
    assert_eq!(cluster.node(id(2)).status().hard_state.commit, Index::new(4));
}

#[test]
fn duplicated_and_reordered_appends_leave_logs_consistent() {
    let mut cluster = led_cluster();
    cluster.isolate(id(3));
    for round in 0..4 {
        cluster.propose(id(1), Bytes::from(format!("w{round}"))).unwrap();
        cluster.process_ready(id(1)).unwrap();
    }
    cluster.heal();
    let mut in_flight = cluster.take_in_flight();
    // Deliver every message twice, the second copy in reverse order.
    let mut duplicated = in_flight.clone();
    duplicated.reverse();
    in_flight.extend(duplicated);
    cluster.inject(in_flight);
    cluster.stabilize().unwrap();
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    let leader_log = cluster.node(id(1)).storage().all_entries();
    for node in [2, 3] {
        assert_eq!(cluster.node(id(node)).storage().all_entries(), leader_log);
        assert_eq!(cluster.applied(id(node)), cluster.applied(id(1)));
    }
}

#[test]
fn an_invalid_membership_cannot_be_built() {
    // A snapshot's membership comes from a decoder (keel-net, keel-log),
    // which builds it through the validating constructors: an invalid one
    // is a decode error there (keel-net's codec tests) and never reaches
    // the core.
    assert!(keel::ConfState::new([id(1)], [id(1)]).is_err());
    assert!(keel::ConfState::joint([id(1)], [], [], [id(2)], false).is_err());
    assert!(keel::ConfState::new([NodeId::new(0)], []).is_err());
}

#[test]
fn a_snapshot_that_leaves_out_its_receiving_member_is_refused() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(2)).status();
    let metadata = SnapshotMetadata {
        last: log_id(1, 10),
        conf_state: keel::ConfState::with_voters([id(1), id(3)]),
    };
    let envelope = Envelope::new(id(1), id(2), Term::new(1), Message::Snapshot(Box::new(metadata)));
    let error = cluster.node_mut(id(2)).step(envelope).unwrap_err();
    assert!(
        matches!(error, Error::Step(StepError::Malformed { .. })),
        "{error}"
    );
    assert_eq!(cluster.node(id(2)).status().last_index, before.last_index);
}

#[test]
fn a_second_leader_in_the_same_term_is_reported_by_check_invariants() {
    let mut cluster = led_cluster();
    let envelope = append(3, 2, 1, log_id(1, 3), Vec::new(), 3);
    // Node 2 follows node 1 in term 1; node 3 claims to lead term 1 too.
    let _ = cluster.node_mut(id(2)).step(envelope);
    let violation = cluster.node_mut(id(2)).check_invariants().unwrap_err();
    assert!(violation.contains("two leaders in term"), "{violation}");
}

/// Handles a node's `Ready` like a synchronous runtime, without sending.
fn persist_and_advance(node: &mut keel::RawNode<keel::MemStorage>) {
    use keel::StorageWrite;
    if !node.has_ready() {
        return;
    }
    let ready = node.ready().unwrap();
    let storage = node.storage_mut();
    if let Some(snapshot) = ready.snapshot() {
        storage.apply_snapshot(snapshot.clone()).unwrap();
    }
    storage.append(ready.entries()).unwrap();
    if let Some(hard_state) = ready.hard_state() {
        storage.set_hard_state(hard_state).unwrap();
    }
    node.advance(ready).unwrap();
}

/// A random message of any kind, with small ids, terms and indexes so that
/// they collide with the node's real state often.
fn any_envelope() -> impl Strategy<Value = Envelope> {
    let small_entries = (0u64..4, 0u64..6, 0usize..4).prop_map(|(term, first, count)| {
        (0..count as u64)
            .map(|offset| {
                Entry::new(
                    Term::new(term + offset / 2),
                    Index::new(first + offset),
                    EntryKind::Normal,
                    Bytes::from_static(b"fuzz"),
                )
            })
            .collect::<Vec<_>>()
    });
    let log_id = (0u64..5, 0u64..8).prop_map(|(term, index)| LogId::new(Term::new(term), Index::new(index)));
    let message = prop_oneof![
        (log_id.clone(), small_entries, 0u64..8).prop_map(|(prev, entries, commit)| Message::Append(
            Append {
                prev,
                entries,
                commit: Index::new(commit)
            }
        )),
        (0u64..8).prop_map(|last| Message::AppendResponse(AppendResponse::Accepted {
            last_index: Index::new(last)
        })),
        (0u64..8, log_id.clone()).prop_map(|(rejected, hint)| Message::AppendResponse(
            AppendResponse::Rejected {
                rejected: Index::new(rejected),
                hint
            }
        )),
        (any::<bool>(), log_id, any::<bool>()).prop_map(|(pre, last_log, transfer)| Message::Vote(
            VoteRequest {
                kind: if pre { VoteKind::PreVote } else { VoteKind::Vote },
                last_log,
                reason: if transfer {
                    ElectionReason::Transfer
                } else {
                    ElectionReason::Timeout
                },
                priority: 0,
            }
        )),
        (any::<bool>(), any::<bool>()).prop_map(|(pre, granted)| Message::VoteResponse(VoteResponse {
            kind: if pre { VoteKind::PreVote } else { VoteKind::Vote },
            granted
        })),
        (0u64..10).prop_map(|commit| Message::Heartbeat(Heartbeat {
            commit: Index::new(commit),
            read_round: None
        })),
        Just(Message::HeartbeatResponse(HeartbeatResponse {
            read_round: None,
            priority: 0
        })),
        Just(Message::TimeoutNow),
        Just(Message::ReadIndex(ReadIndexRequest {
            context: Bytes::from_static(b"r")
        })),
    ];
    (1u64..5, 1u64..4, 0u64..5, message)
        .prop_map(|(from, to, term, message)| Envelope::new(id(from), id(to), Term::new(term), message))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever peers send, no node panics, and every invariant holds
    /// after every message (the cluster driver checks them).
    #[test]
    fn random_messages_never_panic_or_break_invariants(
        envelopes in proptest::collection::vec(any_envelope(), 1..40),
        ticks in 0u64..30,
    ) {
        let mut cluster = led_cluster();
        for _ in 0..ticks {
            cluster.tick(id(2)).unwrap();
        }
        for envelope in envelopes {
            // Refusals are fine; fatal errors are not.
            match cluster.node_mut(envelope.to).step(envelope) {
                Err(error) if error.is_fatal() => panic!("fatal error from peer input: {error}"),
                _ => {}
            }
            // Two-leader reports are expected from forged messages; other
            // invariants must hold.
            for node in cluster.ids() {
                if let Err(violation) = cluster.node_mut(node).check_invariants() {
                    prop_assert!(violation.contains("two leaders"), "{node}: {violation}");
                }
            }
            for node in cluster.ids() {
                persist_and_advance(cluster.node_mut(node));
            }
        }
        let roles: Vec<Role> = cluster.ids().iter().map(|node| cluster.node(*node).status().role).collect();
        prop_assert!(roles.len() == 3);
    }
}

/// A single-voter leader with a 100-byte cap on uncommitted proposals.
fn capped_leader() -> keel::RawNode<keel::MemStorage> {
    let mut config = keel::Config::new(id(1));
    config.max_uncommitted_bytes = 100;
    let storage = keel::MemStorage::new_with_conf_state(keel::ConfState::with_voters([id(1)]));
    let mut node = keel::RawNode::new(&config, storage).unwrap();
    node.campaign().unwrap();
    while node.has_ready() {
        let ready = node.ready().unwrap();
        keel::StorageWrite::append(node.storage_mut(), ready.entries()).unwrap();
        if let Some(hard_state) = ready.hard_state() {
            keel::StorageWrite::set_hard_state(node.storage_mut(), hard_state).unwrap();
        }
        node.advance(ready).unwrap();
    }
    assert_eq!(node.status().role, Role::Leader);
    node
}

#[test]
fn a_refused_batch_leaves_no_entry_behind() {
    let mut node = capped_leader();
    let last_before = node.status().last_index;
    node.propose_batch([Bytes::from(vec![1u8; 60])]).unwrap();
    // 60 bytes are uncommitted; 3 × 20 more would pass the cap of 100 only
    // after the first two entries: the whole batch is refused.
    let error = node
        .propose_batch((0..3).map(|_| Bytes::from(vec![2u8; 20])))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Proposal(keel::ProposalError::UncommittedLimit { .. })
        ),
        "{error}"
    );
    node.check_invariants().unwrap();
    assert_eq!(node.status().last_index, last_before.next());
    // The next proposal that fits takes the very next index.
    node.propose_batch([Bytes::from(vec![3u8; 30])]).unwrap();
    let ready = node.ready().unwrap();
    let appended: Vec<(u64, usize, u8)> = ready
        .entries()
        .iter()
        .map(|entry| (entry.index.get(), entry.data.len(), entry.data[0]))
        .collect();
    let first = last_before.get() + 1;
    assert_eq!(appended, vec![(first, 60, 1), (first + 1, 30, 3)]);
}

#[test]
fn a_forwarded_batch_with_two_membership_changes_is_refused_whole() {
    let mut cluster = led_cluster();
    let before = cluster.node(id(1)).status();
    let change = keel::ConfChange::add_learner(id(4));
    let proposal = |kind: EntryKind, data: Bytes| keel::ProposedEntry { kind, data };
    // A normal entry first: it is appended, then taken back out when the
    // second change is refused.
    let entries = vec![
        proposal(EntryKind::Normal, Bytes::from_static(b"x")),
        proposal(change.entry_kind(), change.encode()),
        proposal(change.entry_kind(), change.encode()),
        proposal(EntryKind::Normal, Bytes::from_static(b"y")),
    ];
    let envelope = Envelope::new(
        id(2),
        id(1),
        Term::new(1),
        Message::Propose(keel::ForwardedProposal {
            entries: entries.clone(),
        }),
    );
    cluster.node_mut(id(1)).step(envelope).unwrap();
    cluster.node_mut(id(1)).check_invariants().unwrap();
    // No trace in the leader's log...
    assert_eq!(cluster.node(id(1)).status(), before);
    // ...and the whole batch goes back to the follower that forwarded it,
    // in order, the entries after the bad one included.
    let mut ready = cluster.node_mut(id(1)).ready().unwrap();
    assert!(ready.entries().is_empty());
    let messages = ready.take_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].to, id(2));
    assert_eq!(
        messages[0].message,
        Message::ProposalRefused(keel::RefusedProposal {
            entries,
            reason: keel::RefusalReason::Invalid,
        })
    );
}
