//! keel-node end to end, in one process: three nodes on an in-process
//! network with real keel-log storage in temporary directories.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::time::Duration;

use bytes::Bytes;
use keel::{Index, NodeId};
use keel_node::{
    inbound_channel, AddressBook, Bootstrap, CommandError, Consistency, LocalNetwork, MemberChange,
    MemberInfo, Node, NodeConfig, NodeError, NodeHandle, RestoreError, StateMachine,
};

/// A string map: `set key value`, `get key`; `panic` panics (to test that a
/// failing state machine stops the node).
#[derive(Default)]
struct Map {
    values: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
enum Command {
    Set(String, String),
    Panic,
}

impl StateMachine for Map {
    type Command = Command;
    type Response = Index;
    type Query = String;
    type QueryResponse = Option<String>;

    fn encode_command(command: &Command) -> Result<Bytes, CommandError> {
        match command {
            Command::Set(key, _) if key.is_empty() => Err(CommandError::new("empty key")),
            Command::Set(key, value) => Ok(Bytes::from(format!("set\n{key}\n{value}"))),
            Command::Panic => Ok(Bytes::from_static(b"panic")),
        }
    }

    fn decode_command(data: &[u8]) -> Result<Command, CommandError> {
        let text = std::str::from_utf8(data).map_err(|_| CommandError::new("not utf-8"))?;
        let mut parts = text.splitn(3, '\n');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(key), Some(value)) => Ok(Command::Set(key.to_string(), value.to_string())),
            (Some("panic"), None, None) => Ok(Command::Panic),
            _ => Err(CommandError::new("unknown command")),
        }
    }

    fn apply(&mut self, index: Index, command: Command) -> Index {
        match command {
            Command::Set(key, value) => {
                self.values.insert(key, value);
                index
            }
            Command::Panic => panic!("asked to panic"),
        }
    }

    fn query(&self, key: &String) -> Option<String> {
        self.values.get(key).cloned()
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        let text: String = self
            .values
            .iter()
            .map(|(key, value)| format!("{key}\t{value}\n"))
            .collect();
        Box::new(Cursor::new(text.into_bytes()))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        let mut text = String::new();
        snapshot.read_to_string(&mut text)?;
        self.values.clear();
        for line in text.lines() {
            let (key, value) = line
                .split_once('\t')
                .ok_or_else(|| RestoreError::Invalid(format!("bad line {line:?}")))?;
            self.values.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }
}

struct TestCluster {
    directory: tempfile::TempDir,
    network: LocalNetwork,
    handles: BTreeMap<u64, NodeHandle<Map>>,
    founders: AddressBook,
}

fn member(id: u64) -> MemberInfo {
    MemberInfo {
        peer_address: format!("local:{id}"),
        metadata: Bytes::new(),
    }
}

fn config(directory: &std::path::Path, id: u64) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId::new(id), directory.join(format!("node-{id}")));
    config.tick_interval = Duration::from_millis(10);
    config.request_timeout = Duration::from_secs(3);
    config.snapshot_interval_entries = 50;
    config.snapshot_keep_entries = 10;
    config
}

impl TestCluster {
    async fn start(count: u64) -> TestCluster {
        let directory = tempfile::tempdir().unwrap();
        let spool = directory.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let network = LocalNetwork::new(spool);
        let founders: AddressBook = (1..=count).map(|id| (NodeId::new(id), member(id))).collect();
        let mut cluster = TestCluster {
            directory,
            network,
            handles: BTreeMap::new(),
            founders,
        };
        for id in 1..=count {
            cluster
                .start_node(id, Bootstrap::Founders(cluster.founders.clone()))
                .await;
        }
        cluster
    }

    async fn start_node(&mut self, id: u64, bootstrap: Bootstrap) {
        let (sender, receiver) = inbound_channel();
        let transport = self.network.join(NodeId::new(id), sender);
        let handle = Node::start(
            config(self.directory.path(), id),
            Map::default(),
            bootstrap,
            transport,
            receiver,
        )
        .await
        .unwrap();
        self.handles.insert(id, handle);
    }

    async fn stop_node(&mut self, id: u64) {
        self.network.leave(NodeId::new(id));
        if let Some(handle) = self.handles.remove(&id) {
            handle.shutdown().await;
        }
    }

    fn node(&self, id: u64) -> &NodeHandle<Map> {
        &self.handles[&id]
    }

