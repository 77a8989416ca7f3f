//! `keel-kv cluster`: a local cluster of `keel-kv serve` child processes on
//! loopback, for trying keel out. The layout (ids and ports) is saved in
//! the data directory, so running it again resumes the same cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::client::KvClient;
use crate::server::EXIT_STATUS_REMOVED;

/// One node of the layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    /// Its id.
    pub id: u64,
    /// Its peer address.
    pub peer_addr: String,
    /// Its client address.
    pub client_addr: String,
}

/// The saved layout of a local cluster.
///
/// ```
/// let layout: keel_kv::cluster::Layout = serde_json::from_str(
///     r#"{"nodes":[{"id":1,"peer_addr":"127.0.0.1:7001","client_addr":"127.0.0.1:8001"}]}"#,
/// ).unwrap();
/// assert_eq!(layout.initial_cluster_token, None, "saved before tokens");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Every node.
    pub nodes: Vec<LocalNode>,
    /// The `--initial-cluster-token` the nodes were founded with: drawn at
    /// random when the layout is made (or first used without one), so that
    /// two local clusters, even on the same ports, have different cluster
    /// ids and refuse each other's nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cluster_token: Option<String>,
}

const LAYOUT_FILE: &str = "cluster.json";

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// How many nodes a new cluster has.
    pub nodes: u64,
    /// Where the layout, each node's data and logs go.
    pub data_dir: PathBuf,
    /// The first client port tried (8001: 8001, 8002, …); peers use the
    /// port 1000 below. Busy ports are replaced by free ones.
    pub client_port_base: u16,
    /// `pretty` or `json`, passed to the nodes.
    pub log_format: String,
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| format!("no free port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

fn pick_port(preferred: u16, taken: &[u16]) -> Result<u16, String> {
    if preferred != 0 && !taken.contains(&preferred) && port_is_free(preferred) {
        return Ok(preferred);
    }
    loop {
        let port = free_port()?;
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
}

/// Loads the saved layout, or makes (and saves) a new one.
///
/// # Errors
/// A message when the directory or the layout file is unusable.
pub fn load_or_create_layout(options: &ClusterOptions) -> Result<Layout, String> {
    let path = options.data_dir.join(LAYOUT_FILE);
    if path.exists() {
        let text =
            std::fs::read_to_string(&path).map_err(|error| format!("reading {}: {error}", path.display()))?;
        let mut layout: Layout =
            serde_json::from_str(&text).map_err(|error| format!("{} is damaged: {error}", path.display()))?;
        if layout.nodes.is_empty() {
            return Err(format!("{} lists no nodes", path.display()));
        }
        if layout.initial_cluster_token.is_none() {
            // Saved before tokens: nodes founded then keep their cluster
            // id (their data directories predate CLUSTER_ID); the token is
            // for nodes founded from now on.
            layout.initial_cluster_token = Some(new_token());
            save_layout(&path, &layout)?;
        }
        return Ok(layout);
    }
    if options.nodes == 0 || options.nodes > 64 {
        return Err("--nodes must be between 1 and 64".to_string());
    }
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|error| format!("creating {}: {error}", options.data_dir.display()))?;
    let mut taken = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=options.nodes {
        let offset = id as u16 - 1;
        let client = pick_port(options.client_port_base.saturating_add(offset), &taken)?;
        taken.push(client);
        let peer = pick_port(
            options
                .client_port_base
                .saturating_sub(1000)
                .saturating_add(offset),
            &taken,
        )?;
        taken.push(peer);
        nodes.push(LocalNode {
            id,
            peer_addr: format!("127.0.0.1:{peer}"),
            client_addr: format!("127.0.0.1:{client}"),
        });
    }
    let layout = Layout {
        nodes,
        initial_cluster_token: Some(new_token()),
    };
    save_layout(&path, &layout)?;
    Ok(layout)
}

fn save_layout(path: &Path, layout: &Layout) -> Result<(), String> {
    let text = serde_json::to_string_pretty(layout).map_err(|error| error.to_string())?;
    std::fs::write(path, text).map_err(|error| format!("writing {}: {error}", path.display()))
}

/// A token no other local cluster has: 128 bits from the operating
/// system's random source (or, failing that, the time and process id,
/// which still differ between runs).
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut source| std::io::Read::read_exact(&mut source, &mut bytes));
    if random.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("keel-local-{hex}")
}

