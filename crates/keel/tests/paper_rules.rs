//! One test per rule of the Raft paper's Figure 2 and §5 ("In Search of an
//! Understandable Consensus Algorithm", Ongaro & Ousterhout, 2014). Each test
//! names the section it checks. Invariants are checked after every step by
//! the cluster driver and explicitly for single nodes.

use bytes::Bytes;
use keel::testing::{entries, Cluster, ClusterOptions};
use keel::{
    Append, AppendResponse, ConfState, Config, ElectionReason, Envelope, HardState, Index, LogId, MemStorage,
    Message, NodeId, RawNode, Role, StorageWrite, Term, VoteKind, VoteRequest, VoteResponse,
};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Term::new(term), Index::new(index))
}

/// A three-voter cluster without pre-vote, so elections are the plain §5.2
/// algorithm.
fn plain_cluster(count: u64) -> Cluster {
    let mut options = ClusterOptions::voters(count);
    options.config.pre_vote = false;
    options.config.check_quorum = false;
    Cluster::new(options).unwrap()
}

/// A single node (id 1 of voters 1, 2, 3) whose storage holds `log` and
/// `hard_state`; pre-vote and check-quorum off.
fn node_with_log(log: &[keel::Entry], hard_state: HardState) -> RawNode<MemStorage> {
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(id)));
    storage.append(log).unwrap();
    storage.set_hard_state(hard_state).unwrap();
    let mut config = Config::new(id(1));
    config.pre_vote = false;
    config.check_quorum = false;
    RawNode::new(&config, storage).unwrap()
}

fn vote_request(from: u64, term: u64, last_log: LogId) -> Envelope {
    Envelope::new(
        id(from),
        id(1),
        Term::new(term),
        Message::Vote(VoteRequest {
            kind: VoteKind::Vote,
            last_log,
            reason: ElectionReason::Timeout,
            priority: 0,
        }),
    )
}

/// The vote responses `node` will send, as `(to, granted)`.
fn vote_responses(node: &mut RawNode<MemStorage>) -> Vec<(NodeId, bool)> {
    let ready = node.ready().unwrap();
    ready
        .messages()
        .iter()
        .chain(ready.persisted_messages())
        .filter_map(|envelope| match envelope.message {
            Message::VoteResponse(VoteResponse { granted, .. }) => Some((envelope.to, granted)),
            _ => None,
        })
        .collect()
}

#[test]
fn section_5_2_follower_that_times_out_becomes_candidate_and_wins_with_a_majority() {
    let mut cluster = plain_cluster(3);
    // Tick node 1 alone past its largest possible election timeout.
    for _ in 0..20 {
        cluster.tick(id(1)).unwrap();
    }
    let status = cluster.node(id(1)).status();
    assert_eq!(status.role, Role::Candidate, "timed-out follower campaigns");
    assert_eq!(
        status.hard_state.term,
        Term::new(1),
        "candidate increments its term"
    );
    assert_eq!(status.hard_state.vote, Some(id(1)), "candidate votes for itself");
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(1)).status().role, Role::Leader);
    for follower in [2, 3] {
        let status = cluster.node(id(follower)).status();
        assert_eq!(status.role, Role::Follower);
        assert_eq!(status.leader, Some(id(1)));
        assert_eq!(status.hard_state.term, Term::new(1));
    }
}

#[test]
fn section_5_2_a_server_votes_for_at_most_one_candidate_per_term() {
    let mut node = node_with_log(&[], HardState::default());
    node.step(vote_request(2, 1, LogId::default())).unwrap();
    node.step(vote_request(3, 1, LogId::default())).unwrap();
    // A repeated request from the granted candidate is granted again.
    node.step(vote_request(2, 1, LogId::default())).unwrap();
    node.check_invariants().unwrap();
    assert_eq!(
        vote_responses(&mut node),
        vec![(id(2), true), (id(3), false), (id(2), true)]
    );
    assert_eq!(node.status().hard_state.vote, Some(id(2)));
}

