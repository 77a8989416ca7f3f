//! Regressions for the safety and liveness bugs an outside-in suite found
//! (issue 12), each driven through the public API. With the feature
//! `planted-bugs`, the matching planted bug reverts each fix and the same
//! test asserts that the bug shows: proof that each test can fail
//! (`cargo test -p keel --features planted-bugs --test safety_regressions`).

use bytes::Bytes;
use keel::testing::{Cluster, ClusterOptions};
use keel::{
    AppendResponse, ConfChange, ConfState, Config, Entry, EntryKind, Envelope, Error, HardState, Heartbeat,
    Index, LogId, MemStorage, Message, NodeId, RawNode, ReadIndexRequest, ReadMode, Role, StepError,
    StorageError, StorageWrite, Term, VoteKind,
};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// Whether the planted bug `bug` is switched on in this build for `config`.
#[cfg(feature = "planted-bugs")]
fn plant(config: &mut Config, bug: keel::PlantedBug) -> bool {
    config.planted_bug = Some(bug);
    true
}

/// Without the feature there is nothing to plant: the fixed code runs.
#[cfg(not(feature = "planted-bugs"))]
fn plant(_config: &mut Config, _bug: &str) -> bool {
    false
}

macro_rules! planted_bug {
    ($name:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let bug = keel::PlantedBug::$name;
        #[cfg(not(feature = "planted-bugs"))]
        let bug = stringify!($name);
        bug
    }};
}

// ----- 1. no campaign with a committed, unapplied membership change ----------

/// Async-storage cluster driver that never applies on `held`: its commit
/// index runs ahead of its applied index, as with a slow state machine.
fn drive_holding_apply(cluster: &mut Cluster, held: NodeId) {
    for _ in 0..1_000 {
        let mut moved = false;
        for node in cluster.ids() {
            moved |= cluster.process_ready_async(node).unwrap().is_some();
            while cluster.persist_next(node).unwrap().is_some() {
                moved = true;
            }
            if node != held {
                while cluster.apply_next(node).unwrap().is_some() {
                    moved = true;
                }
            }
        }
        moved |= cluster.deliver_all().unwrap() > 0;
        if !moved {
            return;
        }
    }
    panic!("cluster did not settle");
}