    async fn leader(&self) -> u64 {
        for _ in 0..500 {
            for (id, handle) in &self.handles {
                if let Ok(status) = handle.status().await {
                    if status.raft.role == keel::Role::Leader {
                        return *id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }
}

fn set(key: &str, value: &str) -> Command {
    Command::Set(key.to_string(), value.to_string())
}

async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_leader_and_follower_and_linearizable_reads_everywhere() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let first = cluster.node(leader).write(set("a", "1")).await.unwrap();
    let second = cluster.node(follower).write(set("a", "2")).await.unwrap();
    assert!(
        second > first,
        "the follower's write was forwarded and applied after"
    );
    for id in 1..=3 {
        let value = cluster
            .node(id)
            .read("a".to_string(), Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("2"), "linearizable read on {id}");
    }
    let lease = cluster
        .node(leader)
        .read("a".to_string(), Consistency::Lease)
        .await
        .unwrap();
    assert_eq!(lease.as_deref(), Some("2"));
    eventually(|| async {
        cluster
            .node(follower)
            .read("a".to_string(), Consistency::Stale)
            .await
            .unwrap()
            .as_deref()
            == Some("2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_commands_never_enter_the_log() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let before = cluster.node(leader).status().await.unwrap().raft.last_index;
    let error = cluster.node(leader).write(set("", "x")).await.unwrap_err();
    assert!(matches!(error, NodeError::Refused(_)), "{error}");
    assert_eq!(
        cluster.node(leader).status().await.unwrap().raft.last_index,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    for number in 0..120 {
        cluster
            .node(leader)
            .write(set(&format!("k{number}"), &number.to_string()))
            .await
            .unwrap();
    }
    // Restart every node (the log has been snapshotted and compacted twice).
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.start_node(id, Bootstrap::Join).await;
    }
    let leader = cluster.leader().await;
    for number in [0, 59, 119] {
        let value = cluster
            .node(leader)
            .read(format!("k{number}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(value, Some(number.to_string()), "k{number} after restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_through_a_snapshot_and_votes() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    for number in 0..120 {
        cluster
            .node(leader)
            .write(set(&format!("k{number}"), "v"))
            .await
            .unwrap();
    }
    cluster.start_node(4, Bootstrap::Join).await;
    cluster
        .node(leader)
        .add_learner(NodeId::new(4), member(4))
        .await
        .unwrap();
    cluster
        .node(leader)
        .add_voter(NodeId::new(4), member(4))
        .await
        .unwrap();
    eventually(|| async {
        cluster
            .node(4)
            .read("k119".to_string(), Consistency::Stale)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let status = cluster.node(4).status().await.unwrap();
    assert!(status.raft.conf_state.voters().contains(&NodeId::new(4)));
    assert_eq!(status.members.len(), 4, "the new member learned every address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_leader_refuses_fails_on_the_follower_at_once() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // A change naming a node twice is refused by the leader (the follower
    // does not judge changes; it forwards them), which hands it back: the
    // follower's caller learns it well before its 3 s request timeout.
    let started = std::time::Instant::now();
    let twice = vec![
        MemberChange::Remove(NodeId::new(9)),
        MemberChange::Remove(NodeId::new(9)),
    ];
    let error = cluster.node(follower).change_membership(twice).await.unwrap_err();
    assert!(matches!(error, NodeError::Refused(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}: timed out instead of being told",
        started.elapsed()
    );
    // The membership is untouched and the cluster still writes.
    let status = cluster.node(leader).status().await.unwrap();
    assert_eq!(status.raft.conf_state.voters().len(), 3);
    cluster.node(follower).write(set("after", "1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_is_elected_when_the_leader_is_cut_off() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    cluster.node(leader).write(set("before", "1")).await.unwrap();
    cluster.network.isolate(NodeId::new(leader));
    let mut new_leader = None;
    for _ in 0..500 {
        for id in (1..=3).filter(|id| *id != leader) {
            if cluster.node(id).status().await.unwrap().raft.role == keel::Role::Leader {
                new_leader = Some(id);
            }
        }
        if new_leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_leader = new_leader.expect("a new leader among the others");
    cluster.node(new_leader).write(set("after", "2")).await.unwrap();
    // The old leader steps down (check-quorum) and refuses writes.
    eventually(|| async { cluster.node(leader).status().await.unwrap().raft.role != keel::Role::Leader })
        .await;
    let error = cluster.node(leader).write(set("lost", "3")).await.unwrap_err();
    assert!(
        error.outcome_unknown() || matches!(error, NodeError::NotLeader { .. }),
        "{error}"
    );
    cluster.network.heal();
    eventually(|| async {
        cluster
            .node(leader)
            .read("after".to_string(), Consistency::Stale)
            .await
            .unwrap()
            .as_deref()
            == Some("2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfer_and_member_removal() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let target = (1..=3).find(|id| *id != leader).unwrap();
    cluster
        .node(leader)
        .transfer_leader(NodeId::new(target))
        .await
        .unwrap();
    assert_eq!(cluster.leader().await, target);
    cluster
        .node(target)
        .remove_member(NodeId::new(leader))
        .await
        .unwrap();
    let status = cluster.node(target).status().await.unwrap();
    assert_eq!(status.raft.conf_state.voters().len(), 2);
    cluster.node(target).write(set("two", "voters")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_state_machine_stops_the_node_with_a_fatal_error() {
    let cluster = TestCluster::start(1).await;
    let leader = cluster.leader().await;
    cluster.node(leader).write(set("a", "1")).await.unwrap();
    let error = cluster.node(leader).write(Command::Panic).await.unwrap_err();
    assert!(matches!(error, NodeError::Fatal(_)), "{error}");
    let error = cluster.node(leader).write(set("b", "2")).await.unwrap_err();
    assert!(matches!(error, NodeError::Fatal(_)), "{error}");
    let status = cluster.node(leader).status().await.unwrap();
    assert!(status.fatal.is_some());
}
