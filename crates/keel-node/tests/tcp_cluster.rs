//! keel-node over real loopback TCP through `keel_node::testing`: elect,
//! replicate, fail over, restart, snapshot a multi-megabyte state to a new
//! member, remove, transfer, and refuse linearizable reads on a minority.
//! Timings are printed, never asserted.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Index, NodeId};
use keel_node::testing::TestCluster;
use keel_node::{CommandError, Consistency, NodeError, RestoreError, StateMachine};

/// Values by key. A query for a key returns it; every answer carries a
/// digest of the whole state, to compare nodes.
#[derive(Default)]
struct Store {
    values: BTreeMap<u64, Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    value: Option<Vec<u8>>,
    keys: usize,
    bytes: usize,
    digest: u64,
}

impl Store {
    fn digest(&self) -> u64 {
        // FNV-1a over keys and values.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (key, value) in &self.values {
            for byte in key.to_le_bytes().iter().chain(value.iter()) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }
}

impl StateMachine for Store {
    type Command = (u64, Vec<u8>);
    type Response = Index;
    type Query = u64;
    type QueryResponse = Answer;

    fn encode_command((key, value): &(u64, Vec<u8>)) -> Result<Bytes, CommandError> {
        let mut data = key.to_le_bytes().to_vec();
        data.extend_from_slice(value);
        Ok(Bytes::from(data))
    }

    fn decode_command(data: &[u8]) -> Result<(u64, Vec<u8>), CommandError> {
        let key: [u8; 8] = data
            .get(..8)
            .and_then(|key| key.try_into().ok())
            .ok_or_else(|| CommandError::new("short"))?;
        Ok((u64::from_le_bytes(key), data[8..].to_vec()))
    }

    fn apply(&mut self, index: Index, (key, value): (u64, Vec<u8>)) -> Index {
        self.values.insert(key, value);
        index
    }

