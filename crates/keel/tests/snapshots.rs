//! Log compaction and snapshots (§7 of the Raft paper, Figure 13): a
//! follower that needs compacted entries gets a snapshot, exactly one at a
//! time, and the leader never pauses it forever.

use bytes::Bytes;
use keel::testing::{Cluster, ClusterOptions};
use keel::{
    ConfState, Envelope, Index, LogId, Message, NodeId, PeerStatus, ProgressState, Role, SnapshotMetadata,
    SnapshotOutcome, Term,
};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

fn led_cluster() -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions::voters(3)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster
}

fn write_many(cluster: &mut Cluster, leader: u64, count: usize) {
    for number in 0..count {
        cluster
            .propose(id(leader), Bytes::from(format!("v{number}")))
            .unwrap();
    }
    cluster.stabilize().unwrap();
}

fn peer_status(cluster: &Cluster, leader: u64, peer: u64) -> PeerStatus {
    cluster
        .node(id(leader))
        .status()
        .peers
        .into_iter()
        .find(|status| status.id == id(peer))
        .unwrap()
}

fn peer_state(cluster: &Cluster, leader: u64, peer: u64) -> ProgressState {
    peer_status(cluster, leader, peer).state
}

fn snapshots_in(envelopes: &[Envelope]) -> usize {
    envelopes
        .iter()
        .filter(|envelope| matches!(envelope.message, Message::Snapshot(_)))
        .count()
}

/// Partitions node 3 away, writes and compacts on the leader, heals.
fn lagging_follower_behind_compaction() -> Cluster {
    let mut cluster = led_cluster();
    cluster.isolate(id(3));
    write_many(&mut cluster, 1, 20);
    let applied = cluster.node(id(1)).status().applied;
    cluster.compact(id(1), applied).unwrap();
    cluster.heal();
    cluster
}

#[test]
fn paper_7_a_follower_behind_compaction_gets_one_snapshot_then_entries() {
    let mut cluster = lagging_follower_behind_compaction();
    // A heartbeat response shows node 3 behind; the entries it needs are
    // gone, so the leader sends a snapshot and nothing else meanwhile.
    cluster.tick(id(1)).unwrap();
    let mut snapshots = 0;
    for _ in 0..20 {
        cluster.process_all_ready().unwrap();
        snapshots += snapshots_in(cluster.in_flight());
        cluster.deliver_all().unwrap();
    }
    assert_eq!(snapshots, 1, "exactly one snapshot is sent");
    cluster.stabilize().unwrap();
    assert_eq!(peer_state(&cluster, 1, 3), ProgressState::Replicate);
    write_many(&mut cluster, 1, 3);
    let leader_last = cluster.node(id(1)).status().last_index;
    assert_eq!(cluster.node(id(3)).status().last_index, leader_last);
    assert_eq!(cluster.node(id(3)).status().hard_state.commit, leader_last);
}

#[test]
fn paper_7_no_second_snapshot_while_one_is_in_flight() {
    let mut cluster = lagging_follower_behind_compaction();
    cluster.tick(id(1)).unwrap();
    // Let the heartbeat exchange happen but hold the snapshot back.
    let mut held = Vec::new();
    for _ in 0..10 {
        cluster.process_all_ready().unwrap();
        for envelope in cluster.take_in_flight() {
            if matches!(envelope.message, Message::Snapshot(_)) {
                held.push(envelope);
            } else {
                cluster.deliver(envelope).unwrap();
            }
        }
        cluster.tick(id(1)).unwrap();
    }
    assert_eq!(
        held.len(),
        1,
        "heartbeats while a snapshot is in flight do not resend it"
    );
    assert!(matches!(
        peer_state(&cluster, 1, 3),
        ProgressState::Snapshot { .. }
    ));
}