/// Thesis §4.1 with etcd's rule: node 1 has committed `Remove(3)` and
/// `Add(4)` but not applied them; it must not campaign, or it wins with the
/// old voters {1, 3} while leader 2 commits with the new ones {2, 4}.
fn unapplied_conf_change_campaign(planted: bool) -> (Role, Role) {
    let mut options = ClusterOptions::voters(3);
    options.config.async_storage_writes = true;
    options.config.pre_vote = false;
    options.config.check_quorum = false;
    let mut cluster = Cluster::new(options.clone()).unwrap();
    if planted {
        let mut config = cluster.config(id(1)).clone();
        assert!(plant(&mut config, planted_bug!(CampaignWithUnappliedConfChange)));
        cluster.add_node(config, cluster.storage(id(1)).clone()).unwrap();
    }
    let mut empty = options.config.clone();
    empty.id = id(4);
    empty.rng_seed = 4;
    cluster.add_node(empty, MemStorage::new()).unwrap();
    cluster.campaign(id(2)).unwrap();
    drive_holding_apply(&mut cluster, id(1));
    assert_eq!(cluster.leader(), Some(id(2)));
    for change in [ConfChange::remove_node(id(3)), ConfChange::add_voter(id(4))] {
        cluster.node_mut(id(2)).propose_conf_change(&change).unwrap();
        drive_holding_apply(&mut cluster, id(1));
    }
    let status = cluster.node(id(1)).status();
    assert!(
        status.hard_state.commit > status.applied,
        "node 1 holds committed, unapplied changes"
    );
    assert_eq!(
        cluster
            .node(id(2))
            .status()
            .conf_state
            .voters()
            .iter()
            .map(|v| v.get())
            .collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    cluster.partition(&[vec![id(1), id(3)], vec![id(2), id(4)]]);
    cluster.campaign(id(1)).unwrap();
    drive_holding_apply(&mut cluster, id(1));
    (
        cluster.node(id(1)).status().role,
        cluster.node(id(2)).status().role,
    )
}

#[test]
fn thesis_4_1_no_campaign_while_a_committed_conf_change_is_unapplied() {
    let (one, two) = unapplied_conf_change_campaign(false);
    assert_eq!(one, Role::Follower, "node 1 must not campaign");
    assert_eq!(two, Role::Leader);
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_campaign_with_unapplied_conf_change_makes_two_leaders() {
    let (one, two) = unapplied_conf_change_campaign(true);
    assert_eq!(
        (one, two),
        (Role::Leader, Role::Leader),
        "the bug shows: two leaders"
    );
}

#[test]
fn a_node_campaigns_again_once_it_applied_the_change() {
    let mut options = ClusterOptions::voters(3);
    options.config.async_storage_writes = true;
    options.config.pre_vote = false;
    options.config.check_quorum = false;
    let mut cluster = Cluster::new(options).unwrap();
    cluster.campaign(id(2)).unwrap();
    drive_holding_apply(&mut cluster, id(1));
    cluster
        .node_mut(id(2))
        .propose_conf_change(&ConfChange::add_learner(id(5)))
        .unwrap();
    drive_holding_apply(&mut cluster, id(1));
    cluster.campaign(id(1)).unwrap();
    assert_eq!(cluster.node(id(1)).status().role, Role::Follower);
    // Also after a restart: the applied index starts at the snapshot.
    cluster.restart(id(1)).unwrap();
    cluster.campaign(id(1)).unwrap();
    assert_eq!(cluster.node(id(1)).status().role, Role::Follower);
    // TimeoutNow (a transfer) is refused the same way.
    let term = cluster.node(id(1)).status().hard_state.term;
    cluster
        .node_mut(id(1))
        .step(Envelope::new(id(2), id(1), term, Message::TimeoutNow))
        .unwrap();
    assert_eq!(cluster.node(id(1)).status().role, Role::Follower);
    cluster.stabilize().unwrap();
    cluster.campaign(id(1)).unwrap();
    assert_eq!(
        cluster.node(id(1)).status().role,
        Role::Candidate,
        "applied: may campaign"
    );
}

// ----- 2. a term is durable before its messages leave ------------------------

/// Voters {1}, learner {2}. Node 1 restarts and campaigns: it wins at once,
/// and its Ready carries the new term and an append to 2. Returns whether
/// any message of the new term was in `messages()` (send-now), and whether
/// the two nodes applied different entries at one index after node 1 crashed
/// before persisting and won the same term again.
fn single_voter_term_reuse(planted: bool) -> (bool, bool) {
    let mut options = ClusterOptions::voters(1);
    options.config.pre_vote = false;
    if planted {
        assert!(plant(&mut options.config, planted_bug!(SendBeforeTermDurable)));
    }
    let mut cluster = Cluster::new(options).unwrap();
    cluster.add_node(Config::new(id(2)), MemStorage::new()).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::add_learner(id(2)))
        .unwrap();
    cluster.stabilize().unwrap();
    cluster.restart(id(1)).unwrap();
    cluster.stabilize().unwrap();
    let term = cluster.node(id(1)).status().hard_state.term;
    cluster.campaign(id(1)).unwrap();
    cluster.propose(id(1), Bytes::from_static(b"A")).unwrap();
    // Hand out the Ready: send-now messages enter the network at once.
    let ready = cluster.process_ready_async(id(1)).unwrap().expect("a ready");
    let new_term = ready.hard_state().expect("the new term").term;
    assert_eq!(new_term, term.next());
    let early = ready.messages().iter().any(|envelope| envelope.term == new_term);
    cluster.deliver_all().unwrap();
    cluster.process_ready(id(2)).unwrap();
    // Crash before persisting: the term, the vote and "A" are lost.
    cluster.restart(id(1)).unwrap();
    // It re-applies its committed log (the learner's addition among it)
    // before it may campaign.
    cluster.process_ready(id(1)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.propose(id(1), Bytes::from_static(b"B")).unwrap();
    cluster.stabilize().unwrap();
    let payloads = |node: u64| -> Vec<(Index, Bytes)> {
        cluster
            .applied(id(node))
            .iter()
            .filter(|entry| entry.kind == EntryKind::Normal && !entry.data.is_empty())
            .map(|entry| (entry.index, entry.data.clone()))
            .collect()
    };
    let leader = payloads(1);
    let learner = payloads(2);
    let diverged = learner.iter().any(|(index, data)| {
        leader
            .iter()
            .any(|(other, value)| other == index && value != data)
    });
    (early, diverged)
}

#[test]
fn a_sole_voters_new_term_is_durable_before_its_messages_leave() {
    let (early, diverged) = single_voter_term_reuse(false);
    assert!(!early, "no message of the new term before it is durable");
    assert!(!diverged, "leader and learner agree");
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_send_before_term_durable_diverges() {
    let (early, diverged) = single_voter_term_reuse(true);
    assert!(
        early && diverged,
        "the bug shows: early={early} diverged={diverged}"
    );
}

// ----- 3. the lease is charged for a pause, and shortened by clock drift -----

/// A 3-node leader whose lease a heartbeat round confirmed; returns whether
/// a lease read is answered at once after `paused_ticks` were charged.
fn lease_read_after(paused_ticks: u64, planted: Option<&str>) -> bool {
    let mut options = ClusterOptions::voters(3);
    match planted {
        Some("LeaseIgnoresPause") => assert!(plant(&mut options.config, planted_bug!(LeaseIgnoresPause))),
        Some("LeaseNeverExpires") => assert!(plant(&mut options.config, planted_bug!(LeaseNeverExpires))),
        _ => {}
    }
    let mut cluster = Cluster::new(options).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.propose(id(1), Bytes::from_static(b"x")).unwrap();
    cluster.stabilize().unwrap();
    // A confirmed round: a safe read waits for it.
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"r0"), ReadMode::Safe)
        .unwrap();
    cluster.stabilize().unwrap();
    // The followers hear nothing more: the leader's clock alone moves.
    cluster.isolate(id(1));
    cluster.node_mut(id(1)).tick_by(paused_ticks).unwrap();
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"r1"), ReadMode::Lease)
        .unwrap();
    let ready = cluster.process_ready(id(1)).unwrap();
    ready.is_some_and(|ready| ready.read_states().iter().any(|state| state.context == "r1"))
}

