//! A removed member stops serving (issue 14, item 12), checked with real
//! `keel-kv serve` processes: removed while up, it applies its removal,
//! says so and exits with status 5; removed while down, it learns it from
//! the members refusing it once restarted, and exits the same way; with
//! `--stay-up-when-removed` it keeps running, reporting `"removed": true`
//! and answering `not_member`.

#![allow(clippy::unwrap_used)]

mod processes;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::{HttpResponse, KvClient};
use processes::{log_tails, start_cluster, start_cluster_with, wait_for_leader, NodeProcess};

const WAIT: Duration = Duration::from_secs(20);

/// Status 5: removed from the cluster (see `keel-kv serve --help`).
const EXIT_REMOVED: i32 = 5;

fn client() -> KvClient {
    KvClient::new(&["127.0.0.1:1".to_string()], Duration::from_secs(2))
}

async fn request(address: &str, method: Method, path: &str, body: &str) -> Option<HttpResponse> {
    client()
        .request_to(address, method, path, Bytes::from(body.to_string()))
        .await
        .ok()
}

/// Writes through `nodes[through]` until a write is acknowledged.
async fn put_acknowledged(nodes: &[NodeProcess], through: usize, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = request(
            &nodes[through].client_addr,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            "v",
        )
        .await;
        if answer.is_some_and(|answer| answer.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged\n{}",
            log_tails(nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes node `id` through `nodes[through]`.
async fn remove(nodes: &[NodeProcess], through: usize, id: u64) {
    let path = format!("/v1/cluster/members/{id}");
    let answer = request(&nodes[through].client_addr, Method::DELETE, &path, "")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Index in `nodes` of a node that is not `leader`, and of another one.
fn follower_and_other(nodes: &[NodeProcess], leader: u64) -> (usize, usize) {
    let follower = nodes.iter().position(|node| node.id != leader).unwrap();
    let other = (0..nodes.len()).find(|index| *index != follower).unwrap();
    (follower, other)
}

fn assert_exits_removed(node: &mut NodeProcess, within: Duration, nodes_log: impl Fn() -> String) {
    let status = node.wait_for_exit(within);
    let Some(status) = status else {
        panic!("node {} kept running after its removal\n{}", node.id, nodes_log());
    };
    assert_eq!(status.code(), Some(EXIT_REMOVED), "{status}\n{}", node.log());
    assert!(
        node.log().contains("removed from the cluster"),
        "its log does not say why:\n{}",
        node.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_up_exits_with_status_5_and_stays_out() {
    let directory = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(directory.path());
    let leader = wait_for_leader(&client(), &nodes, WAIT).await;
    let (removed, other) = follower_and_other(&nodes, leader);
    put_acknowledged(&nodes, other, "before").await;
    remove(&nodes, other, nodes[removed].id).await;

    let tails = log_tails(&nodes);
    assert_exits_removed(&mut nodes[removed], WAIT, || tails.clone());
    put_acknowledged(&nodes, other, "after").await;

    // Restarted on its data directory, it knows at once and exits again.
    let started = Instant::now();
    nodes[removed].start();
    assert_exits_removed(&mut nodes[removed], Duration::from_secs(10), String::new);
    println!("a restarted removed node exited after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_exits_once_restarted() {
    // Its log still makes it a voter; the members refuse its connections as
    // a non-member, and that is how it learns.
    let directory = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(directory.path());
    let leader = wait_for_leader(&client(), &nodes, WAIT).await;
    let (removed, other) = follower_and_other(&nodes, leader);
    put_acknowledged(&nodes, other, "before").await;
    nodes[removed].kill_9();
    remove(&nodes, other, nodes[removed].id).await;
    put_acknowledged(&nodes, other, "after").await;

    let started = Instant::now();
    nodes[removed].start();
    let tails = || String::new();
    assert_exits_removed(&mut nodes[removed], WAIT, tails);
    println!("learned it was removed in {:?}", started.elapsed());
    put_acknowledged(&nodes, other, "later").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stay_up_a_removed_member_says_so_and_refuses_requests() {
    let directory = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(directory.path(), &["--stay-up-when-removed"]);
    let leader = wait_for_leader(&client(), &nodes, WAIT).await;
    let (removed, other) = follower_and_other(&nodes, leader);
    put_acknowledged(&nodes, other, "before").await;
    remove(&nodes, other, nodes[removed].id).await;

    let address = nodes[removed].client_addr.clone();
    let deadline = Instant::now() + WAIT;
    loop {
        let view = request(&address, Method::GET, "/v1/cluster", "")
            .await
            .and_then(|answer| answer.json());
        if view.as_ref().is_some_and(|view| view["removed"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reported removed: {view:?}\n{}",
            log_tails(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let put = request(&address, Method::PUT, "/v1/kv/k", "v").await.unwrap();
    assert_eq!(
        (put.status, put.error_code().as_deref()),
        (503, Some("not_member")),
        "{}",
        put.text()
    );
    let ready = request(&address, Method::GET, "/readyz", "").await.unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("removed"), "{}", ready.text());
    let stale = request(&address, Method::GET, "/v1/kv/before?consistency=stale", "")
        .await
        .unwrap();
    assert_eq!(stale.status, 200, "stale reads still answer: {}", stale.text());
    assert_eq!(
        nodes[removed].wait_for_exit(Duration::from_millis(500)),
        None,
        "it exited"
    );
}
