//! Election priorities (as raft-rs offers): a node of lower priority does
//! not win against healthy, equally up-to-date voters of higher priority,
//! so operators can keep leadership where they want it; liveness wins over
//! preference when the preferred node is down.

use keel::testing::{Cluster, ClusterOptions};
use keel::{ConfState, Config, MemStorage, NodeId, Role, SnapshotMetadata, StorageWrite};

fn id(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// Three voters; node `n` has priority `priorities[n - 1]`.
fn cluster_with_priorities(priorities: [u64; 3]) -> Cluster {
    let mut options = ClusterOptions::voters(0);
    options.voters.clear();
    let mut cluster = Cluster::new(options).unwrap();
    let bootstrap = SnapshotMetadata::bootstrap(ConfState::with_voters([1, 2, 3].map(id)));
    for (position, priority) in priorities.into_iter().enumerate() {
        let mut config = Config::new(id(position as u64 + 1));
        config.priority = priority;
        let mut storage = MemStorage::new();
        storage.apply_snapshot(bootstrap.clone()).unwrap();
        cluster.add_node(config, storage).unwrap();
    }
    cluster
}

#[test]
fn a_lower_priority_candidate_loses_to_higher_priority_voters() {
    let mut cluster = cluster_with_priorities([3, 2, 1]);
    cluster.campaign(id(3)).unwrap();
    cluster.stabilize().unwrap();
    assert_ne!(cluster.node(id(3)).status().role, Role::Leader);
    // Its pre-vote failed, so it did not even raise the term.
    assert_eq!(cluster.node(id(3)).status().hard_state.term.get(), 0);
    cluster.campaign(id(1)).unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(cluster.node(id(1)).status().role, Role::Leader);
}

#[test]
fn leadership_settles_on_the_highest_priority_node() {
    // Nodes 1 and 3 (priority 1) can elect each other; the leader then
    // hands over to node 2 (priority 5) once it is caught up.
    for round in 0..20u64 {
        let mut cluster = cluster_with_priorities([1, 5, 1]);
        cluster.campaign(id(1 + 2 * (round % 2))).unwrap();
        cluster.stabilize().unwrap();
        for _ in 0..40 {
            cluster.tick_all().unwrap();
            cluster.stabilize().unwrap();
        }
        assert_eq!(cluster.leader(), Some(id(2)), "round {round}");
        assert_eq!(cluster.node(id(2)).status().role, Role::Leader);
    }
}

#[test]
fn without_the_preferred_node_a_lower_priority_node_still_wins() {
    let mut cluster = cluster_with_priorities([3, 2, 1]);
    cluster.isolate(id(1));
    cluster.campaign(id(2)).unwrap();
    cluster.stabilize().unwrap();
    assert_eq!(
        cluster.node(id(2)).status().role,
        Role::Leader,
        "node 3 votes for a higher priority"
    );
}
