//! Linearizable reads without log writes: ReadIndex and leases, as in §6.4
//! of Ongaro's thesis ("Processing read-only queries more efficiently").

use bytes::Bytes;
use keel::testing::{Cluster, ClusterOptions};
use keel::{Error, Index, NodeId, ReadError, ReadMode, Role};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

fn led_cluster(count: u64) -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions::voters(count)).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.propose(id(1), Bytes::from_static(b"x=1")).unwrap();
    cluster.stabilize().unwrap();
    cluster
}

/// Processes one node's Ready and returns the read states it carried.
fn read_states(cluster: &mut Cluster, node: NodeId) -> Vec<(Index, Bytes)> {
    let ready = cluster.process_ready(node).unwrap();
    ready
        .map(|ready| {
            ready
                .read_states()
                .iter()
                .map(|state| (state.index, state.context.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Stabilizes while collecting every read state `node` reports.
fn stabilize_collecting(cluster: &mut Cluster, node: NodeId) -> Vec<(Index, Bytes)> {
    let mut states = Vec::new();
    for _ in 0..100 {
        states.extend(read_states(cluster, node));
        cluster.process_all_ready().unwrap();
        if cluster.deliver_all().unwrap() == 0 && !cluster.node(node).has_ready() {
            break;
        }
    }
    states
}

#[test]
fn thesis_6_4_leader_answers_only_after_a_heartbeat_round_to_a_quorum() {
    let mut cluster = led_cluster(3);
    let committed = cluster.node(id(1)).status().hard_state.commit;
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"r1"), ReadMode::Safe)
        .unwrap();
    // The first Ready starts the round but answers nothing yet.
    assert!(read_states(&mut cluster, id(1)).is_empty());
    let states = stabilize_collecting(&mut cluster, id(1));
    assert_eq!(states, vec![(committed, Bytes::from_static(b"r1"))]);
}

#[test]
fn thesis_6_4_reads_arriving_together_share_one_round() {
    let mut cluster = led_cluster(3);
    for number in 0..10 {
        cluster
            .node_mut(id(1))
            .read_index(Bytes::from(format!("r{number}")), ReadMode::Safe)
            .unwrap();
    }
    let ready = cluster.process_ready(id(1)).unwrap().unwrap();
    let heartbeats = ready
        .messages()
        .iter()
        .filter(|envelope| matches!(envelope.message, keel::Message::Heartbeat(_)))
        .count();
    assert_eq!(heartbeats, 2, "one heartbeat per follower for all ten reads");
    let states = stabilize_collecting(&mut cluster, id(1));
    assert_eq!(states.len(), 10);
}

#[test]
fn thesis_6_4_a_deposed_leader_never_confirms_a_read() {
    let mut cluster = led_cluster(3);
    cluster.isolate(id(1));
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"stale?"), ReadMode::Safe)
        .unwrap();
    // The others elect a new leader once their election timeouts fire, and
    // write a newer value.
    let new_leader = loop {
        cluster.tick(id(2)).unwrap();
        cluster.tick(id(3)).unwrap();
        cluster.stabilize().unwrap();
        let leaders: Vec<NodeId> = [2, 3]
            .map(id)
            .into_iter()
            .filter(|node| cluster.node(*node).status().role == Role::Leader)
            .collect();
        if let Some(leader) = leaders.first() {
            break *leader;
        }
    };
    cluster.propose(new_leader, Bytes::from_static(b"x=2")).unwrap();
    cluster.stabilize().unwrap();
    let mut states = Vec::new();
    let mut dropped = Vec::new();
    for _ in 0..40 {
        cluster.tick(id(1)).unwrap();
        if let Some(ready) = cluster.process_ready(id(1)).unwrap() {
            states.extend(ready.read_states().iter().cloned());
            dropped.extend(ready.dropped_reads().iter().cloned());
        }
        cluster.stabilize().unwrap();
    }
    assert!(
        states.is_empty(),
        "an isolated leader confirmed a read: {states:?}"
    );
    assert_ne!(
        cluster.node(id(1)).status().role,
        Role::Leader,
        "check-quorum stepped it down"
    );
    assert_eq!(
        dropped,
        vec![Bytes::from_static(b"stale?")],
        "the caller learns the read is abandoned"
    );
}

#[test]
fn thesis_6_4_a_new_leader_waits_for_its_first_commit_before_answering() {
    // Without check-quorum, voters do not hold on to the old leader, so node
    // 2 can be elected at once.
    let mut options = ClusterOptions::voters(3);
    options.config.check_quorum = false;
    let mut cluster = Cluster::new(options).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.propose(id(1), Bytes::from_static(b"x=1")).unwrap();
    cluster.stabilize().unwrap();
    cluster.campaign(id(2)).unwrap();
    // Deliver only the votes: node 2 becomes leader without having
    // committed its empty entry yet.
    for _ in 0..10 {
        if cluster.node(id(2)).status().role == Role::Leader {
            break;
        }
        cluster.process_all_ready().unwrap();
        let in_flight = cluster.take_in_flight();
        for envelope in in_flight {
            if matches!(
                envelope.message,
                keel::Message::Vote(_) | keel::Message::VoteResponse(_)
            ) {
                cluster.deliver(envelope).unwrap();
            }
        }
    }
    assert_eq!(cluster.node(id(2)).status().role, Role::Leader);
    let leader_commit = cluster.node(id(2)).status().hard_state.commit;
    cluster
        .node_mut(id(2))
        .read_index(Bytes::from_static(b"after-election"), ReadMode::Safe)
        .unwrap();
    let states = stabilize_collecting(&mut cluster, id(2));
    assert_eq!(states.len(), 1);
    let (index, _) = &states[0];
    let last = cluster.node(id(2)).status().last_index;
    assert!(
        *index > leader_commit,
        "read index {index} must cover the new term's entry"
    );
    assert_eq!(*index, last);
}

#[test]
fn thesis_6_4_followers_get_a_read_index_from_the_leader() {
    let mut cluster = led_cluster(3);
    let committed = cluster.node(id(1)).status().hard_state.commit;
    cluster
        .node_mut(id(3))
        .read_index(Bytes::from_static(b"follower-read"), ReadMode::Safe)
        .unwrap();
    let states = stabilize_collecting(&mut cluster, id(3));
    assert_eq!(states, vec![(committed, Bytes::from_static(b"follower-read"))]);
}

#[test]
fn thesis_6_4_reads_without_a_leader_fail_with_an_error() {
    let mut cluster = Cluster::new(ClusterOptions::voters(3)).unwrap();
    let error = cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"r"), ReadMode::Safe)
        .unwrap_err();
    assert!(matches!(error, Error::Read(ReadError::NoLeader)), "{error}");
}

