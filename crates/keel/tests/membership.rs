//! Membership changes: §6 of the Raft paper (joint consensus) and §4 of
//! Ongaro's thesis (single-server changes, learners, removed servers), and
//! leadership transfer (thesis §3.10).

use bytes::Bytes;
use keel::testing::{Cluster, ClusterOptions};
use keel::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, Config, Error, MemStorage, NodeId,
    ProposalError, Role, TransferError,
};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

fn led_cluster(count: u64) -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions::voters(count)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster
}

/// Adds an empty node that waits to be added to the membership.
fn add_empty_node(cluster: &mut Cluster, raw: u64) {
    cluster.add_node(Config::new(id(raw)), MemStorage::new()).unwrap();
}

fn change(cluster: &mut Cluster, leader: u64, conf_change: ConfChange) {
    cluster
        .node_mut(id(leader))
        .propose_conf_change(&conf_change)
        .unwrap();
    cluster.stabilize().unwrap();
}

fn write(cluster: &mut Cluster, leader: u64, data: &str) -> Result<(), Error> {
    cluster.propose(id(leader), Bytes::from(data.to_string()))?;
    cluster.stabilize()
}

fn last_applied(cluster: &Cluster, node: u64) -> Option<Bytes> {
    cluster
        .applied(id(node))
        .iter()
        .rev()
        .find(|entry| !entry.data.is_empty() && !entry.kind.is_conf_change())
        .map(|entry| entry.data.clone())
}

fn voters(cluster: &Cluster, node: u64) -> Vec<u64> {
    cluster
        .node(id(node))
        .status()
        .conf_state
        .voters()
        .iter()
        .map(|voter| voter.get())
        .collect()
}

/// Ticks every node until a leader other than `not` exists.
fn elect_other_than(cluster: &mut Cluster, not: NodeId) -> NodeId {
    for _ in 0..200 {
        cluster.tick_all().unwrap();
        cluster.stabilize().unwrap();
        if let Some(leader) = cluster.leader().filter(|leader| *leader != not) {
            if cluster.node(not).status().role != Role::Leader {
                return leader;
            }
        }
    }
    panic!("no new leader");
}

#[test]
fn thesis_4_1_adding_a_voter_replicates_the_log_and_grows_the_quorum() {
    let mut cluster = led_cluster(3);
    write(&mut cluster, 1, "before").unwrap();
    add_empty_node(&mut cluster, 4);
    change(&mut cluster, 1, ConfChange::add_voter(id(4)));
    for node in 1..=4 {
        assert_eq!(voters(&cluster, node), vec![1, 2, 3, 4], "membership on {node}");
    }
    assert_eq!(
        last_applied(&cluster, 4),
        Some(Bytes::from_static(b"before")),
        "the new voter caught up"
    );
    // Four voters need three acknowledgements: with two of them cut off,
    // nothing commits.
    cluster.isolate(id(3));
    cluster.isolate(id(4));
    write(&mut cluster, 1, "needs three").unwrap();
    assert_eq!(last_applied(&cluster, 1), Some(Bytes::from_static(b"before")));
}

#[test]
fn thesis_4_2_1_learners_receive_the_log_but_never_vote_or_count() {
    let mut cluster = led_cluster(3);
    add_empty_node(&mut cluster, 4);
    change(&mut cluster, 1, ConfChange::add_learner(id(4)));
    write(&mut cluster, 1, "to learner").unwrap();
    assert_eq!(last_applied(&cluster, 4), Some(Bytes::from_static(b"to learner")));
    assert!(cluster
        .node(id(4))
        .status()
        .conf_state
        .learners()
        .contains(&id(4)));
    // A learner never campaigns, however long it waits.
    for _ in 0..50 {
        cluster.tick(id(4)).unwrap();
    }
    assert_eq!(cluster.node(id(4)).status().role, Role::Follower);
    assert!(cluster.in_flight().iter().all(|envelope| envelope.from != id(4)));
    // The learner's acknowledgement does not make a quorum.
    cluster.isolate(id(2));
    cluster.isolate(id(3));
    write(&mut cluster, 1, "no quorum").unwrap();
    assert_eq!(last_applied(&cluster, 1), Some(Bytes::from_static(b"to learner")));
}

