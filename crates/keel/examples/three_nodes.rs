//! Three keel nodes in one process: elect a leader, commit entries, lose the
//! leader, elect another, and show every node applied the same log.
//!
//! Run with `cargo run --release -p keel --example three_nodes`.

use bytes::Bytes;
use keel::testing::{Cluster, ClusterOptions};
use keel::{NodeId, Role};

fn main() -> Result<(), keel::Error> {
    let mut cluster = Cluster::new(ClusterOptions::voters(3))?;
    println!(
        "started nodes {:?}; ticking until one times out and wins an election",
        cluster.ids()
    );

    let leader = cluster.elect(100)?.expect("a leader within 100 ticks");
    let status = cluster.node(leader).status();
    println!("{leader} is leader of term {}", status.hard_state.term.get());

    for number in 1..=5 {
        let command = format!("set x = {number}");
        cluster.propose(leader, Bytes::from(command.clone()))?;
        cluster.stabilize()?;
        println!(
            "committed {command:?} at index {}",
            cluster.node(leader).status().hard_state.commit.get()
        );
    }

    println!("cutting {leader} off from the others");
    cluster.isolate(leader);
    let mut ticks = 0;
    let new_leader = loop {
        cluster.tick_all()?;
        cluster.stabilize()?;
        ticks += 1;
        let candidates: Vec<NodeId> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader && cluster.node(*id).status().role == Role::Leader)
            .collect();
        if let Some(id) = candidates.first() {
            break *id;
        }
        assert!(ticks < 200, "no new leader after 200 ticks");
    };
    println!(
        "after {ticks} ticks {new_leader} leads term {}",
        cluster.node(new_leader).status().hard_state.term.get()
    );
    while cluster.node(leader).status().role == Role::Leader {
        cluster.tick_all()?;
        cluster.stabilize()?;
        ticks += 1;
    }
    println!(
        "after {ticks} ticks the old leader {leader} stepped down: it cannot hear a quorum (check-quorum)"
    );
    match cluster.propose(leader, Bytes::from_static(b"set z = 1")) {
        Err(error) => println!("a write to the old leader is refused: {error}"),
        Ok(()) => println!("unexpected: the old leader accepted a write"),
    }

    cluster.propose(new_leader, Bytes::from_static(b"set y = 1"))?;
    cluster.stabilize()?;
    println!("healing the partition");
    cluster.heal();
    for _ in 0..5 {
        cluster.tick_all()?;
        cluster.stabilize()?;
    }

    for id in cluster.ids() {
        let applied: Vec<String> = cluster
            .applied(id)
            .iter()
            .filter(|entry| !entry.data.is_empty())
            .map(|entry| String::from_utf8_lossy(&entry.data).into_owned())
            .collect();
        println!("{id} applied {applied:?}");
    }
    let reference = cluster.applied(new_leader).to_vec();
    for id in cluster.ids() {
        assert_eq!(cluster.applied(id), reference.as_slice(), "{id} diverged");
    }
    println!("all nodes applied the same {} entries", reference.len());
    Ok(())
}