#[test]
fn thesis_6_4_1_lease_reads_are_answered_at_once_while_the_lease_holds() {
    let mut cluster = led_cluster(3);
    // A heartbeat round acknowledged by a quorum starts the lease.
    cluster.tick(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"lease"), ReadMode::Lease)
        .unwrap();
    let ready = cluster.process_ready(id(1)).unwrap().unwrap();
    assert_eq!(ready.read_states().len(), 1, "answered without a round trip");
    assert!(ready.messages().is_empty());
}

#[test]
fn thesis_6_4_1_an_expired_lease_falls_back_to_a_heartbeat_round() {
    let mut cluster = led_cluster(3);
    cluster.tick(id(1)).unwrap();
    cluster.stabilize().unwrap();
    cluster.isolate(id(1));
    for _ in 0..9 {
        cluster.tick(id(1)).unwrap();
        cluster.stabilize().unwrap();
    }
    cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"lease"), ReadMode::Lease)
        .unwrap();
    let states = stabilize_collecting(&mut cluster, id(1));
    assert!(
        states.is_empty(),
        "a lease past the election timeout must not answer"
    );
}

#[test]
fn thesis_6_4_1_lease_reads_need_check_quorum() {
    let mut options = ClusterOptions::voters(3);
    options.config.check_quorum = false;
    let mut cluster = Cluster::new(options).unwrap();
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    let error = cluster
        .node_mut(id(1))
        .read_index(Bytes::from_static(b"r"), ReadMode::Lease)
        .unwrap_err();
    assert!(
        matches!(error, Error::Read(ReadError::LeaseWithoutCheckQuorum)),
        "{error}"
    );
}