#[test]
fn thesis_4_2_1_a_learner_is_promoted_and_a_voter_demoted() {
    let mut cluster = led_cluster(3);
    add_empty_node(&mut cluster, 4);
    change(&mut cluster, 1, ConfChange::add_learner(id(4)));
    change(&mut cluster, 1, ConfChange::add_voter(id(4)));
    assert_eq!(voters(&cluster, 2), vec![1, 2, 3, 4]);
    change(&mut cluster, 1, ConfChange::add_learner(id(2)));
    let conf = cluster.node(id(3)).status().conf_state;
    assert_eq!(voters(&cluster, 3), vec![1, 3, 4]);
    assert!(conf.learners().contains(&id(2)));
}

#[test]
fn thesis_4_1_only_one_change_may_be_pending() {
    let mut cluster = led_cluster(3);
    add_empty_node(&mut cluster, 4);
    add_empty_node(&mut cluster, 5);
    cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::add_voter(id(4)))
        .unwrap();
    let error = cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::add_voter(id(5)))
        .unwrap_err();
    assert!(
        matches!(error, Error::Proposal(ProposalError::ConfChangePending { .. })),
        "{error}"
    );
    cluster.stabilize().unwrap();
    // Once applied, the next change is accepted.
    change(&mut cluster, 1, ConfChange::add_voter(id(5)));
    assert_eq!(voters(&cluster, 1), vec![1, 2, 3, 4, 5]);
}

#[test]
fn thesis_4_1_a_simple_change_of_two_voters_is_refused() {
    let mut cluster = led_cluster(3);
    let two_voters = ConfChange {
        transition: ConfChangeTransition::Auto,
        changes: vec![
            ConfChangeSingle {
                kind: ConfChangeKind::RemoveNode,
                node_id: id(2),
            },
            ConfChangeSingle {
                kind: ConfChangeKind::RemoveNode,
                node_id: id(3),
            },
        ],
        context: Bytes::new(),
    };
    // With `Auto`, several changes go through a joint configuration, which
    // is allowed; an explicit leave with no joint state is not.
    let error = cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::leave_joint())
        .unwrap_err();
    assert!(
        matches!(error, Error::Proposal(ProposalError::InvalidConfChange(_))),
        "{error}"
    );
    cluster.node_mut(id(1)).propose_conf_change(&two_voters).unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(voters(&cluster, 1), vec![1]);
}

#[test]
fn paper_6_joint_consensus_replaces_a_majority_and_leaves_automatically() {
    let mut cluster = led_cluster(3);
    write(&mut cluster, 1, "old config").unwrap();
    add_empty_node(&mut cluster, 4);
    add_empty_node(&mut cluster, 5);
    let replace = ConfChange::add_voter(id(4))
        .with(ConfChangeSingle {
            kind: ConfChangeKind::AddVoter,
            node_id: id(5),
        })
        .with(ConfChangeSingle {
            kind: ConfChangeKind::RemoveNode,
            node_id: id(2),
        })
        .with(ConfChangeSingle {
            kind: ConfChangeKind::RemoveNode,
            node_id: id(3),
        });
    cluster.node_mut(id(1)).propose_conf_change(&replace).unwrap();
    // Step until the joint configuration is in force on the leader.
    let mut saw_joint = false;
    for _ in 0..50 {
        cluster.process_all_ready().unwrap();
        cluster.deliver_all().unwrap();
        let conf = cluster.node(id(1)).status().conf_state;
        if conf.is_joint() {
            saw_joint = true;
            assert_eq!(conf.voters_outgoing().len(), 3);
            assert!(conf.auto_leave());
        }
    }
    cluster.stabilize().unwrap();
    assert!(saw_joint, "the change went through a joint configuration");
    for node in [1, 4, 5] {
        let conf = cluster.node(id(node)).status().conf_state;
        assert!(!conf.is_joint(), "node {node} left the joint configuration");
        assert_eq!(voters(&cluster, node), vec![1, 4, 5]);
    }
    write(&mut cluster, 1, "new config").unwrap();
    assert_eq!(last_applied(&cluster, 5), Some(Bytes::from_static(b"new config")));
}