#[test]
fn paper_7_a_failed_snapshot_is_retried_and_never_pauses_the_follower_forever() {
    let mut cluster = lagging_follower_behind_compaction();
    cluster.tick(id(1)).unwrap();
    // The snapshot is lost in transit: the transport reports the failure.
    let mut lost = 0;
    for _ in 0..10 {
        cluster.process_all_ready().unwrap();
        for envelope in cluster.take_in_flight() {
            if matches!(envelope.message, Message::Snapshot(_)) && lost == 0 {
                lost += 1;
                cluster
                    .node_mut(id(1))
                    .report_snapshot(id(3), SnapshotOutcome::Failed);
            } else {
                cluster.deliver(envelope).unwrap();
            }
        }
    }
    assert_eq!(lost, 1);
    assert_eq!(
        peer_state(&cluster, 1, 3),
        ProgressState::Probe,
        "failure ends the snapshot state"
    );
    // The next heartbeat round sends a fresh snapshot, which arrives.
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    assert_eq!(peer_state(&cluster, 1, 3), ProgressState::Replicate);
    assert_eq!(
        cluster.node(id(3)).status().hard_state.commit,
        cluster.node(id(1)).status().hard_state.commit
    );
}

#[test]
fn status_first_index_moves_past_compacted_entries_and_installed_snapshots() {
    // Goal: `Status::first_index` is where the log starts now, on the node
    // that compacted and on the follower that installed the snapshot.
    let mut cluster = led_cluster();
    cluster.isolate(id(3));
    write_many(&mut cluster, 1, 20);
    let first_before = cluster.node(id(1)).status().first_index.unwrap();
    let applied = cluster.node(id(1)).status().applied;
    assert!(first_before < applied);
    cluster.compact(id(1), applied).unwrap();
    assert_eq!(cluster.node(id(1)).status().first_index, Some(applied.next()));
    assert_eq!(cluster.node(id(3)).status().first_index, Some(first_before));
    cluster.heal();
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    assert_eq!(cluster.node(id(3)).status().first_index, Some(applied.next()));
}

#[test]
fn status_shows_a_probing_follower_paused_until_it_answers() {
    // Goal: `PeerStatus::probe_paused` is set exactly while a probe is out
    // and unanswered.
    let mut cluster = led_cluster();
    cluster.isolate(id(3));
    cluster.node_mut(id(1)).report_unreachable(id(3));
    let peer = peer_status(&cluster, 1, 3);
    assert_eq!(peer.state, ProgressState::Probe);
    assert!(!peer.probe_paused, "no probe sent yet");
    // The next append to node 3 is a probe, and it is lost.
    write_many(&mut cluster, 1, 1);
    let peer = peer_status(&cluster, 1, 3);
    assert_eq!(peer.state, ProgressState::Probe);
    assert!(peer.probe_paused, "the probe is out and unanswered");
    assert!(
        !peer_status(&cluster, 1, 2).probe_paused,
        "replicating: never probe-paused"
    );
    // Back in reach: a heartbeat answer resumes probing and node 3 catches up.
    cluster.heal();
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    let peer = peer_status(&cluster, 1, 3);
    assert_eq!(peer.state, ProgressState::Replicate);
    assert!(!peer.probe_paused);
}

#[test]
fn paper_7_report_unreachable_during_a_snapshot_returns_to_probing() {
    let mut cluster = lagging_follower_behind_compaction();
    cluster.tick(id(1)).unwrap();
    for _ in 0..10 {
        cluster.process_all_ready().unwrap();
        for envelope in cluster.take_in_flight() {
            if !matches!(envelope.message, Message::Snapshot(_)) {
                cluster.deliver(envelope).unwrap();
            }
        }
    }
    assert!(matches!(
        peer_state(&cluster, 1, 3),
        ProgressState::Snapshot { .. }
    ));
    cluster.node_mut(id(1)).report_unreachable(id(3));
    assert_eq!(peer_state(&cluster, 1, 3), ProgressState::Probe);
}

#[test]
fn paper_7_follower_restart_before_installing_the_snapshot() {
    let mut cluster = lagging_follower_behind_compaction();
    cluster.tick(id(1)).unwrap();
    // The snapshot reaches node 3, which crashes before persisting it.
    for _ in 0..10 {
        cluster.process_ready(id(1)).unwrap();
        cluster.process_ready(id(2)).unwrap();
        cluster.deliver_all().unwrap();
        if cluster.node(id(3)).has_ready() {
            break;
        }
    }
    cluster.restart(id(3)).unwrap();
    // It comes back with its old log; the leader is told nothing arrived
    // (the acknowledgement was never sent) and retries after heartbeats.
    for _ in 0..5 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
        let status = cluster.node(id(1)).status();
        if matches!(peer_state(&cluster, 1, 3), ProgressState::Snapshot { .. }) {
            cluster.node_mut(id(1)).report_unreachable(id(3));
        }
        assert_eq!(status.role, Role::Leader);
    }
    assert_eq!(
        cluster.node(id(3)).status().hard_state.commit,
        cluster.node(id(1)).status().hard_state.commit
    );
}