#[test]
fn thesis_6_4_1_a_lease_lasts_the_election_timeout_shortened_by_the_drift_bound() {
    // Defaults: election timeout 10..20 ticks, drift bound 10 %:
    // (10 - 1) * 100 / 110 = 8 ticks of lease.
    assert!(lease_read_after(7, None), "inside the lease");
    assert!(!lease_read_after(8, None), "the lease has run out");
}

#[test]
fn a_pause_charged_with_tick_by_ends_the_lease() {
    assert!(!lease_read_after(1_000, None));
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_lease_bugs_answer_from_an_expired_lease() {
    assert!(lease_read_after(1_000, Some("LeaseIgnoresPause")));
    assert!(lease_read_after(1_000, Some("LeaseNeverExpires")));
}

// ----- 4. terms and indexes past the limits are refused ----------------------

/// A heartbeat that carries no commit index and no read round.
fn empty_heartbeat() -> Message {
    Message::Heartbeat(Heartbeat {
        commit: Index::ZERO,
        read_round: None,
    })
}

fn three_voter_node() -> RawNode<MemStorage> {
    let storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(id)));
    RawNode::new(&Config::new(id(1)), storage).unwrap()
}

#[test]
fn a_heartbeat_at_a_term_past_the_limit_is_refused_and_changes_nothing() {
    for term in [u64::MAX, Term::LIMIT.get() + 1] {
        let mut node = three_voter_node();
        let heartbeat = empty_heartbeat();
        let result = node.step(Envelope::new(id(2), id(1), Term::new(term), heartbeat));
        assert!(
            matches!(result, Err(Error::Step(StepError::Malformed { .. }))),
            "{result:?}"
        );
        assert_eq!(node.status().hard_state.term, Term::ZERO);
        // The node goes on: it campaigns normally.
        node.campaign().unwrap();
        assert_eq!(node.status().role, Role::PreCandidate);
        node.check_invariants().unwrap();
    }
}

#[test]
fn an_index_past_the_limit_is_refused() {
    let mut node = three_voter_node();
    let heartbeat = Message::Heartbeat(Heartbeat {
        commit: Index::new(u64::MAX),
        read_round: None,
    });
    let result = node.step(Envelope::new(id(2), id(1), Term::new(1), heartbeat));
    assert!(
        matches!(result, Err(Error::Step(StepError::Malformed { .. }))),
        "{result:?}"
    );
    assert_eq!(node.status().hard_state.term, Term::ZERO, "nothing changed");
}