    fn query(&self, key: &u64) -> Answer {
        Answer {
            value: self.values.get(key).cloned(),
            keys: self.values.len(),
            bytes: self.values.values().map(Vec::len).sum(),
            digest: self.digest(),
        }
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        let mut data = Vec::new();
        for (key, value) in &self.values {
            data.extend_from_slice(&key.to_le_bytes());
            data.extend_from_slice(&(value.len() as u64).to_le_bytes());
            data.extend_from_slice(value);
        }
        Box::new(Cursor::new(data))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        let mut data = Vec::new();
        snapshot.read_to_end(&mut data)?;
        let mut values = BTreeMap::new();
        let mut rest = &data[..];
        let word = |bytes: &[u8]| -> Result<u64, RestoreError> {
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|_| RestoreError::Invalid("truncated".into()))?;
            Ok(u64::from_le_bytes(bytes))
        };
        while !rest.is_empty() {
            if rest.len() < 16 {
                return Err(RestoreError::Invalid("truncated header".into()));
            }
            let key = word(&rest[..8])?;
            let length = word(&rest[8..16])? as usize;
            let value = rest
                .get(16..16 + length)
                .ok_or_else(|| RestoreError::Invalid("truncated value".into()))?;
            values.insert(key, value.to_vec());
            rest = &rest[16 + length..];
        }
        self.values = values;
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn id(id: u64) -> NodeId {
    NodeId::new(id)
}

async fn cluster(size: u64) -> TestCluster<Store> {
    TestCluster::builder(|_| Store::default())
        .nodes(size)
        .configure(|config| config.request_timeout = Duration::from_secs(2))
        .start()
        .await
}

/// Waits until `node` has applied a state with `digest`.
async fn converges(cluster: &TestCluster<Store>, node: NodeId, expected: &Answer) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(answer) = cluster.handle(node).read(0, Consistency::Stale).await {
            if answer.digest == expected.digest && answer.keys == expected.keys {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node {node} did not converge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_then_write_and_read_through_every_node() {
    let started = Instant::now();
    let cluster = cluster(3).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    for number in 0..30u64 {
        let node = id(number % 3 + 1);
        cluster
            .handle(node)
            .write((number, format!("v{number}").into_bytes()))
            .await
            .unwrap();
    }
    for node in cluster.running() {
        let answer = cluster
            .handle(node)
            .read(29, Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(answer.value, Some(b"v29".to_vec()), "node {node}");
        assert_eq!(answer.keys, 30);
        let lease = cluster.handle(node).read(7, Consistency::Lease).await.unwrap();
        assert_eq!(lease.value, Some(b"v7".to_vec()));
    }
    let metrics = cluster.handle(leader).metrics();
    assert!(metrics.is_leader && metrics.applied_index >= 30);
    cluster.shutdown().await;
    println!("elect/write/read: {:?}", started.elapsed());
}

/// Writes through the first node that takes it, retrying every 100 ms;
/// returns when one succeeded.
async fn write_until_accepted(cluster: &TestCluster<Store>, key: u64) -> NodeId {
    loop {
        for node in cluster.running() {
            let handle = cluster.handle(node);
            let attempt = handle.write((key, b"after".to_vec()));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), attempt).await {
                return node;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_failover_then_restart_catches_up() {
    let mut cluster = cluster(3).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    for number in 0..20u64 {
        cluster
            .handle(leader)
            .write((number, vec![1; 100]))
            .await
            .unwrap();
    }
    let killed = Instant::now();
    cluster.crash(leader).await;
    let took = tokio::time::timeout(WAIT, write_until_accepted(&cluster, 1_000))
        .await
        .expect("a write succeeds after the leader crash");
    let failover = killed.elapsed();
    println!("failover: first successful write {failover:?} after the leader was killed (through node {took}, 20 ms ticks, election timeout 10-20 ticks)");
    let new_leader = cluster.wait_for_leader_where(WAIT, |node| node != leader).await;
    for number in 20..40u64 {
        cluster
            .handle(new_leader)
            .write((number, vec![2; 100]))
            .await
            .unwrap();
    }
    // The old leader restarts from disk and catches up.
    cluster.restart(leader).await;
    let expected = cluster
        .handle(new_leader)
        .read(0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(expected.keys, 41);
    converges(&cluster, leader, &expected).await;
    let answer = cluster
        .handle(leader)
        .read(39, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(answer.value, Some(vec![2; 100]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_follower_restarts_and_catches_up_and_a_paused_one_resumes() {
    let mut cluster = cluster(3).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|node| *node != leader)
        .unwrap();
    let other = cluster
        .running()
        .into_iter()
        .find(|node| *node != leader && *node != follower)
        .unwrap();
    cluster.handle(leader).write((1, b"one".to_vec())).await.unwrap();
    cluster.crash(follower).await;
    for number in 2..50u64 {
        cluster
            .handle(leader)
            .write((number, b"x".to_vec()))
            .await
            .unwrap();
    }
    cluster.restart(follower).await;
    let expected = cluster
        .handle(leader)
        .read(0, Consistency::Linearizable)
        .await
        .unwrap();
    converges(&cluster, follower, &expected).await;

    // Pause the other follower: it misses writes, then catches up.
    cluster.pause(other);
    for number in 50..60u64 {
        cluster
            .handle(leader)
            .write((number, b"y".to_vec()))
            .await
            .unwrap();
    }
    let stale = cluster.handle(other).read(0, Consistency::Stale).await.unwrap();
    assert!(stale.keys < 59, "a paused node receives nothing");
    cluster.resume(other);
    let expected = cluster
        .handle(leader)
        .read(0, Consistency::Linearizable)
        .await
        .unwrap();
    converges(&cluster, other, &expected).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_receives_a_multi_megabyte_snapshot() {
    let mut cluster = TestCluster::builder(|_| Store::default())
        .nodes(3)
        .configure(|config| {
            config.request_timeout = Duration::from_secs(5);
            config.snapshot_interval_entries = 16;
            config.snapshot_keep_entries = 2;
        })
        .start()
        .await;
    let leader = cluster.wait_for_leader(WAIT).await;
    // 4 MiB of values in 64 KiB writes.
    let started = Instant::now();
    for number in 0..64u64 {
        let value = vec![(number % 251) as u8; 64 * 1024];
        cluster.handle(leader).write((number, value)).await.unwrap();
    }
    println!("wrote 4 MiB in {:?}", started.elapsed());
    let joining = Instant::now();
    let new = cluster.add_node().await;
    cluster
        .handle(leader)
        .add_voter(new, cluster.member_info(new))
        .await
        .unwrap();
    let expected = cluster
        .handle(leader)
        .read(0, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(expected.bytes, 4 * 1024 * 1024);
    converges(&cluster, new, &expected).await;
    println!("new node caught up (4 MiB snapshot) in {:?}", joining.elapsed());
    let answer = cluster
        .handle(new)
        .read(63, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(answer, expected_with(&expected, vec![63u8; 64 * 1024]));
    assert!(cluster.handle(new).metrics().snapshots_installed_total >= 1);
    assert!(cluster.handle(leader).metrics().snapshots_sent_total >= 1);
    cluster.shutdown().await;
}

fn expected_with(summary: &Answer, value: Vec<u8>) -> Answer {
    Answer {
        value: Some(value),
        ..summary.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leadership_then_remove_a_node() {
    let mut cluster = cluster(3).await;
    let leader = cluster.wait_for_leader(WAIT).await;
    cluster.handle(leader).write((1, b"a".to_vec())).await.unwrap();
    let target = cluster
        .running()
        .into_iter()
        .find(|node| *node != leader)
        .unwrap();
    cluster.handle(leader).transfer_leader(target).await.unwrap();
    assert_eq!(cluster.wait_for_leader(WAIT).await, target);
    cluster.handle(target).write((2, b"b".to_vec())).await.unwrap();

    // Remove the old leader; the two left keep writing.
    cluster.handle(target).remove_member(leader).await.unwrap();
    cluster.crash(leader).await;
    let status = cluster.handle(target).status().await.unwrap();
    assert!(!status.raft.conf_state.voters().contains(&leader));
    assert!(!status.members.contains_key(&leader));
    cluster.handle(target).write((3, b"c".to_vec())).await.unwrap();
    let other = cluster
        .running()
        .into_iter()
        .find(|node| *node != target)
        .unwrap();
    let answer = cluster
        .handle(other)
        .read(3, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(answer.value, Some(b"c".to_vec()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_leader_stops_serving_linearizable_reads() {
    let cluster = TestCluster::builder(|_| Store::default())
        .nodes(3)
        .configure(|config| config.request_timeout = Duration::from_secs(1))
        .start()
        .await;
    let old = cluster.wait_for_leader(WAIT).await;
    cluster.handle(old).write((1, b"old".to_vec())).await.unwrap();
    cluster.isolate(old);
    // Right away (before it steps down) and later: never an answer.
    let early = cluster.handle(old).read(1, Consistency::Linearizable).await;
    assert!(
        early.is_err(),
        "a cut-off leader answered a linearizable read: {early:?}"
    );
    let new = cluster.wait_for_leader_where(WAIT, |node| node != old).await;
    cluster.handle(new).write((1, b"new".to_vec())).await.unwrap();
    for _ in 0..3 {
        match cluster.handle(old).read(1, Consistency::Linearizable).await {
            Err(NodeError::NoLeader | NodeError::Timeout | NodeError::NotLeader { .. }) => {}
            other => panic!("the minority answered a linearizable read: {other:?}"),
        }
    }
    // The majority serves the new value.
    let answer = cluster
        .handle(new)
        .read(1, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(answer.value, Some(b"new".to_vec()));
    // Healed, the old leader follows and sees the new value.
    cluster.heal();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(answer) = cluster.handle(old).read(1, Consistency::Linearizable).await {
            assert_eq!(answer.value, Some(b"new".to_vec()));
            break;
        }
        assert!(Instant::now() < deadline, "the healed node never served a read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}