#[test]
fn section_5_2_randomized_election_timeouts_differ_between_nodes() {
    let cluster = Cluster::new(ClusterOptions::voters(5)).unwrap();
    let timeouts: std::collections::BTreeSet<u64> = cluster
        .ids()
        .into_iter()
        .map(|node| cluster.node(node).status().randomized_election_timeout_ticks)
        .collect();
    assert!(
        timeouts.len() > 1,
        "all five nodes drew the same timeout: {timeouts:?}"
    );
}

#[test]
fn section_5_2_heartbeats_keep_followers_from_campaigning() {
    let mut cluster = plain_cluster(3);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    for _ in 0..200 {
        cluster.tick_all().unwrap();
        cluster.stabilize().unwrap();
    }
    let status = cluster.node(id(1)).status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(
        status.hard_state.term,
        Term::new(1),
        "no election happened while the leader was alive"
    );
}

#[test]
fn section_5_1_a_higher_term_turns_a_leader_into_a_follower() {
    let mut cluster = plain_cluster(3);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    let higher = Envelope::new(
        id(2),
        id(1),
        Term::new(5),
        Message::VoteResponse(VoteResponse {
            kind: VoteKind::Vote,
            granted: false,
        }),
    );
    cluster.node_mut(id(1)).step(higher).unwrap();
    let status = cluster.node(id(1)).status();
    assert_eq!(status.role, Role::Follower);
    assert_eq!(status.hard_state.term, Term::new(5));
    assert_eq!(status.hard_state.vote, None);
}

#[test]
fn section_5_1_requests_with_a_stale_term_are_rejected() {
    let mut node = node_with_log(
        &entries(2, 1, 2),
        HardState {
            term: Term::new(3),
            vote: None,
            commit: Index::ZERO,
        },
    );
    let stale_append = Envelope::new(
        id(2),
        id(1),
        Term::new(2),
        Message::Append(Append {
            prev: log_id(2, 2),
            entries: entries(2, 3, 3),
            commit: Index::new(3),
        }),
    );
    node.step(stale_append).unwrap();
    node.step(vote_request(3, 2, log_id(2, 9))).unwrap();
    node.check_invariants().unwrap();
    let status = node.status();
    assert_eq!(status.last_index, Index::new(2), "stale append not applied");
    assert_eq!(status.hard_state.commit, Index::ZERO);
    assert_eq!(status.hard_state.vote, None, "no vote granted in a stale term");
    let ready = node.ready().unwrap();
    // The stale leader is told the current term so it steps down.
    assert!(ready
        .messages()
        .iter()
        .all(|envelope| envelope.term == Term::new(3) && envelope.to == id(2)));
}

#[test]
fn section_5_3_append_is_rejected_when_the_previous_entry_does_not_match() {
    // Our log: terms 1,1,2 at indexes 1..3.
    let mut log = entries(1, 1, 2);
    log.extend(entries(2, 3, 3));
    let mut node = node_with_log(
        &log,
        HardState {
            term: Term::new(3),
            vote: None,
            commit: Index::ZERO,
        },
    );
    // The leader of term 3 believes index 3 has term 3.
    let append = Envelope::new(
        id(2),
        id(1),
        Term::new(3),
        Message::Append(Append {
            prev: log_id(3, 3),
            entries: entries(3, 4, 4),
            commit: Index::ZERO,
        }),
    );
    node.step(append).unwrap();
    node.check_invariants().unwrap();
    let ready = node.ready().unwrap();
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
            rejected: Index::new(3),
            // Index 3 has term 2 <= 3: the logs may match there.
            hint: log_id(2, 3),
        }
    );
    assert!(ready.entries().is_empty(), "nothing appended on a mismatch");
}

