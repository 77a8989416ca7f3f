//! Which cluster a node belongs to (issue 14, items 4 and 11), checked with
//! real `keel-kv serve` processes: clusters founded with different tokens,
//! or founders given different lists, get different cluster ids and refuse
//! each other's nodes at the handshake; a node's --peer-addr must be its
//! entry in the founding list; a restart with another list or token is
//! refused; a node joins only with its cluster's id.

#![allow(clippy::unwrap_used)]

mod processes;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel::NodeId;
use keel_kv::client::KvClient;
use processes::{free_address, log_tails, serve_arguments, start_cluster_with, wait_for_leader, NodeProcess};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// How long a node that must not join is watched: many election timeouts.
const WATCH: Duration = Duration::from_secs(3);

fn client() -> KvClient {
    KvClient::new(&["127.0.0.1:1".to_string()], Duration::from_secs(2))
}

/// `GET /v1/cluster` on `address`, if it answers.
async fn view(address: &str) -> Option<Value> {
    let response = client()
        .request_to(address, Method::GET, "/v1/cluster", Bytes::new())
        .await
        .ok()?;
    (response.status == 200).then(|| response.json()).flatten()
}

/// Waits until `address` answers `GET /v1/cluster`.
async fn view_when_up(address: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(view) = view(address).await {
            return view;
        }
        assert!(Instant::now() < deadline, "{address} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(address: &str, key: &str, value: &str) -> u16 {
    client()
        .request_to(
            address,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            Bytes::from(value.to_string()),
        )
        .await
        .map_or(0, |response| response.status)
}

async fn put_acknowledged(nodes: &[NodeProcess], key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    while put(&nodes[0].client_addr, key, value).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no write acknowledged\n{}",
            log_tails(nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stale read of `key` on `address`: its status.
async fn stale_status(address: &str, key: &str) -> u16 {
    client()
        .request_to(
            address,
            Method::GET,
            &format!("/v1/kv/{key}?consistency=stale"),
            Bytes::new(),
        )
        .await
        .map_or(0, |response| response.status)
}

/// Watches `outsider` for [`WATCH`]: it must never know a leader or hold
/// `key` (the cluster's data).
async fn assert_stays_outside(outsider: &NodeProcess, key: &str, nodes: &[NodeProcess]) {
    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        if let Some(view) = view(&outsider.client_addr).await {
            assert!(
                view["leader"].is_null(),
                "the outsider found a leader: {view}\n{}",
                log_tails(nodes)
            );
        }
        assert_ne!(
            stale_status(&outsider.client_addr, key).await,
            200,
            "the outsider has the cluster's data"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `keel-kv` with `arguments`, which must exit by itself within 10 s:
/// its status and standard error.
fn run_to_exit(arguments: &[String]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-kv"))
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel-kv {arguments:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// The arguments of a founder `id` of `initial`, reached at `addresses`.
fn founder(id: u64, directory: &Path, addresses: (&str, &str), initial: &str) -> Vec<String> {
    let mut arguments = serve_arguments(id, directory, addresses);
    arguments.extend(["--initial-cluster".to_string(), initial.to_string()]);
    arguments
}

fn founders_list(nodes: &[NodeProcess]) -> Vec<(NodeId, &str)> {
    nodes
        .iter()
        .map(|node| (NodeId::new(node.id), node.peer_addr.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_founded_with_another_token_cannot_join_or_disturb_a_cluster() {
    // Goal (item 4): cluster A is founded with token "alpha". Its node 3 is
    // replaced by a node founded from scratch with the same list on the
    // same peer address but token "beta" (a cluster rebuilt beside its old
    // members). The ids differ, so the newcomer is refused at the
    // handshake: it never learns A's leader or data, and A keeps its
    // leader and term.
    let directory = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(&directory.path().join("a"), &["--initial-cluster-token", "alpha"]);
    let leader = wait_for_leader(&client(), &nodes, WAIT).await;
    put_acknowledged(&nodes, "k", "a").await;
    let expected = keel_net::derive_cluster_id(founders_list(&nodes), "alpha");
    for node in &nodes {
        let view = view_when_up(&node.client_addr).await;
        assert_eq!(view["cluster_id"], format!("{expected:016x}"), "{view}");
    }
    let term = view_when_up(&nodes[0].client_addr).await["term"].clone();
    assert_eq!(
        view_when_up(&nodes[0].client_addr).await["leader"].as_u64(),
        Some(leader)
    );

    // A follower is replaced, so that A has no reason to elect again.
    let replaced = nodes.iter().position(|node| node.id != leader).unwrap();
    nodes[replaced].kill_9();
    let (id, peer_addr) = (nodes[replaced].id, nodes[replaced].peer_addr.clone());
    let initial: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}={}", node.id, node.peer_addr))
        .collect();
    let client_addr = free_address();
    let mut arguments = founder(
        id,
        &directory.path().join("b"),
        (&peer_addr, &client_addr),
        &initial.join(","),
    );
    arguments.extend(["--initial-cluster-token".to_string(), "beta".to_string()]);
    std::fs::create_dir_all(directory.path().join("b")).unwrap();
    let newcomer = NodeProcess::spawn(
        id,
        arguments,
        (peer_addr, client_addr.clone()),
        directory.path().join("b").join(format!("node-{id}.log")),
    );
    let view = view_when_up(&client_addr).await;
    assert_ne!(view["cluster_id"], format!("{expected:016x}"), "{view}");
    assert_stays_outside(&newcomer, "k", &nodes).await;

    let leader_node = nodes.iter().find(|node| node.id == leader).unwrap();
    let a = view_when_up(&leader_node.client_addr).await;
    assert_eq!(
        (a["leader"].as_u64(), &a["term"]),
        (Some(leader), &term),
        "A was disturbed: {a}"
    );
    assert_eq!(put(&leader_node.client_addr, "k2", "a").await, 200);
    assert!(
        newcomer.log().contains("another cluster"),
        "the newcomer does not say why it is refused:\n{}",
        newcomer.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn founders_given_different_lists_get_different_ids_and_refuse_each_other() {
    // Goal (item 11): nodes 1 and 2 are founded with {1, 2, 3}; node 3 with
    // {1, 2, 3, 4} (an operator's typo). Before, all three ran as one
    // cluster with two views of its membership. Now node 3's cluster id
    // differs: 1 and 2 elect a leader and serve, node 3 stays outside.
    let directory = tempfile::tempdir().unwrap();
    let addresses: Vec<(String, String)> = (0..4).map(|_| (free_address(), free_address())).collect();
    let list = |count: usize| -> String {
        addresses[..count]
            .iter()
            .enumerate()
            .map(|(index, (peer, _))| format!("{}={peer}", index + 1))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let (peer, client) = addresses[id as usize - 1].clone();
        let initial = if id == 3 { list(4) } else { list(3) };
        let arguments = founder(id, directory.path(), (&peer, &client), &initial);
        let log_path = directory.path().join(format!("node-{id}.log"));
        nodes.push(NodeProcess::spawn(id, arguments, (peer, client), log_path));
    }
    wait_for_leader(&client(), &nodes[..2], WAIT).await;
    put_acknowledged(&nodes, "k", "v").await;
    let (one, three) = (
        view_when_up(&nodes[0].client_addr).await,
        view_when_up(&nodes[2].client_addr).await,
    );
    assert_ne!(one["cluster_id"], three["cluster_id"], "{one}\n{three}");
    assert_stays_outside(&nodes[2], "k", &nodes).await;
    assert_eq!(put(&nodes[0].client_addr, "k2", "v").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_address_that_is_not_the_nodes_entry_is_refused_at_start() {
    // Goal (item 11): --peer-addr must be this node's entry in the founding
    // list, written the same way; otherwise `serve` exits (status 3) before
    // binding any port, saying what to do.
    let directory = tempfile::tempdir().unwrap();
    let (peer, other, client) = (free_address(), free_address(), free_address());
    let spelled = peer.replace("127.0.0.1", "localhost");
    for listed in [other, spelled] {
        let arguments = founder(1, directory.path(), (&peer, &client), &format!("1={listed}"));
        let (status, stderr) = run_to_exit(&arguments);
        assert_eq!(status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("differs from this node's entry"), "{stderr}");
        assert!(stderr.contains(&format!("1={listed}")), "{stderr}");
        assert!(
            std::net::TcpListener::bind(&client).is_ok(),
            "the client port was bound"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_founding_list_or_token_is_refused() {
    // Goal (item 11): the cluster id is stored on the first start; a
    // restart whose --initial-cluster (or token) gives another id is
    // refused, saying what to do; a restart with the same flags, or with
    // no founding flags at all, resumes the data.
    let directory = tempfile::tempdir().unwrap();
    let (peer, client) = (free_address(), free_address());
    let initial = format!("1={peer}");
    let arguments = founder(1, directory.path(), (&peer, &client), &initial);
    let log_path = directory.path().join("node-1.log");
    let mut node = NodeProcess::spawn(1, arguments.clone(), (peer.clone(), client.clone()), log_path);
    put_acknowledged(std::slice::from_ref(&node), "k", "v").await;
    node.kill_9();

    let grown = founder(
        1,
        directory.path(),
        (&peer, &client),
        &format!("{initial},2={}", free_address()),
    );
    let mut retokened = arguments.clone();
    retokened.extend(["--initial-cluster-token".to_string(), "another".to_string()]);
    for changed in [grown, retokened] {
        let (status, stderr) = run_to_exit(&changed);
        assert_eq!(status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("belongs to cluster"), "{stderr}");
        assert!(stderr.contains("empty --data-dir"), "{stderr}");
    }

    let without_list: Vec<String> = serve_arguments(1, directory.path(), (&peer, &client));
    for restart in [without_list, arguments] {
        node.set_arguments(restart);
        node.start();
        let deadline = Instant::now() + WAIT;
        while stale_status(&client, "k").await != 200 {
            assert!(
                Instant::now() < deadline,
                "the data did not come back:\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.kill_9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_only_with_its_clusters_id() {
    // Goal (item 4): a --join node's first start needs --cluster-id; with
    // the id from a member's GET /v1/cluster it is added and catches up;
    // with another id, added all the same, it never receives anything.
    let directory = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(&directory.path().join("a"), &["--initial-cluster-token", "gamma"]);
    wait_for_leader(&client(), &nodes, WAIT).await;
    put_acknowledged(&nodes, "k", "v").await;
    let cluster_id = view_when_up(&nodes[0].client_addr).await["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();

    let joiner = |id: u64, cluster_id: Option<&str>| {
        let (peer, client) = (free_address(), free_address());
        let mut arguments = serve_arguments(id, directory.path(), (&peer, &client));
        arguments.push("--join".to_string());
        if let Some(cluster_id) = cluster_id {
            arguments.extend(["--cluster-id".to_string(), cluster_id.to_string()]);
        }
        (arguments, peer, client)
    };
    let (arguments, _, _) = joiner(4, None);
    let (status, stderr) = run_to_exit(&arguments);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--join --cluster-id"), "{stderr}");

    let wrong = format!("{:016x}", u64::from_str_radix(&cluster_id, 16).unwrap() ^ 1);
    for (id, given, joins) in [(4, cluster_id.as_str(), true), (5, wrong.as_str(), false)] {
        let (arguments, peer, client_addr) = joiner(id, Some(given));
        let log_path = directory.path().join(format!("node-{id}.log"));
        let node = NodeProcess::spawn(id, arguments, (peer.clone(), client_addr.clone()), log_path);
        view_when_up(&client_addr).await;
        let body =
            format!(r#"{{"id":{id},"peer_addr":"{peer}","client_addr":"{client_addr}","role":"learner"}}"#);
        let added = client()
            .request_to(
                &nodes[0].client_addr,
                Method::POST,
                "/v1/cluster/members",
                Bytes::from(body),
            )
            .await
            .unwrap();
        assert_eq!(added.status, 200, "{}", added.text());
        if joins {
            let deadline = Instant::now() + WAIT;
            while stale_status(&client_addr, "k").await != 200 {
                assert!(
                    Instant::now() < deadline,
                    "the joiner did not catch up:\n{}",
                    node.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            assert_stays_outside(&node, "k", &nodes).await;
        }
    }
}
