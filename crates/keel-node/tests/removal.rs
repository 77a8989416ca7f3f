//! A removed node learns that it was removed (issue 14, item 12), over
//! real loopback TCP through `keel_node::testing`: from its own log when
//! it is up at the time, from the members' refusals when it was down; it
//! says so in its status and `halted()`, refuses requests that need the
//! cluster, and knows it at once when restarted.

use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Index, NodeId};
use keel_node::testing::TestCluster;
use keel_node::{CommandError, Consistency, Halt, NodeError, Removal, RestoreError, StateMachine};

/// A sum of the numbers written.
#[derive(Default)]
struct Sum(u64);

impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type QueryResponse = u64;

    fn encode_command(command: &u64) -> Result<Bytes, CommandError> {
        Ok(Bytes::copy_from_slice(&command.to_le_bytes()))
    }

    fn decode_command(data: &[u8]) -> Result<u64, CommandError> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| CommandError::new("not a u64"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn apply(&mut self, _index: Index, command: u64) -> u64 {
        self.0 += command;
        self.0
    }

    fn query(&self, _query: &()) -> u64 {
        self.0
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(self.0.to_le_bytes().to_vec()))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        let mut bytes = [0u8; 8];
        snapshot.read_exact(&mut bytes)?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(15);

async fn halted_within(cluster: &TestCluster<Sum>, node: NodeId) -> Halt {
    tokio::time::timeout(WAIT, cluster.handle(node).halted())
        .await
        .unwrap_or_else(|_| panic!("node {node} did not learn it was removed within {WAIT:?}"))
}

async fn a_follower(cluster: &TestCluster<Sum>) -> (NodeId, NodeId) {
    let leader = cluster.wait_for_leader(WAIT).await;
    let follower = cluster.running().into_iter().find(|id| *id != leader).unwrap();
    (leader, follower)
}

async fn caught_up(cluster: &TestCluster<Sum>, node: NodeId, sum: u64) {
    let deadline = Instant::now() + WAIT;
    while cluster.handle(node).read((), Consistency::Stale).await != Ok(sum) {
        assert!(Instant::now() < deadline, "node {node} did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_up_learns_it_from_its_log() {
    let mut cluster = TestCluster::start(3, |_| Sum::default()).await;
    let (leader, removed) = a_follower(&cluster).await;
    cluster.handle(leader).write(5).await.unwrap();
    // Caught up, so that the removal is the next entry it receives (a
    // node far behind learns from the members' refusals instead).
    caught_up(&cluster, removed, 5).await;
    cluster.handle(leader).remove_member(removed).await.unwrap();

    let halt = halted_within(&cluster, removed).await;
    assert!(matches!(halt, Halt::Removed(Removal::Applied { .. })), "{halt:?}");
    let status = cluster.handle(removed).status().await.unwrap();
    assert!(
        matches!(status.removed, Some(Removal::Applied { .. })),
        "{status:?}"
    );
    // It refuses what needs the cluster, and still answers stale reads.
    assert_eq!(cluster.handle(removed).write(1).await, Err(NodeError::NotMember));
    assert_eq!(
        cluster.handle(removed).read((), Consistency::Linearizable).await,
        Err(NodeError::NotMember)
    );
    assert_eq!(cluster.handle(removed).read((), Consistency::Stale).await, Ok(5));
    // The members carry on.
    assert_eq!(cluster.handle(leader).write(1).await, Ok(6));

    // Restarted on its directory, it knows at once.
    cluster.crash(removed).await;
    cluster.restart(removed).await;
    let halt = tokio::time::timeout(Duration::from_millis(500), cluster.handle(removed).halted())
        .await
        .expect("a restarted removed node knows at once");
    assert!(
        matches!(halt, Halt::Removed(Removal::Recorded { .. })),
        "{halt:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_learns_it_from_the_members_refusals() {
    let mut cluster = TestCluster::start(3, |_| Sum::default()).await;
    let (leader, removed) = a_follower(&cluster).await;
    cluster.crash(removed).await;
    cluster.handle(leader).remove_member(removed).await.unwrap();
    cluster.handle(leader).write(5).await.unwrap();

    // Its log still makes it a voter; the members refuse it.
    let started = Instant::now();
    cluster.restart(removed).await;
    let halt = halted_within(&cluster, removed).await;
    match halt {
        Halt::Removed(Removal::RefusedByMembers { voters }) => {
            assert_eq!(voters.len(), 2, "{voters:?}");
            assert!(!voters.contains(&removed));
        }
        other => panic!("{other:?}"),
    }
    println!("learned it was removed in {:?}", started.elapsed());
    assert_eq!(cluster.handle(removed).write(1).await, Err(NodeError::NotMember));
    // It did not disturb the members.
    assert_eq!(cluster.handle(leader).write(1).await, Ok(6));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_to_be_added_is_not_removed() {
    // Goal: a new node that knows no configuration with itself in it, and
    // one just added while a member lags, is never taken for removed.
    let mut cluster = TestCluster::start(3, |_| Sum::default()).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let joiner = cluster.add_node().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster
        .handle(leader)
        .add_voter(joiner, cluster.member_info(joiner))
        .await
        .unwrap();
    assert_eq!(cluster.handle(leader).write(3).await, Ok(3));
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let status = cluster.handle(joiner).status().await.unwrap();
        assert_eq!(status.removed, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}