#[test]
fn section_5_3_conflicting_entries_are_deleted_and_replaced() {
    let mut log = entries(1, 1, 2);
    log.extend(entries(2, 3, 5));
    let mut node = node_with_log(
        &log,
        HardState {
            term: Term::new(3),
            vote: None,
            commit: Index::new(1),
        },
    );
    let append = Envelope::new(
        id(2),
        id(1),
        Term::new(3),
        Message::Append(Append {
            prev: log_id(1, 2),
            entries: entries(3, 3, 4),
            commit: Index::new(4),
        }),
    );
    node.step(append).unwrap();
    node.check_invariants().unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(ready.entries(), entries(3, 3, 4).as_slice());
    let status = node.status();
    assert_eq!(
        status.last_index,
        Index::new(4),
        "the conflicting suffix 3..5 is gone"
    );
    assert_eq!(
        status.hard_state.commit,
        Index::new(4),
        "commit = min(leader commit, last new)"
    );
}

#[test]
fn section_5_3_leader_repairs_divergent_followers_and_logs_match() {
    let mut cluster = plain_cluster(3);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    // Node 1 appends entries that only it holds, then loses leadership.
    cluster.isolate(id(1));
    for round in 0..3 {
        cluster
            .propose(id(1), Bytes::from(format!("lost {round}")))
            .unwrap();
    }
    cluster.stabilize().unwrap();
    cluster.campaign(id(2)).unwrap();
    cluster.stabilize().unwrap();
    cluster.propose(id(2), Bytes::from_static(b"kept")).unwrap();
    cluster.stabilize().unwrap();
    cluster.heal();
    // Node 1 learns the higher term from a heartbeat and is repaired.
    for _ in 0..3 {
        cluster.tick(id(2)).unwrap();
        cluster.stabilize().unwrap();
    }
    let expected = cluster.node(id(2)).storage().all_entries();
    for node in [1, 3] {
        assert_eq!(
            cluster.node(id(node)).storage().all_entries(),
            expected,
            "log of {node}"
        );
    }
    assert!(expected.iter().all(|entry| !entry.data.starts_with(b"lost")));
}

#[test]
fn section_5_4_1_vote_withheld_from_a_candidate_with_an_older_last_term() {
    let mut node = node_with_log(
        &entries(2, 1, 3),
        HardState {
            term: Term::new(2),
            vote: None,
            commit: Index::ZERO,
        },
    );
    // A longer log with an older last term is less up to date.
    node.step(vote_request(2, 3, log_id(1, 10))).unwrap();
    node.check_invariants().unwrap();
    assert_eq!(vote_responses(&mut node), vec![(id(2), false)]);
    assert_eq!(node.status().hard_state.vote, None);
}

#[test]
fn section_5_4_1_vote_withheld_from_a_candidate_with_a_shorter_log_of_the_same_term() {
    let mut node = node_with_log(
        &entries(2, 1, 3),
        HardState {
            term: Term::new(2),
            vote: None,
            commit: Index::ZERO,
        },
    );
    node.step(vote_request(2, 3, log_id(2, 2))).unwrap();
    node.step(vote_request(3, 3, log_id(2, 3))).unwrap();
    node.check_invariants().unwrap();
    assert_eq!(vote_responses(&mut node), vec![(id(2), false), (id(3), true)]);
}