#[test]
fn paper_6_a_joint_configuration_needs_both_majorities() {
    let mut cluster = led_cluster(3);
    add_empty_node(&mut cluster, 4);
    add_empty_node(&mut cluster, 5);
    add_empty_node(&mut cluster, 6);
    let replace = ConfChange {
        transition: ConfChangeTransition::JointExplicit,
        changes: [4, 5, 6]
            .map(|node| ConfChangeSingle {
                kind: ConfChangeKind::AddVoter,
                node_id: id(node),
            })
            .into_iter()
            .chain([2, 3].map(|node| ConfChangeSingle {
                kind: ConfChangeKind::RemoveNode,
                node_id: id(node),
            }))
            .collect(),
        context: Bytes::new(),
    };
    change(&mut cluster, 1, replace);
    let conf = cluster.node(id(1)).status().conf_state;
    assert!(
        conf.is_joint() && !conf.auto_leave(),
        "explicit joint stays joint"
    );
    // Old {1,2,3}, new {1,4,5,6}. Cut 2 and 3: the new half has a majority
    // but the old does not, so nothing commits.
    cluster.isolate(id(2));
    cluster.isolate(id(3));
    write(&mut cluster, 1, "blocked").unwrap();
    assert_ne!(last_applied(&cluster, 1), Some(Bytes::from_static(b"blocked")));
    cluster.heal();
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    assert_eq!(last_applied(&cluster, 1), Some(Bytes::from_static(b"blocked")));
    change(&mut cluster, 1, ConfChange::leave_joint());
    assert!(!cluster.node(id(4)).status().conf_state.is_joint());
    assert_eq!(voters(&cluster, 4), vec![1, 4, 5, 6]);
}

#[test]
fn thesis_4_2_2_a_removed_leader_steps_down_and_hands_over() {
    let mut cluster = led_cluster(3);
    write(&mut cluster, 1, "x").unwrap();
    change(&mut cluster, 1, ConfChange::remove_node(id(1)));
    // The removed leader handed over to an up-to-date voter (TimeoutNow):
    // node 2 or 3 already leads a new term, without an election timeout.
    let status = cluster.node(id(2)).status();
    let successor = status
        .leader
        .expect("a successor leads without waiting for a timeout");
    assert_ne!(successor, id(1));
    assert_eq!(cluster.node(successor).status().role, Role::Leader);
    // The old leader learns the new term at its next heartbeat and steps down.
    cluster.tick(id(1)).unwrap();
    cluster.stabilize().unwrap();
    assert_ne!(cluster.node(id(1)).status().role, Role::Leader);
    let leader = cluster.leader().unwrap();
    assert_eq!(leader, successor);
    assert_eq!(voters(&cluster, leader.get()), vec![2, 3]);
    write(&mut cluster, leader.get(), "after removal").unwrap();
    assert_eq!(
        last_applied(&cluster, 2),
        Some(Bytes::from_static(b"after removal"))
    );
}

#[test]
fn thesis_4_1_removing_a_node_that_is_down() {
    let mut cluster = led_cluster(5);
    cluster.isolate(id(5));
    change(&mut cluster, 1, ConfChange::remove_node(id(5)));
    assert_eq!(voters(&cluster, 1), vec![1, 2, 3, 4]);
    write(&mut cluster, 1, "four voters").unwrap();
    assert_eq!(
        last_applied(&cluster, 4),
        Some(Bytes::from_static(b"four voters"))
    );
}

