//! keel-node over keel-net: three nodes talking TCP on loopback, with real
//! storage; writes, reads, a snapshot to a new member, and a leader crash.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel::{Index, NodeId, Role};
use keel_net::{Network, NetworkConfig};
use keel_node::{
    inbound_channel, AddressBook, Bootstrap, CommandError, Consistency, MemberInfo, Node, NodeConfig,
    NodeHandle, RestoreError, StateMachine,
};

/// A register of the last value written, and how many writes it took.
#[derive(Default)]
struct Register {
    value: Vec<u8>,
    writes: u64,
}

impl StateMachine for Register {
    type Command = Vec<u8>;
    type Response = u64;
    type Query = ();
    type QueryResponse = (Vec<u8>, u64);

    fn encode_command(command: &Vec<u8>) -> Result<Bytes, CommandError> {
        Ok(Bytes::copy_from_slice(command))
    }

    fn decode_command(data: &[u8]) -> Result<Vec<u8>, CommandError> {
        Ok(data.to_vec())
    }

    fn apply(&mut self, _index: Index, command: Vec<u8>) -> u64 {
        self.value = command;
        self.writes += 1;
        self.writes
    }

    fn query(&self, _query: &()) -> (Vec<u8>, u64) {
        (self.value.clone(), self.writes)
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        let mut data = self.writes.to_le_bytes().to_vec();
        data.extend_from_slice(&self.value);
        Box::new(Cursor::new(data))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        let mut data = Vec::new();
        snapshot.read_to_end(&mut data)?;
        if data.len() < 8 {
            return Err(RestoreError::Invalid("short snapshot".to_string()));
        }
        self.writes = u64::from_le_bytes(
            data[..8]
                .try_into()
                .map_err(|_| RestoreError::Invalid("short".into()))?,
        );
        self.value = data[8..].to_vec();
        Ok(())
    }
}

struct Running {
    handle: NodeHandle<Register>,
    network: Network,
}

async fn start_network(
    directory: &std::path::Path,
    id: u64,
) -> (Network, tokio::sync::mpsc::Receiver<keel_node::Inbound>) {
    let spool = directory.join(format!("spool-{id}"));
    std::fs::create_dir_all(&spool).unwrap();
    let config = NetworkConfig::new(7, NodeId::new(id), "127.0.0.1:0".parse().unwrap(), spool);
    let (sender, receiver) = inbound_channel();
    (Network::start(config, sender).await.unwrap(), receiver)
}

fn node_config(directory: &std::path::Path, id: u64) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId::new(id), directory.join(format!("node-{id}")));
    config.tick_interval = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(5);
    config.snapshot_interval_entries = 40;
    config.snapshot_keep_entries = 5;
    config
}

async fn leader_of(nodes: &BTreeMap<u64, Running>) -> u64 {
    for _ in 0..500 {
        for (id, node) in nodes {
            if node.handle.status().await.map(|status| status.raft.role) == Ok(Role::Leader) {
                return *id;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_replicate_snapshot_and_survive_a_leader_crash() {
    let directory = tempfile::tempdir().unwrap();
    let mut networks = BTreeMap::new();
    let mut book = AddressBook::new();
    for id in 1..=3 {
        let (network, inbound) = start_network(directory.path(), id).await;
        book.insert(
            NodeId::new(id),
            MemberInfo {
                peer_address: network.local_addr().to_string(),
                metadata: Bytes::new(),
            },
        );
        networks.insert(id, (network, inbound));
    }
    let mut nodes = BTreeMap::new();
    for (id, (network, inbound)) in networks {
        let transport: Arc<dyn keel_node::Transport> = Arc::new(network.clone());
        let handle = Node::start(
            node_config(directory.path(), id),
            Register::default(),
            Bootstrap::Founders(book.clone()),
            transport,
            inbound,
        )
        .await
        .unwrap();
        nodes.insert(id, Running { handle, network });
    }
    let leader = leader_of(&nodes).await;
    for number in 0..100u64 {
        let writer = &nodes[&(number % 3 + 1)].handle;
        writer.write(number.to_le_bytes().to_vec()).await.unwrap();
    }
    for node in nodes.values() {
        let (value, writes) = node.handle.read((), Consistency::Linearizable).await.unwrap();
        assert_eq!(writes, 100);
        assert_eq!(value, 99u64.to_le_bytes().to_vec());
    }

    // A fourth node joins and catches up through a snapshot over TCP.
    let (network, inbound) = start_network(directory.path(), 4).await;
    let info = MemberInfo {
        peer_address: network.local_addr().to_string(),
        metadata: Bytes::new(),
    };
    let handle = Node::start(
        node_config(directory.path(), 4),
        Register::default(),
        Bootstrap::Join,
        Arc::new(network.clone()),
        inbound,
    )
    .await
    .unwrap();
    nodes.insert(4, Running { handle, network });
    nodes[&leader]
        .handle
        .add_voter(NodeId::new(4), info)
        .await
        .unwrap();
    let mut caught_up = false;
    for _ in 0..500 {
        let (_, writes) = nodes[&4].handle.read((), Consistency::Stale).await.unwrap();
        if writes == 100 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !caught_up {
        let status = nodes[&leader].handle.status().await.unwrap();
        eprintln!("leader peers: {:#?}", status.raft.peers);
        eprintln!("node 4: {:#?}", nodes[&4].handle.status().await.unwrap());
    }
    assert!(caught_up, "the new member caught up");

    // Crash the leader: the others elect a new one and keep every write.
    let crashed = nodes.remove(&leader).unwrap();
    crashed.handle.shutdown().await;
    crashed.network.shutdown().await;
    let new_leader = leader_of(&nodes).await;
    assert_ne!(new_leader, leader);
    let count = nodes[&new_leader].handle.write(b"after".to_vec()).await.unwrap();
    assert_eq!(count, 101);
    for node in nodes.values() {
        node.handle.shutdown().await;
        node.network.shutdown().await;
    }
}