#[test]
fn paper_7_compaction_during_replication_keeps_followers_going() {
    let mut cluster = led_cluster();
    for round in 0..10 {
        for number in 0..5 {
            cluster
                .propose(id(1), Bytes::from(format!("r{round}-{number}")))
                .unwrap();
        }
        cluster.process_all_ready().unwrap();
        let applied = cluster.node(id(1)).status().applied;
        cluster.compact(id(1), applied).unwrap();
        cluster.deliver_all().unwrap();
    }
    cluster.stabilize().unwrap();
    let leader = cluster.node(id(1)).status();
    for follower in [2, 3] {
        let status = cluster.node(id(follower)).status();
        assert_eq!(status.hard_state.commit, leader.hard_state.commit);
        assert_eq!(status.last_index, leader.last_index);
    }
}

#[test]
fn figure_13_a_snapshot_within_the_log_keeps_the_following_entries() {
    let mut cluster = led_cluster();
    cluster.isolate(id(3));
    write_many(&mut cluster, 1, 5);
    cluster.heal();
    cluster.tick(id(1)).unwrap();
    cluster.stabilize().unwrap();
    let before = cluster.node(id(3)).status();
    // A snapshot whose last entry node 3 holds, ahead of its commit index.
    let commit = before.hard_state.commit;
    let last = before.last_index;
    let term = before.hard_state.term;
    assert!(last > Index::new(3));
    let metadata = SnapshotMetadata {
        last: LogId::new(term, Index::new(3)),
        conf_state: ConfState::with_voters([1, 2, 3].map(id)),
    };
    let envelope = Envelope::new(id(1), id(3), term, Message::Snapshot(Box::new(metadata)));
    cluster.node_mut(id(3)).step(envelope).unwrap();
    let after = cluster.node(id(3)).status();
    assert_eq!(
        after.last_index, last,
        "entries after the snapshot are kept (rule 6)"
    );
    assert!(after.hard_state.commit >= commit.min(Index::new(3)));
    assert!(cluster.node_mut(id(3)).ready().unwrap().snapshot().is_none());
}

#[test]
fn figure_13_a_snapshot_behind_the_commit_index_is_ignored() {
    let mut cluster = led_cluster();
    write_many(&mut cluster, 1, 5);
    let before = cluster.node(id(2)).status();
    let metadata = SnapshotMetadata {
        last: LogId::new(Term::new(1), Index::new(2)),
        conf_state: ConfState::with_voters([1, 2, 3].map(id)),
    };
    let envelope = Envelope::new(
        id(1),
        id(2),
        before.hard_state.term,
        Message::Snapshot(Box::new(metadata)),
    );
    cluster.node_mut(id(2)).step(envelope).unwrap();
    let after = cluster.node(id(2)).status();
    assert_eq!(after.last_index, before.last_index);
    assert_eq!(after.hard_state.commit, before.hard_state.commit);
    let ready = cluster.node_mut(id(2)).ready().unwrap();
    assert!(ready.snapshot().is_none());
}

#[test]
fn paper_7_a_new_member_learns_the_founding_membership_from_the_bootstrap_snapshot() {
    let mut cluster = led_cluster();
    cluster
        .add_node(keel::Config::new(id(4)), keel::MemStorage::new())
        .unwrap();
    cluster
        .node_mut(id(1))
        .propose_conf_change(&keel::ConfChange::add_learner(id(4)))
        .unwrap();
    for _ in 0..3 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    let conf = cluster.node(id(4)).status().conf_state;
    assert_eq!(
        conf.voters(),
        &[1, 2, 3]
            .map(id)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(conf.learners().contains(&id(4)));
}