#[test]
fn thesis_4_1_two_node_trap_removing_the_dead_node_cannot_commit() {
    // Two voters: the quorum of the old configuration is both of them, so
    // with one down even its removal cannot commit, and neither can adding a
    // third node. The remedy, documented on `propose_conf_change`, is to run
    // three voters before a node fails.
    let mut cluster = led_cluster(2);
    cluster.isolate(id(2));
    cluster
        .node_mut(id(1))
        .propose_conf_change(&ConfChange::remove_node(id(2)))
        .unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(voters(&cluster, 1), vec![1, 2], "the removal is stuck");
}

#[test]
fn thesis_4_2_3_a_removed_server_cannot_disrupt_the_cluster() {
    let mut cluster = led_cluster(3);
    // Node 3 is cut off and removed without hearing of it.
    cluster.isolate(id(3));
    change(&mut cluster, 1, ConfChange::remove_node(id(3)));
    let term = cluster.node(id(1)).status().hard_state.term;
    cluster.heal();
    // It times out again and again; with pre-vote its term never rises and
    // the others, hearing from their leader, ignore it.
    for _ in 0..100 {
        cluster.tick_all().unwrap();
        cluster.stabilize().unwrap();
    }
    let status = cluster.node(id(1)).status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.hard_state.term, term);
    assert!(cluster.node(id(3)).status().hard_state.term <= term);
}

#[test]
fn thesis_3_10_leadership_transfer_hands_over_without_an_election_timeout() {
    let mut cluster = led_cluster(3);
    write(&mut cluster, 1, "x").unwrap();
    let term = cluster.node(id(1)).status().hard_state.term;
    cluster.node_mut(id(1)).transfer_leader(id(3)).unwrap();
    cluster.stabilize().unwrap();
    let status = cluster.node(id(3)).status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.hard_state.term, term.next());
    assert_eq!(cluster.node(id(1)).status().leader, Some(id(3)));
}

#[test]
fn thesis_3_10_a_lagging_target_is_brought_up_to_date_first() {
    let mut cluster = led_cluster(3);
    cluster.isolate(id(3));
    for round in 0..5 {
        write(&mut cluster, 1, &format!("w{round}")).unwrap();
    }
    cluster.heal();
    cluster.node_mut(id(1)).transfer_leader(id(3)).unwrap();
    // Proposals are refused while the transfer is under way.
    let error = cluster.propose(id(1), Bytes::from_static(b"during")).unwrap_err();
    assert!(
        matches!(error, Error::Proposal(ProposalError::TransferInProgress)),
        "{error}"
    );
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(3)).status().role, Role::Leader);
    assert_eq!(last_applied(&cluster, 3), Some(Bytes::from_static(b"w4")));
}

#[test]
fn thesis_3_10_a_transfer_to_a_down_node_times_out_and_writes_resume() {
    let mut cluster = led_cluster(3);
    cluster.isolate(id(3));
    cluster.node_mut(id(1)).transfer_leader(id(3)).unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(1)).status().transfer_target, Some(id(3)));
    for _ in 0..10 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    let status = cluster.node(id(1)).status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(
        status.transfer_target, None,
        "the transfer gave up after an election timeout"
    );
    write(&mut cluster, 1, "resumed").unwrap();
    assert_eq!(last_applied(&cluster, 2), Some(Bytes::from_static(b"resumed")));
}

#[test]
fn thesis_3_10_transfers_to_learners_or_unknown_nodes_are_refused() {
    let mut cluster = led_cluster(3);
    add_empty_node(&mut cluster, 4);
    change(&mut cluster, 1, ConfChange::add_learner(id(4)));
    for target in [4, 9] {
        let error = cluster.node_mut(id(1)).transfer_leader(id(target)).unwrap_err();
        assert!(
            matches!(error, Error::Transfer(TransferError::NotVoter(node)) if node == id(target)),
            "{error}"
        );
    }
    assert_eq!(cluster.node(id(1)).status().transfer_target, None);
}

#[test]
fn thesis_3_10_a_follower_forwards_a_transfer_request() {
    let mut cluster = led_cluster(3);
    cluster.node_mut(id(2)).transfer_leader(id(2)).unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(2)).status().role, Role::Leader);
    let _ = elect_other_than;
}
