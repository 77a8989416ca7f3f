//! The harness of the HTTP API tests: keel-kv servers on 127.0.0.1:0 in
//! front of in-process keel nodes (keel-node's `LocalNetwork`, real
//! keel-log storage in temporary directories), and helpers to call them.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use keel::NodeId;
use keel_kv::api::{ApiLimits, ApiState};
use keel_kv::client::{encode_key, HttpResponse, KvClient};
use keel_kv::server::{start_node, HttpServer, NodeOptions};
use keel_kv::store::KvStore;
use keel_node::{inbound_channel, LocalNetwork, NodeHandle};
use tokio::net::TcpListener;

pub struct Member {
    pub node: NodeHandle<KvStore>,
    pub server: HttpServer,
    pub client: KvClient,
}

pub struct Cluster {
    pub directory: tempfile::TempDir,
    pub network: LocalNetwork,
    pub members: BTreeMap<u64, Member>,
    pub founders: Vec<(u64, String)>,
    pub limits: ApiLimits,
    pub heartbeat: Duration,
    pub election: Duration,
    pub request_timeout: Duration,
    pub snapshot_interval_entries: u64,
    pub max_uncommitted_bytes: u64,
}

impl Cluster {
    pub fn new(count: u64) -> Cluster {
        let directory = tempfile::tempdir().unwrap();
        let spool = directory.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        Cluster {
            directory,
            network: LocalNetwork::new(spool),
            members: BTreeMap::new(),
            founders: (1..=count).map(|id| (id, format!("local:{id}"))).collect(),
            limits: ApiLimits::default(),
            heartbeat: Duration::from_millis(20),
            election: Duration::from_millis(200),
            request_timeout: Duration::from_secs(3),
            snapshot_interval_entries: 25,
            max_uncommitted_bytes: 64 * 1024 * 1024,
        }
    }

    pub async fn start(count: u64) -> Cluster {
        let mut cluster = Cluster::new(count);
        cluster.start_all().await;
        cluster
    }

    pub async fn start_all(&mut self) {
        for (id, _) in self.founders.clone() {
            self.start_node(id, true).await;
        }
    }

    pub async fn start_node(&mut self, id: u64, founder: bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client_addr = listener.local_addr().unwrap().to_string();
        let mut options = NodeOptions::new(
            id,
            self.directory.path().join(format!("node-{id}")),
            format!("local:{id}"),
            client_addr.clone(),
        );
        options.heartbeat_interval = self.heartbeat;
        options.election_timeout = self.election;
        options.request_timeout = self.request_timeout;
        options.snapshot_interval_entries = self.snapshot_interval_entries;
        options.max_uncommitted_bytes = self.max_uncommitted_bytes;
        if founder {
            options.initial_cluster = Some(self.founders.clone());
        }
        let (sender, receiver) = inbound_channel();
        let transport = self.network.join(NodeId::new(id), sender);
        let node = start_node(&options, transport, receiver).await.unwrap();
        let server = HttpServer::start(listener, ApiState::new(node.clone(), self.limits)).unwrap();
        let client = KvClient::new(&[client_addr], Duration::from_secs(10));
        self.members.insert(id, Member { node, server, client });
    }

    pub fn client(&self, id: u64) -> &KvClient {
        &self.members[&id].client
    }

    pub fn addr(&self, id: u64) -> String {
        self.members[&id].server.local_addr().to_string()
    }

    pub async fn leader(&self) -> u64 {
        for _ in 0..1000 {
            for (id, member) in &self.members {
                if let Ok(status) = member.node.status().await {
                    if status.raft.role == keel::Role::Leader {
                        return *id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }

    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        *self.members.keys().find(|id| **id != leader).unwrap()
    }
}

pub async fn call(client: &KvClient, method: Method, path: &str, body: impl Into<Bytes>) -> HttpResponse {
    client.request(method, path, body.into()).await.unwrap()
}

/// Retries a membership request while another change is pending (409).
pub async fn call_until_no_conflict(
    client: &KvClient,
    method: Method,
    path: &str,
    body: &str,
) -> HttpResponse {
    let mut answer = call(client, method.clone(), path, body.to_string()).await;
    for _ in 0..100 {
        if answer.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = call(client, method.clone(), path, body.to_string()).await;
    }
    answer
}

pub fn kv(key: &str) -> String {
    format!("/v1/kv/{}", encode_key(key))
}

/// Asserts an error answer: its status, code, and that the body is the
/// contract's JSON shape.
pub fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response
        .json()
        .unwrap_or_else(|| panic!("error body is not JSON: {}", response.text()));
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body.get("leader").is_some(), "{body}");
}

/// Writes `request` on a fresh connection and reads what comes back until
/// the server closes or 2 s pass.
pub async fn raw_exchange(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(count)) = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
        if count == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..count]);
        if answer.windows(4).any(|window| window == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached in 10 s");
}
