//! Black-box fault test: three `keel-kv serve` processes on loopback,
//! concurrent clients doing put/get/cas on a few keys while a nemesis
//! kills nodes with SIGKILL (the leader among them) and restarts them with
//! the same arguments, and pauses nodes with SIGSTOP/SIGCONT. Then:
//!
//! - the recorded history must be linearizable (keel-sim's checker), and
//! - every acknowledged write of a separate "ledger" client (one fresh key
//!   per write) must be readable at the end: nothing acknowledged is lost.
//!
//! CI runs it for about 30 s of faults. For a soak, set the duration:
//! `KEEL_KV_FAULT_SECS=600 cargo test --release -p keel-kv --test fault -- --nocapture`.

#![allow(clippy::unwrap_used)]

mod processes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::{ClientError, KvClient};
use keel_sim::kv::{Operation, Output};
use keel_sim::linearizability::{check_history, CheckedOperation, Verdict};
use processes::{log_tails, start_cluster, wait_for_leader, NODES};

const KEYS: u8 = 3;
const CLIENTS: u64 = 6;

/// How a client saw one operation end.
enum Seen {
    /// Done, with this output.
    Done(Output),
    /// Certainly not applied: leave it out of the history.
    NotApplied,
    /// May or may not have been applied.
    Unknown,
}

fn key_name(key: u8) -> String {
    format!("register-{key}")
}

fn parse_value(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a register holds a non-number: {body:?}"))
}

/// Sends one operation and classifies its outcome per KV_API.md: a
/// `timeout` or `no_leader` answer, or a connection that broke after the
/// request went out, leaves a write's outcome unknown; every other error
/// means it was not applied.
async fn perform(client: &KvClient, endpoint: &str, operation: Operation, bugs: &Mutex<Vec<String>>) -> Seen {
    let (method, path, body) = match operation {
        Operation::Put { key, value } => (Method::PUT, format!("/v1/kv/{}", key_name(key)), value.to_string()),
        Operation::Get { key } => (Method::GET, format!("/v1/kv/{}", key_name(key)), String::new()),
        Operation::Cas { key, expected, new } => (
            Method::POST,
            format!("/v1/kv/{}/cas", key_name(key)),
            serde_json::json!({ "expected": expected.map(|value| value.to_string()), "value": new.to_string() })
                .to_string(),
        ),
    };
    let response = match client
        .request_to(endpoint, method, &path, Bytes::from(body))
        .await
    {
        Ok(response) => response,
        Err(ClientError::Connect { .. }) => return Seen::NotApplied,
        Err(_) if matches!(operation, Operation::Get { .. }) => return Seen::NotApplied,
        Err(_) => return Seen::Unknown,
    };
    match (operation, response.status) {
        (Operation::Put { .. }, 200) => Seen::Done(Output::Written),
        (Operation::Get { .. }, 200) => Seen::Done(Output::Value(Some(parse_value(&response.body)))),
        (Operation::Get { .. }, 404) => Seen::Done(Output::Value(None)),
        (Operation::Cas { .. }, 200) => Seen::Done(Output::CasSucceeded(true)),
        (Operation::Cas { .. }, 409) if response.json().is_some_and(|body| body["ok"] == false) => {
            Seen::Done(Output::CasSucceeded(false))
        }
        (_, 503) => match response.error_code().as_deref() {
            Some("timeout" | "no_leader") if operation.is_write() => Seen::Unknown,
            Some("timeout" | "no_leader" | "shutting_down") => Seen::NotApplied,
            _ => {
                bugs.lock()
                    .unwrap()
                    .push(format!("{operation:?}: {} {}", response.status, response.text()));
                Seen::NotApplied
            }
        },
        _ => {
            bugs.lock()
                .unwrap()
                .push(format!("{operation:?}: {} {}", response.status, response.text()));
            Seen::NotApplied
        }
    }
}

#[derive(Default)]
struct Recorder {
    clock: AtomicU64,
    operations: Mutex<Vec<CheckedOperation>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    bugs: Mutex<Vec<String>>,
}

impl Recorder {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn run(&self, client: &KvClient, endpoint: &str, operation: Operation) -> Option<Output> {
        let invoked_at = self.tick();
        let seen = perform(client, endpoint, operation, &self.bugs).await;
        let completed_at = self.tick();
        let (label, checked, output) = match seen {
            Seen::Done(output) => (
                "ok",
                Some(CheckedOperation {
                    operation,
                    invoked_at,
                    completed_at: Some(completed_at),
                    output: Some(output),
                }),
                Some(output),
            ),
            Seen::NotApplied => ("not applied", None, None),
            Seen::Unknown => (
                "unknown",
                Some(CheckedOperation {
                    operation,
                    invoked_at,
                    completed_at: None,
                    output: None,
                }),
                None,
            ),
        };
        *self.counts.lock().unwrap().entry(label).or_default() += 1;
        if let Some(checked) = checked {
            self.operations.lock().unwrap().push(checked);
        }
        output
    }
}

