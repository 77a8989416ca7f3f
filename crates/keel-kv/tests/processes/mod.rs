//! Real `keel-kv serve` processes for the black-box tests: a three-node
//! cluster on loopback, each node killed (SIGKILL), paused (SIGSTOP) and
//! resumed (SIGCONT) as a failing machine would be.

#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::KvClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The cluster's size.
pub const NODES: u64 = 3;

/// The election timeout every node is started with.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// One `keel-kv serve` process, killed (and resumed first, if paused) when
/// dropped, so no child outlives the test, even on a panic.
pub struct NodeProcess {
    /// The node id.
    pub id: u64,
    arguments: Vec<String>,
    /// Where it serves the HTTP API.
    pub client_addr: String,
    /// Where peers reach it.
    pub peer_addr: String,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    /// Starts `keel-kv` with `arguments` as node `id`, its output in
    /// `log_path`.
    pub fn spawn(id: u64, arguments: Vec<String>, addresses: (String, String), log_path: PathBuf) -> Self {
        let (peer_addr, client_addr) = addresses;
        let mut node = NodeProcess {
            id,
            arguments,
            client_addr,
            peer_addr,
            log_path,
            child: None,
            paused: false,
        };
        node.start();
        node
    }

    /// The arguments it runs with.
    pub fn arguments(&self) -> &[String] {
        &self.arguments
    }

    /// Replaces the arguments of its next start.
    pub fn set_arguments(&mut self, arguments: Vec<String>) {
        self.arguments = arguments;
    }

    /// Waits up to `within` for the process to exit by itself; its exit
    /// status, or `None` if it still runs.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("the process was started");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Starts the process (again, after a kill) with its arguments.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel-kv"))
            .args(&self.arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Stops the process with SIGSTOP: it keeps its sockets, but runs no
    /// code until resumed.
    pub fn pause(&mut self) {
        kill(self.pid(), Signal::SIGSTOP).unwrap();
        self.paused = true;
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&mut self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
        self.paused = false;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill_9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free loopback address (`127.0.0.1:port`).
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The `serve` arguments of node `id` with data in `directory/node-<id>`,
/// reached at `addresses` (peer, client): 50 ms heartbeats (the tick),
/// [`ELECTION_TIMEOUT`], JSON logs. Add `--initial-cluster` or `--join`.
pub fn serve_arguments(id: u64, directory: &Path, addresses: (&str, &str)) -> Vec<String> {
    let (peer, client) = addresses;
    [
        "serve",
        "--id",
        &id.to_string(),
        "--data-dir",
        &directory.join(format!("node-{id}")).display().to_string(),
        "--peer-addr",
        peer,
        "--client-addr",
        client,
        "--heartbeat-ms",
        "50",
        "--election-timeout-ms",
        &ELECTION_TIMEOUT.as_millis().to_string(),
        "--request-timeout-ms",
        "2000",
        "--snapshot-interval-entries",
        "300",
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect()
}

/// Starts a founding cluster of [`NODES`] processes with data under
/// `directory`: see [`serve_arguments`]; logs in `directory/node-<id>.log`.
pub fn start_cluster(directory: &Path) -> Vec<NodeProcess> {
    start_cluster_with(directory, &[])
}

/// [`start_cluster`], with `extra` arguments for every node (a token, say).
pub fn start_cluster_with(directory: &Path, extra: &[&str]) -> Vec<NodeProcess> {
    std::fs::create_dir_all(directory).unwrap();
    let addresses: Vec<(String, String)> = (0..NODES).map(|_| (free_address(), free_address())).collect();
    let initial: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(index, (peer, _))| format!("{}={peer}", index + 1))
        .collect();
    let mut nodes = Vec::new();
    for (index, (peer, client)) in addresses.into_iter().enumerate() {
        let id = index as u64 + 1;
        let mut arguments = serve_arguments(id, directory, (&peer, &client));
        arguments.extend(["--initial-cluster".to_string(), initial.join(",")]);
        arguments.extend(extra.iter().map(|argument| argument.to_string()));
        let log_path = directory.join(format!("node-{id}.log"));
        nodes.push(NodeProcess::spawn(id, arguments, (peer, client), log_path));
    }
    nodes
}

/// The leader as some running, unpaused node sees it.
pub async fn find_leader(client: &KvClient, nodes: &[NodeProcess]) -> Option<u64> {
    for node in nodes.iter().filter(|node| node.child.is_some() && !node.paused) {
        if let Ok(response) = client
            .request_to(&node.client_addr, Method::GET, "/v1/cluster", Bytes::new())
            .await
        {
            if let Some(leader) = response.json().and_then(|view| view["leader"].as_u64()) {
                return Some(leader);
            }
        }
    }
    None
}

/// Waits until some running, unpaused node knows a leader; panics with the
/// nodes' logs after `within`.
pub async fn wait_for_leader(client: &KvClient, nodes: &[NodeProcess], within: Duration) -> u64 {
    wait_for_leader_where(client, nodes, within, |_| true).await
}

/// Waits until some running, unpaused node knows a leader that `accept`
/// takes (another one than a paused leader, say); panics with the nodes'
/// logs after `within`.
pub async fn wait_for_leader_where(
    client: &KvClient,
    nodes: &[NodeProcess],
    within: Duration,
    accept: impl Fn(u64) -> bool,
) -> u64 {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(leader) = find_leader(client, nodes).await.filter(|leader| accept(*leader)) {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such leader within {within:?}\n{}", log_tails(nodes));
}

/// The last lines of every node's log, for failure messages.
pub fn log_tails(nodes: &[NodeProcess]) -> String {
    let mut text = String::new();
    for node in nodes {
        let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("--- node {} log (last 20 lines) ---\n", node.id));
        for line in &lines[lines.len().saturating_sub(20)..] {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}