#[test]
fn a_term_far_ahead_of_the_nodes_own_is_refused() {
    // One forged frame at the limit itself would leave a node unable to
    // ever campaign again (the simulator's forge fault found that).
    for term in [Term::LIMIT.get(), Term::JUMP_MAX + 1] {
        let mut node = three_voter_node();
        let heartbeat = empty_heartbeat();
        let result = node.step(Envelope::new(id(2), id(1), Term::new(term), heartbeat));
        assert!(
            matches!(result, Err(Error::Step(StepError::Malformed { .. }))),
            "{result:?}"
        );
        assert_eq!(node.status().hard_state.term, Term::ZERO);
    }
    let mut node = three_voter_node();
    let heartbeat = empty_heartbeat();
    node.step(Envelope::new(id(2), id(1), Term::new(Term::JUMP_MAX), heartbeat))
        .unwrap();
    assert_eq!(
        node.status().hard_state.term,
        Term::new(Term::JUMP_MAX),
        "a jump within bounds is followed"
    );
}

#[test]
fn at_the_term_limit_a_node_neither_wraps_nor_panics() {
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(id)));
    storage
        .set_hard_state(HardState {
            term: Term::new(Term::LIMIT.get() - 1),
            vote: None,
            commit: Index::ZERO,
        })
        .unwrap();
    let mut node = RawNode::new(&Config::new(id(1)), storage).unwrap();
    let heartbeat = empty_heartbeat();
    node.step(Envelope::new(id(2), id(1), Term::LIMIT, heartbeat))
        .unwrap();
    assert_eq!(node.status().hard_state.term, Term::LIMIT);
    node.tick_by(1_000).unwrap();
    node.campaign().unwrap();
    assert_eq!(
        node.status().hard_state.term,
        Term::LIMIT,
        "cannot advance; does not wrap"
    );
    node.check_invariants().unwrap();
}

#[test]
fn a_stored_term_past_the_limit_is_a_storage_error() {
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([id(1)]));
    storage
        .set_hard_state(HardState {
            term: Term::new(u64::MAX),
            vote: None,
            commit: Index::ZERO,
        })
        .unwrap();
    let result = RawNode::new(&Config::new(id(1)), storage);
    assert!(matches!(
        result,
        Err(Error::Storage(StorageError::TermBeyondLimit(_)))
    ));
}

// ----- 5. smaller ones --------------------------------------------------------

#[test]
fn a_new_voter_counts_as_recently_active_at_the_next_check_quorum() {
    let mut cluster = Cluster::new(ClusterOptions::voters(1)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::add_voter(id(2)))
        .unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(1)).status().conf_state.voters().len(), 2);
    let election_ticks = cluster.config(id(1)).election_timeout_ticks_min;
    for _ in 0..election_ticks {
        cluster.tick(id(1)).unwrap();
    }
    assert_eq!(
        cluster.node(id(1)).status().role,
        Role::Leader,
        "not deposed by a node just added"
    );
}

#[test]
fn a_read_forwarded_to_a_node_that_is_not_leader_is_refused_back() {
    let mut cluster = Cluster::new(ClusterOptions::voters(3)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    let term = cluster.node(id(3)).status().hard_state.term;
    // Node 3 thinks 2 leads (a stale view): 2 must answer with a refusal.
    let request = Message::ReadIndex(ReadIndexRequest {
        context: Bytes::from_static(b"read-7"),
    });
    cluster.inject([Envelope::new(id(3), id(2), term, request)]);
    let mut dropped = Vec::new();
    for _ in 0..10 {
        cluster.deliver_all().unwrap();
        for node in cluster.ids() {
            if let Some(ready) = cluster.process_ready(node).unwrap() {
                if node == id(3) {
                    dropped.extend(ready.dropped_reads().iter().cloned());
                }
            }
        }
    }
    assert_eq!(dropped, vec![Bytes::from_static(b"read-7")]);
}

#[test]
fn a_commit_index_beyond_the_recovered_log_is_a_storage_error() {
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([id(1)]));
    storage
        .append(&[Entry::new(
            Term::new(1),
            Index::new(1),
            EntryKind::Normal,
            Bytes::new(),
        )])
        .unwrap();
    storage
        .set_hard_state(HardState {
            term: Term::new(1),
            vote: Some(id(1)),
            commit: Index::new(5),
        })
        .unwrap();
    let result = RawNode::new(&Config::new(id(1)), storage);
    assert!(
        matches!(
            result,
            Err(Error::Storage(StorageError::CommitBeyondLog { commit, last_index }))
                if commit == Index::new(5) && last_index == Index::new(1)
        ),
        "lost committed entries are reported, not clamped away"
    );
}