/// One client: a closed loop of random operations on the registers,
/// each value written unique (client number in the high digits).
async fn client_loop(number: u64, endpoints: Vec<String>, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let client = KvClient::new(&endpoints, Duration::from_secs(4));
    let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ number.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let mut last_seen: BTreeMap<u8, Option<u64>> = BTreeMap::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        let key = (next() % KEYS as u64) as u8;
        let value = number * 1_000_000_000 + sequence;
        let operation = match next() % 10 {
            0..=3 => Operation::Get { key },
            4..=6 => Operation::Put { key, value },
            _ => Operation::Cas {
                key,
                expected: last_seen.get(&key).copied().flatten(),
                new: value,
            },
        };
        let endpoint = &endpoints[(next() % endpoints.len() as u64) as usize];
        match recorder.run(&client, endpoint, operation).await {
            Some(Output::Value(value)) => {
                last_seen.insert(key, value);
            }
            Some(Output::Written) => {
                last_seen.insert(key, Some(value));
            }
            Some(Output::CasSucceeded(true)) => {
                last_seen.insert(key, Some(value));
            }
            Some(Output::CasSucceeded(false)) => {}
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The ledger: one fresh key per write, sequentially; returns the keys
/// whose write was acknowledged.
async fn ledger_loop(endpoints: Vec<String>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let client = KvClient::new(&endpoints, Duration::from_secs(4));
    let mut acknowledged = Vec::new();
    let mut number = 0u64;
    while !stop.load(Ordering::Relaxed) {
        number += 1;
        let endpoint = &endpoints[number as usize % endpoints.len()];
        let path = format!("/v1/kv/ledger-{number}");
        match client
            .request_to(endpoint, Method::PUT, &path, Bytes::from(number.to_string()))
            .await
        {
            Ok(response) if response.status == 200 => acknowledged.push(number),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_and_acknowledged_writes_survive_kills_and_pauses() {
    let fault_seconds: u64 = std::env::var("KEEL_KV_FAULT_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30);
    let directory = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(directory.path());
    let endpoints: Vec<String> = nodes.iter().map(|node| node.client_addr.clone()).collect();
    let control = KvClient::new(&endpoints, Duration::from_secs(2));
    wait_for_leader(&control, &nodes, Duration::from_secs(30)).await;

    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for number in 1..=CLIENTS {
        clients.spawn(client_loop(
            number,
            endpoints.clone(),
            recorder.clone(),
            stop.clone(),
        ));
    }
    let ledger = tokio::spawn(ledger_loop(endpoints.clone(), stop.clone()));

    // The nemesis: a cycle of kill -9 the leader, kill -9 a follower,
    // pause the leader past an election timeout, pause a follower.
    let mut kills = Vec::new();
    let mut pauses = Vec::new();
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(fault_seconds) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = wait_for_leader(&control, &nodes, Duration::from_secs(30)).await;
        let follower = (1..=NODES)
            .find(|id| *id != leader && (*id + round).is_multiple_of(2))
            .unwrap_or(leader % NODES + 1);
        let node = |id: u64| (id - 1) as usize;
        match round % 4 {
            0 | 1 => {
                let victim = if round.is_multiple_of(4) { leader } else { follower };
                nodes[node(victim)].kill_9();
                kills.push((victim, victim == leader));
                tokio::time::sleep(Duration::from_millis(1200)).await;
                nodes[node(victim)].start();
            }
            _ => {
                let victim = if round % 4 == 2 { leader } else { follower };
                nodes[node(victim)].pause();
                pauses.push((victim, victim == leader));
                tokio::time::sleep(Duration::from_millis(1500)).await;
                nodes[node(victim)].resume();
            }
        }
        round += 1;
    }

    // Heal: every node runs; let the clients see the healed cluster a bit.
    wait_for_leader(&control, &nodes, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let acknowledged = ledger.await.unwrap();

    // Final reads of every register, after every other operation: they
    // must agree with the history too.
    for key in 0..KEYS {
        let mut read = None;
        for attempt in 0..50 {
            let endpoint = &endpoints[attempt % endpoints.len()];
            if let Some(output) = recorder.run(&control, endpoint, Operation::Get { key }).await {
                read = Some(output);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            read.is_some(),
            "final read of register {key} failed\n{}",
            log_tails(&nodes)
        );
    }

    // Nothing acknowledged is lost: every acknowledged ledger key reads back.
    let mut lost = Vec::new();
    for number in &acknowledged {
        let path = format!("/v1/kv/ledger-{number}");
        let response = control.request(Method::GET, &path, Bytes::new()).await.unwrap();
        if response.status != 200 || response.body != number.to_string() {
            lost.push((*number, response.status, response.text()));
        }
    }

    let operations = recorder.operations.lock().unwrap().clone();
    let counts = recorder.counts.lock().unwrap().clone();
    let verdict = check_history(&operations);
    println!(
        "fault test: {fault_seconds} s of faults, {} rounds; kills {:?} (id, was leader); pauses {:?}",
        round, kills, pauses
    );
    println!(
        "operations: {counts:?}; checked {}; ledger writes acknowledged {}, lost {}; verdict {verdict:?}",
        operations.len(),
        acknowledged.len(),
        lost.len()
    );
    let bugs = recorder.bugs.lock().unwrap().clone();
    assert!(bugs.is_empty(), "answers outside the contract: {bugs:#?}");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(verdict, Verdict::Linearizable, "\n{}", log_tails(&nodes));
    assert!(
        counts.get("ok").copied().unwrap_or(0) >= 100,
        "too little progress: {counts:?}\n{}",
        log_tails(&nodes)
    );
    assert!(
        kills.iter().any(|(_, leader)| *leader),
        "the leader was never killed"
    );
    assert!(!pauses.is_empty());
    drop(nodes);
}