/// The `serve` arguments of node `node` in `layout`.
pub fn serve_arguments(layout: &Layout, node: &LocalNode, data_dir: &Path, log_format: &str) -> Vec<String> {
    let initial: Vec<String> = layout
        .nodes
        .iter()
        .map(|other| format!("{}={}", other.id, other.peer_addr))
        .collect();
    let mut arguments: Vec<String> = vec![
        "serve".into(),
        "--id".into(),
        node.id.to_string(),
        "--data-dir".into(),
        data_dir.join(format!("node-{}", node.id)).display().to_string(),
        "--peer-addr".into(),
        node.peer_addr.clone(),
        "--client-addr".into(),
        node.client_addr.clone(),
        "--initial-cluster".into(),
        initial.join(","),
    ];
    if let Some(token) = &layout.initial_cluster_token {
        arguments.extend(["--initial-cluster-token".into(), token.clone()]);
    }
    arguments.extend(["--log-format".into(), log_format.into()]);
    arguments
}

/// Asks a child to stop (SIGTERM), then kills it if it has not within
/// `grace`.
pub async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn wait_for_leader(layout: &Layout, children: &mut [(u64, Child)]) -> Result<u64, String> {
    let endpoints: Vec<String> = layout.nodes.iter().map(|node| node.client_addr.clone()).collect();
    let client = KvClient::new(&endpoints, Duration::from_secs(2));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "node {id} exited during start-up ({status}); see its log"
                ));
            }
        }
        for endpoint in &endpoints {
            if let Ok(response) = client
                .request_to(endpoint, Method::GET, "/v1/cluster", Default::default())
                .await
            {
                let leader = response.json().and_then(|view| view["leader"].as_u64());
                if let (200, Some(leader)) = (response.status, leader) {
                    return Ok(leader);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("no leader was elected within 60 s; see the node logs".to_string())
}

async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupt";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        _ = terminate.recv() => "terminate",
    }
}

/// A node that exits is started again after this long, doubled after
/// each exit that came soon after a start, up to `RESTART_DELAY_MAX`.
const RESTART_DELAY: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// An exit within this long of a start counts as a failure to start.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// After this many failures to start in a row, the runner gives up.
const QUICK_EXITS_MAX: u32 = 5;

/// One node process and what the runner knows of its restarts.
struct Supervised<'a> {
    node: &'a LocalNode,
    /// `None` while waiting to be restarted.
    child: Option<Child>,
    started: Instant,
    restart_at: Option<Instant>,
    quick_exits: u32,
}

/// Starts `node`'s `keel-kv serve`, its output appended to its log.
fn spawn_node(
    executable: &Path,
    layout: &Layout,
    node: &LocalNode,
    options: &ClusterOptions,
) -> Result<Child, String> {
    let log_path = options.data_dir.join(format!("node-{}.log", node.id));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|error| format!("opening {}: {error}", log_path.display()))?;
    let log_copy = log.try_clone().map_err(|error| error.to_string())?;
    Command::new(executable)
        .args(serve_arguments(
            layout,
            node,
            &options.data_dir,
            &options.log_format,
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_copy))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("starting node {}: {error}", node.id))
}