/// A follower with [1@1, 2@1] committed through 2 and an uncommitted 3@2
/// from a deposed leader gets a stale append (prev 1@1) from the leader of
/// term 3. Returns the index it acknowledges.
fn stale_append_acknowledged(planted: bool) -> Index {
    let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(id)));
    storage
        .append(&[
            Entry::new(
                Term::new(1),
                Index::new(1),
                EntryKind::Normal,
                Bytes::from_static(b"a"),
            ),
            Entry::new(
                Term::new(1),
                Index::new(2),
                EntryKind::Normal,
                Bytes::from_static(b"b"),
            ),
            Entry::new(
                Term::new(2),
                Index::new(3),
                EntryKind::Normal,
                Bytes::from_static(b"c"),
            ),
        ])
        .unwrap();
    storage
        .set_hard_state(HardState {
            term: Term::new(2),
            vote: None,
            commit: Index::new(2),
        })
        .unwrap();
    let mut config = Config::new(id(1));
    if planted {
        assert!(plant(&mut config, planted_bug!(StaleAppendAcksLastIndex)));
    }
    let mut node = RawNode::new(&config, storage).unwrap();
    let append = Message::Append(keel::Append {
        prev: LogId::new(Term::new(1), Index::new(1)),
        entries: vec![Entry::new(
            Term::new(1),
            Index::new(2),
            EntryKind::Normal,
            Bytes::from_static(b"b"),
        )],
        commit: Index::new(2),
    });
    node.step(Envelope::new(id(2), id(1), Term::new(3), append))
        .unwrap();
    let ready = node.ready().unwrap();
    let acknowledged = ready
        .persisted_messages()
        .iter()
        .find_map(|envelope| match envelope.message {
            Message::AppendResponse(AppendResponse::Accepted { last_index }) => Some(last_index),
            _ => None,
        })
        .expect("an acknowledgement");
    node.advance(ready).unwrap();
    acknowledged
}

#[test]
fn a_stale_append_is_acknowledged_at_the_commit_index_not_the_last_index() {
    // 3@2 is not in the term-3 leader's log: acknowledging 3 would make the
    // leader count an entry this follower does not share with it.
    assert_eq!(stale_append_acknowledged(false), Index::new(2));
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_stale_append_acks_last_index() {
    assert_eq!(stale_append_acknowledged(true), Index::new(3));
}

// ----- 6. priorities never block the only electable candidates ---------------

/// Node 1 (priority 2) has left the voters in its own configuration; node 5
/// (priority 0) with an equally long log asks for its (pre-)vote.
#[test]
fn a_node_that_cannot_lead_does_not_refuse_a_vote_on_priority() {
    let conf = ConfState::with_voters([3, 4, 5].map(id));
    let mut config = Config::new(id(1));
    config.priority = 2;
    let mut node = RawNode::new(&config, MemStorage::new_with_conf_state(conf)).unwrap();
    for kind in [VoteKind::PreVote, VoteKind::Vote] {
        let request = Message::Vote(keel::VoteRequest {
            kind,
            last_log: LogId::new(Term::ZERO, Index::ZERO),
            reason: keel::ElectionReason::Timeout,
            priority: 0,
        });
        node.step(Envelope::new(id(5), id(1), Term::new(1), request))
            .unwrap();
        let ready = node.ready().unwrap();
        let granted =
            ready.messages().iter().chain(ready.persisted_messages()).any(
                |envelope| matches!(envelope.message, Message::VoteResponse(response) if response.granted),
            );
        node.advance(ready).unwrap();
        assert!(granted, "{kind:?} granted");
    }
}

#[test]
fn a_voter_of_higher_priority_still_refuses_an_equal_log_of_lower_priority() {
    let conf = ConfState::with_voters([1, 2, 3].map(id));
    let mut config = Config::new(id(1));
    config.priority = 2;
    let mut node = RawNode::new(&config, MemStorage::new_with_conf_state(conf)).unwrap();
    let request = Message::Vote(keel::VoteRequest {
        kind: VoteKind::PreVote,
        last_log: LogId::new(Term::ZERO, Index::ZERO),
        reason: keel::ElectionReason::Timeout,
        priority: 0,
    });
    node.step(Envelope::new(id(3), id(1), Term::new(1), request))
        .unwrap();
    let ready = node.ready().unwrap();
    assert!(ready
        .messages()
        .iter()
        .all(|envelope| !matches!(envelope.message, Message::VoteResponse(response) if response.granted)));
}

// ----- ReadIndex: only a round started after the read confirms it ------------

/// A heartbeat round is in flight when a read arrives; only the acks of
/// that earlier round come back. Returns whether the read was answered.
fn read_answered_by_earlier_round(planted: bool) -> bool {
    let mut options = ClusterOptions::voters(3);
    if planted {
        assert!(plant(
            &mut options.config,
            planted_bug!(ReadConfirmedByEarlierRound)
        ));
    }
    let mut cluster = Cluster::new(options).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.propose(id(1), Bytes::from_static(b"x")).unwrap();
    cluster.stabilize().unwrap();
    cluster.tick(id(1)).unwrap();
    cluster.process_ready(id(1)).unwrap();
    let earlier_round = cluster
        .in_flight()
        .iter()
        .find_map(|envelope| match envelope.message {
            Message::Heartbeat(heartbeat) => heartbeat.read_round,
            _ => None,
        })
        .expect("a heartbeat round in flight");
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"late"), ReadMode::Safe)
        .unwrap();
    let mut answered = cluster
        .process_ready(id(1))
        .unwrap()
        .is_some_and(|ready| !ready.read_states().is_empty());
    // Only the earlier round's heartbeats get through.
    let earlier: Vec<Envelope> = cluster
        .take_in_flight()
        .into_iter()
        .filter(|envelope| matches!(envelope.message, Message::Heartbeat(heartbeat) if heartbeat.read_round == Some(earlier_round)))
        .collect();
    cluster.inject(earlier);
    for _ in 0..4 {
        cluster.deliver_all().unwrap();
        for node in cluster.ids() {
            if let Some(ready) = cluster.process_ready(node).unwrap() {
                answered |= node == id(1) && !ready.read_states().is_empty();
            }
        }
        // Later rounds are lost.
        let kept: Vec<Envelope> = cluster
            .take_in_flight()
            .into_iter()
            .filter(|envelope| !matches!(envelope.message, Message::Heartbeat(heartbeat) if heartbeat.read_round != Some(earlier_round)))
            .collect();
        cluster.inject(kept);
    }
    answered
}

