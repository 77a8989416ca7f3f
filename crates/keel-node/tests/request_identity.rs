//! Request identity across restarts (issue 13, item 3): an entry a node
//! proposed in an earlier life, committed after the node restarted, must
//! not answer a request of the new life, even one that the new life
//! numbers exactly as the old life numbered the old request.

use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Index, NodeId};
use keel_node::testing::TestCluster;
use keel_node::{CommandError, RestoreError, StateMachine};

/// Answers every write with the value it wrote, so a caller can tell its
/// own command's response from another's.
#[derive(Default)]
struct Echo {
    last: Vec<u8>,
}

impl StateMachine for Echo {
    type Command = Vec<u8>;
    type Response = Vec<u8>;
    type Query = ();
    type QueryResponse = Vec<u8>;

    fn encode_command(command: &Vec<u8>) -> Result<Bytes, CommandError> {
        Ok(Bytes::copy_from_slice(command))
    }

    fn decode_command(data: &[u8]) -> Result<Vec<u8>, CommandError> {
        Ok(data.to_vec())
    }

    fn apply(&mut self, _index: Index, command: Vec<u8>) -> Vec<u8> {
        self.last = command.clone();
        command
    }

    fn query(&self, _query: &()) -> Vec<u8> {
        self.last.clone()
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(self.last.clone()))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        self.last.clear();
        snapshot.read_to_end(&mut self.last)?;
        Ok(())
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The goal: a write proposed before a restart and committed after it
/// answers nobody in the new life; the new life's first write (request
/// number 1 again, as the old one was) gets its own response.
///
/// How: five nodes, so the leader and the proposing follower are not a
/// quorum on their own. With every link cut except leader↔follower (and
/// check-quorum off, so the leader keeps leading), the follower's first
/// write reaches the leader's log but cannot commit. The follower
/// restarts, learns the leader again, and writes once more; only then are
/// the links healed, and both entries commit, the old one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_from_before_a_restart_never_answers_a_new_request() {
    let mut cluster = TestCluster::builder(|_| Echo::default())
        .nodes(5)
        .configure(|config| config.raft.check_quorum = false)
        .start()
        .await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let others: Vec<NodeId> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader && *id != follower)
        .collect();
    for other in &others {
        cluster.isolate(*other);
    }
    let last_before = cluster
        .handle(leader)
        .status()
        .await
        .expect("status")
        .raft
        .last_index;

    // The old life's first (and only) request: it reaches the leader's log
    // and waits there for a quorum.
    let old_life = cluster.handle(follower);
    let old_write = tokio::spawn(async move { old_life.write(b"old".to_vec()).await });
    let leader_handle = cluster.handle(leader);
    wait_until("the leader holds the old write", || {
        let leader_handle = leader_handle.clone();
        async move { leader_handle.status().await.expect("status").raft.last_index > last_before }
    })
    .await;
    let status = leader_handle.status().await.expect("status");
    assert!(
        status.raft.hard_state.commit <= last_before,
        "committed without a quorum"
    );

    cluster.crash(follower).await;
    let old_outcome = old_write.await.expect("the old writer's task");
    assert!(
        old_outcome.is_err(),
        "the old write cannot have been answered: {old_outcome:?}"
    );
    cluster.restart(follower).await;
    let new_life = cluster.handle(follower);
    wait_until("the restarted follower knows the leader", || {
        let new_life = new_life.clone();
        async move { new_life.status().await.expect("status").raft.leader == Some(leader) }
    })
    .await;

    // The new life's first request, registered while the old entry is
    // still uncommitted.
    let writer = new_life.clone();
    let new_write = tokio::spawn(async move { writer.write(b"new".to_vec()).await });
    wait_until("the leader holds the new write", || {
        let leader_handle = leader_handle.clone();
        async move { leader_handle.status().await.expect("status").raft.last_index > last_before.plus(1) }
    })
    .await;
    cluster.heal();

    let response = new_write
        .await
        .expect("the new writer's task")
        .expect("the new write");
    assert_eq!(
        String::from_utf8_lossy(&response),
        "new",
        "the new caller got the response of the entry its node proposed before restarting"
    );
    cluster.shutdown().await;
}
