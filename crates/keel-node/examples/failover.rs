//! Measures failover over real loopback TCP: a three-node cluster, the
//! leader killed, and the time from the kill to the first write that
//! succeeds on the survivors. Prints the figure for each trial.
//!
//! `cargo run -p keel-node --example failover --features test-support -- [TICK_MS] [TRIALS]`
//! (defaults: 100 ms ticks, the production default, and 5 trials). The
//! election timeout is 10–20 ticks, so expect roughly 1–2 s at 100 ms.

use std::io::{Cursor, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::Index;
use keel_node::testing::TestCluster;
use keel_node::{CommandError, RestoreError, StateMachine};

/// A counter: each write adds to it.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type QueryResponse = u64;

    fn encode_command(command: &u64) -> Result<Bytes, CommandError> {
        Ok(Bytes::copy_from_slice(&command.to_le_bytes()))
    }
    fn decode_command(data: &[u8]) -> Result<u64, CommandError> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| CommandError::new("not 8 bytes"))?;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut arguments = std::env::args().skip(1);
    let tick_ms: u64 = arguments.next().and_then(|text| text.parse().ok()).unwrap_or(100);
    let trials: usize = arguments.next().and_then(|text| text.parse().ok()).unwrap_or(5);
    let wait = Duration::from_millis(tick_ms * 200);
    let mut figures = Vec::new();
    for trial in 1..=trials {
        let mut cluster = TestCluster::builder(|_| Counter::default())
            .nodes(3)
            .configure(move |config| config.tick_interval = Duration::from_millis(tick_ms))
            .start()
            .await;
        let leader = cluster.wait_for_leader(wait).await;
        for _ in 0..10 {
            cluster
                .handle(leader)
                .write(1)
                .await
                .expect("a write before the kill");
        }
        let killed = Instant::now();
        cluster.crash(leader).await;
        'retry: loop {
            for node in cluster.running() {
                let handle = cluster.handle(node);
                let attempt = tokio::time::timeout(Duration::from_millis(tick_ms), handle.write(1));
                if let Ok(Ok(_)) = attempt.await {
                    break 'retry;
                }
            }
            assert!(killed.elapsed() < wait, "no write succeeded after the kill");
        }
        let figure = killed.elapsed();
        println!("trial {trial}: first successful write {figure:?} after killing the leader");
        figures.push(figure);
        cluster.shutdown().await;
    }
    figures.sort();
    if let (Some(min), Some(max)) = (figures.first(), figures.last()) {
        let median = figures[figures.len() / 2];
        println!(
            "failover over loopback TCP, 3 nodes, {tick_ms} ms ticks, election timeout 10-20 ticks: \
             min {min:?}, median {median:?}, max {max:?} ({trials} trials)"
        );
    }
}
