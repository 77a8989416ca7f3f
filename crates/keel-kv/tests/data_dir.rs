//! A data directory is one node's, used by one process at a time (issue
//! 14, items 9 and 10), checked with the real `keel-kv serve` binary: a
//! second server on a live node's directory exits saying so, before it
//! binds a port; a directory refuses another node id, saying what to do;
//! a node killed with SIGKILL leaves no stale lock behind.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::KvClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The arguments of a one-node founder `id` on `directory`.
fn serve_arguments(id: u64, directory: &Path, peer_port: u16, client_port: u16) -> Vec<String> {
    let peer = format!("127.0.0.1:{peer_port}");
    [
        "serve".to_string(),
        "--id".to_string(),
        id.to_string(),
        "--data-dir".to_string(),
        directory.display().to_string(),
        "--peer-addr".to_string(),
        peer.clone(),
        "--client-addr".to_string(),
        format!("127.0.0.1:{client_port}"),
        "--initial-cluster".to_string(),
        format!("{id}={peer}"),
        "--heartbeat-ms".to_string(),
        "50".to_string(),
        "--election-timeout-ms".to_string(),
        "300".to_string(),
    ]
    .to_vec()
}

/// A running server, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    client: KvClient,
}

impl Server {
    async fn start(arguments: &[String], client_port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_keel-kv"))
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = KvClient::new(&[format!("127.0.0.1:{client_port}")], Duration::from_secs(2));
        let server = Server { child, client };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let put = server
                .client
                .request(Method::PUT, "/v1/kv/ready", Bytes::from_static(b"1"))
                .await;
            if put.is_ok_and(|answer| answer.status == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn process_id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `keel-kv` with `arguments`, which must exit by itself within 10 s
/// and fail: returns what it wrote to stderr.
fn run_expecting_failure(arguments: &[String]) -> String {
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
    assert!(!status.success(), "keel-kv {arguments:?} succeeded: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_live_nodes_directory_exits_saying_so() {
    // Goal (item 9): while a node serves from a directory, another `serve`
    // on it exits at once with a message naming the directory, the process
    // holding it and what to do; the first keeps serving. After a SIGKILL
    // the directory is free again.
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("node-1");
    let (peer, client) = (free_port(), free_port());
    let arguments = serve_arguments(1, &data, peer, client);
    let first = Server::start(&arguments, client).await;

    // Other ports, so that nothing but the directory is in the way; then
    // the very same arguments, where the ports are taken too.
    let elsewhere = serve_arguments(1, &data, free_port(), free_port());
    for second in [elsewhere, arguments.clone()] {
        let message = run_expecting_failure(&second);
        assert!(message.contains("is in use"), "{message}");
        assert!(message.contains(&data.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("process {}", first.process_id())),
            "{message}"
        );
        assert!(message.contains("--data-dir"), "{message}");
    }
    let still = first
        .client
        .request(Method::PUT, "/v1/kv/k", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(still.status, 200, "{}", still.text());

    drop(first); // SIGKILL
    let again = Server::start(&arguments, client).await;
    let value = again
        .client
        .request(Method::GET, "/v1/kv/k", Bytes::new())
        .await
        .unwrap();
    assert_eq!((value.status, value.text()), (200, "v".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_refuses_another_node_id_and_says_what_to_do() {
    // Goal (item 10): node 1's directory keeps its id; `serve --id 9` on it
    // exits with a message saying whose it is and what to run instead, and
    // changes nothing: node 1 still starts on it with its data.
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("node-1");
    let (peer, client) = (free_port(), free_port());
    let arguments = serve_arguments(1, &data, peer, client);
    let first = Server::start(&arguments, client).await;
    let put = first
        .client
        .request(Method::PUT, "/v1/kv/k", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(put.status, 200);
    drop(first);

    let message = run_expecting_failure(&serve_arguments(9, &data, free_port(), free_port()));
    assert!(message.contains("belongs to node 1, not node 9"), "{message}");
    assert!(message.contains("keel-kv serve --id 1"), "{message}");
    assert!(message.contains("empty --data-dir"), "{message}");

    let again = Server::start(&arguments, client).await;
    let value = again
        .client
        .request(Method::GET, "/v1/kv/k", Bytes::new())
        .await
        .unwrap();
    assert_eq!((value.status, value.text()), (200, "v".to_string()));
}