#[test]
fn thesis_6_4_a_round_started_before_the_read_does_not_confirm_it() {
    assert!(!read_answered_by_earlier_round(false));
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_read_confirmed_by_earlier_round_is_answered() {
    assert!(read_answered_by_earlier_round(true));
}

#[test]
fn a_malformed_append_changes_nothing_on_its_way_to_being_refused() {
    // Found by the simulator's forged messages: the append was refused, but
    // only after the node had taken its sender for the leader (and a leader
    // had recorded "two leaders in one term").
    let mut node = three_voter_node();
    node.campaign().unwrap();
    let before = node.status();
    let append = Message::Append(keel::Append {
        prev: LogId::new(Term::ZERO, Index::ZERO),
        entries: vec![
            Entry::new(
                Term::new(u64::MAX - 1),
                Index::new(1),
                EntryKind::Normal,
                Bytes::new(),
            ),
            Entry::new(Term::new(1), Index::new(2), EntryKind::Normal, Bytes::new()),
        ],
        commit: Index::ZERO,
    });
    let result = node.step(Envelope::new(id(2), id(1), Term::new(1), append));
    assert!(
        matches!(result, Err(Error::Step(StepError::Malformed { .. }))),
        "{result:?}"
    );
    let after = node.status();
    assert_eq!(
        (after.role, after.leader, after.hard_state),
        (before.role, before.leader, before.hard_state)
    );
    node.check_invariants().unwrap();
}

#[test]
fn a_member_refuses_a_snapshot_whose_membership_leaves_it_out() {
    let mut node = three_voter_node();
    let before = node.status();
    let mut metadata = keel::SnapshotMetadata::bootstrap(ConfState::with_voters([2, 3, 4].map(id)));
    metadata.last = LogId::new(Term::new(1), Index::new(10));
    let result = node.step(Envelope::new(
        id(2),
        id(1),
        Term::new(1),
        Message::Snapshot(Box::new(metadata)),
    ));
    assert!(
        matches!(result, Err(Error::Step(StepError::Malformed { .. }))),
        "{result:?}"
    );
    let after = node.status();
    assert_eq!(
        (after.role, after.leader, after.hard_state, after.last_index),
        (before.role, before.leader, before.hard_state, before.last_index)
    );
    assert!(
        !node.has_ready() || node.ready().unwrap().snapshot().is_none(),
        "nothing installed"
    );
}