/// Runs the local cluster until Ctrl-C. A node that exits (a crash, or
/// `kill -9` to watch a failover) is restarted after a short delay, so
/// the cluster heals as a supervised deployment would; one that keeps
/// exiting right after it starts makes the runner stop with the reason.
///
/// # Errors
/// A message when it cannot start, or when a node keeps failing.
pub async fn run(options: &ClusterOptions) -> Result<(), String> {
    let layout = load_or_create_layout(options)?;
    if layout.nodes.len() as u64 != options.nodes {
        println!(
            "Resuming the {}-node cluster saved in {} (--nodes applies to new clusters only).",
            layout.nodes.len(),
            options.data_dir.display()
        );
    }
    let executable =
        std::env::current_exe().map_err(|error| format!("cannot find this executable: {error}"))?;
    let mut children: Vec<(u64, Child)> = Vec::new();
    for node in &layout.nodes {
        children.push((node.id, spawn_node(&executable, &layout, node, options)?));
    }
    let leader = match wait_for_leader(&layout, &mut children).await {
        Ok(leader) => leader,
        Err(error) => {
            for (_, child) in &mut children {
                stop_child(child, Duration::from_secs(3)).await;
            }
            return Err(error);
        }
    };
    print_banner(&layout, &options.data_dir, leader);
    let started = Instant::now();
    let mut supervised: Vec<Supervised> = layout
        .nodes
        .iter()
        .zip(children)
        .map(|(node, (_, child))| Supervised {
            node,
            child: Some(child),
            started,
            restart_at: None,
            quick_exits: 0,
        })
        .collect();
    let outcome = tokio::select! {
        reason = wait_for_stop_signal() => Ok(reason.to_string()),
        failed = supervise(&executable, &layout, options, &mut supervised) => Err(failed),
    };
    let reason = match &outcome {
        Ok(reason) | Err(reason) => reason.clone(),
    };
    println!("\nStopping the cluster ({reason})…");
    for member in &mut supervised {
        if let Some(child) = &mut member.child {
            stop_child(child, Duration::from_secs(5)).await;
        }
    }
    println!(
        "Stopped. Data is kept in {}; run the same command to resume.",
        options.data_dir.display()
    );
    outcome.map(|_| ())
}

/// Restarts nodes that exit; returns only when one keeps failing.
async fn supervise(
    executable: &Path,
    layout: &Layout,
    options: &ClusterOptions,
    members: &mut [Supervised<'_>],
) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        for member in members.iter_mut() {
            let id = member.node.id;
            if let Some(child) = &mut member.child {
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                member.child = None;
                if status.code() == Some(i32::from(EXIT_STATUS_REMOVED)) {
                    // Restarting it would only make it exit again.
                    println!("node {id} was removed from the cluster ({status}); it is not restarted");
                    member.restart_at = None;
                    continue;
                }
                let ran = now.duration_since(member.started);
                member.quick_exits = if ran < QUICK_EXIT {
                    member.quick_exits + 1
                } else {
                    0
                };
                if member.quick_exits >= QUICK_EXITS_MAX {
                    return format!(
                        "node {id} exited {QUICK_EXITS_MAX} times within {QUICK_EXIT:?} of starting ({status}); see its log"
                    );
                }
                let backoff = 2u32.pow(member.quick_exits.saturating_sub(1));
                let delay = (RESTART_DELAY * backoff).min(RESTART_DELAY_MAX);
                println!("node {id} exited ({status}); restarting it in {delay:?}");
                member.restart_at = Some(now + delay);
            } else if member.restart_at.is_some_and(|at| at <= now) {
                member.restart_at = None;
                member.started = now;
                match spawn_node(executable, layout, member.node, options) {
                    Ok(child) => {
                        println!("node {id} restarted");
                        member.child = Some(child);
                    }
                    Err(error) => return error,
                }
            }
        }
    }
}

fn print_banner(layout: &Layout, data_dir: &Path, leader: u64) {
    println!(
        "keel-kv cluster: {} nodes, data in {}",
        layout.nodes.len(),
        data_dir.display()
    );
    for node in &layout.nodes {
        let mark = if node.id == leader { "  (leader)" } else { "" };
        println!(
            "  node {}  client http://{}  peer {}  log {}{mark}",
            node.id,
            node.client_addr,
            node.peer_addr,
            data_dir.join(format!("node-{}.log", node.id)).display()
        );
    }
    let first = &layout.nodes[0].client_addr;
    let last = &layout.nodes[layout.nodes.len() - 1].client_addr;
    let endpoints: Vec<&str> = layout
        .nodes
        .iter()
        .map(|node| node.client_addr.as_str())
        .collect();
    println!("\nTry it (any node accepts any request):");
    println!("  curl -X PUT --data-binary 'hello, keel' http://{first}/v1/kv/greeting");
    println!("  curl http://{last}/v1/kv/greeting");
    println!("  curl http://{first}/v1/cluster");
    let executable =
        std::env::current_exe().map_or_else(|_| "keel-kv".to_string(), |path| path.display().to_string());
    println!("  {executable} get greeting --endpoints {}", endpoints.join(","));
    println!("\nPress Ctrl-C to stop.");
}