#[test]
fn section_5_4_2_entries_of_earlier_terms_are_not_committed_by_counting() {
    // Figure 8: node 1 leads term 2 with an entry of term 1 at index 1 that a
    // majority holds, plus nothing of its own term yet acknowledged.
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(id)));
    storage.append(&entries(1, 1, 1)).unwrap();
    storage
        .set_hard_state(HardState {
            term: Term::new(1),
            vote: None,
            commit: Index::ZERO,
        })
        .unwrap();
    let mut config = Config::new(id(1));
    config.pre_vote = false;
    let mut leader = RawNode::new(&config, storage).unwrap();
    leader.campaign().unwrap();
    let vote = Envelope::new(
        id(2),
        id(1),
        Term::new(2),
        Message::VoteResponse(VoteResponse {
            kind: VoteKind::Vote,
            granted: true,
        }),
    );
    leader.step(vote).unwrap();
    assert_eq!(leader.status().role, Role::Leader);
    let ready = leader.ready().unwrap();
    leader.storage_mut().append(ready.entries()).unwrap();
    leader.advance(ready).unwrap();
    // Node 2 acknowledges index 1 (the old entry) but not the new empty
    // entry at index 2.
    let ack = |last: u64| {
        Envelope::new(
            id(2),
            id(1),
            Term::new(2),
            Message::AppendResponse(AppendResponse::Accepted {
                last_index: Index::new(last),
            }),
        )
    };
    leader.step(ack(1)).unwrap();
    leader.check_invariants().unwrap();
    assert_eq!(
        leader.status().hard_state.commit,
        Index::ZERO,
        "an entry of term 1 is not committed by counting replicas in term 2"
    );
    // Once an entry of the current term is on a majority, everything up to
    // it commits (Log Matching carries the earlier entry).
    leader.step(ack(2)).unwrap();
    leader.check_invariants().unwrap();
    assert_eq!(leader.status().hard_state.commit, Index::new(2));
}

#[test]
fn section_5_3_leader_commits_once_a_majority_stores_an_entry_and_followers_apply_it() {
    let mut cluster = plain_cluster(5);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    // Two of four followers unreachable: 1, 2, 3 still form a majority.
    cluster.isolate(id(4));
    cluster.isolate(id(5));
    cluster.propose(id(1), Bytes::from_static(b"x")).unwrap();
    cluster.stabilize().unwrap();
    for node in [1, 2, 3] {
        let applied = cluster.applied(id(node));
        assert_eq!(
            applied.last().unwrap().data,
            Bytes::from_static(b"x"),
            "node {node} applied"
        );
    }
    // Without a majority nothing more commits.
    cluster.isolate(id(3));
    cluster.propose(id(1), Bytes::from_static(b"y")).unwrap();
    cluster.stabilize().unwrap();
    assert_ne!(
        cluster.applied(id(1)).last().unwrap().data,
        Bytes::from_static(b"y")
    );
}

#[test]
fn section_5_4_leader_completeness_across_repeated_leader_crashes() {
    let mut cluster = plain_cluster(5);
    let mut committed: Vec<Bytes> = Vec::new();
    let mut candidate = 1;
    for round in 0..8u64 {
        cluster.campaign(id(candidate)).unwrap();
        cluster.stabilize().unwrap();
        let leader = cluster.leader().unwrap();
        let data = Bytes::from(format!("round {round}"));
        cluster.propose(leader, data.clone()).unwrap();
        cluster.stabilize().unwrap();
        committed.push(data);
        // Crash the leader: cut it off, restart it, and let another campaign.
        cluster.isolate(leader);
        cluster.restart(leader).unwrap();
        candidate = leader.get() % 5 + 1;
        cluster.heal();
        // Every committed entry is in the log of whoever leads next.
        cluster.campaign(id(candidate)).unwrap();
        cluster.stabilize().unwrap();
        let new_leader = cluster.leader().unwrap();
        let log = cluster.node(new_leader).storage().all_entries();
        for data in &committed {
            assert!(
                log.iter().any(|entry| entry.data == *data),
                "leader {new_leader} lacks {data:?}"
            );
        }
    }
}

#[test]
fn section_5_5_leader_retries_a_follower_that_was_down() {
    let mut cluster = plain_cluster(3);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.isolate(id(3));
    for round in 0..5 {
        cluster
            .propose(id(1), Bytes::from(format!("entry {round}")))
            .unwrap();
        cluster.stabilize().unwrap();
    }
    cluster.heal();
    // Heartbeats reveal node 3 is behind; the leader sends what it lacks.
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    assert_eq!(cluster.applied(id(3)).len(), cluster.applied(id(1)).len());
    assert_eq!(
        cluster.node(id(3)).storage().all_entries(),
        cluster.node(id(1)).storage().all_entries()
    );
}
