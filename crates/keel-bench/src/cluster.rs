//! Three-member clusters of real processes on loopback: keel-kv and etcd,
//! started the same way (fresh data directories, default durability and
//! default election timeouts), and torn down (SIGKILL + wait) on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::http::Connection;
use crate::load::Protocol;

/// Members per cluster.
pub const MEMBERS: usize = 3;

/// How long a cluster may take to elect its first leader.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One server process.
#[derive(Debug)]
pub struct Member {
    /// keel-kv's node id (1-based); etcd members are named `m{id}`.
    pub id: u64,
    /// The HTTP address clients use.
    pub client_address: SocketAddr,
    /// The process, `None` once killed.
    pub child: Option<Child>,
    /// Process id (kept after a kill for reporting).
    pub pid: u32,
}

/// A running three-member cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Which server this is.
    pub protocol: Protocol,
    /// Its members, in id order.
    pub members: Vec<Member>,
    data: tempfile::TempDir,
}

/// Where the servers' binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `keel-kv`, if found.
    pub keel_kv: Option<PathBuf>,
    /// `etcd`, if found.
    pub etcd: Option<PathBuf>,
}

impl Binaries {
    /// Finds the binaries: the given paths, else `keel-kv` next to this
    /// executable (the same `target/release`), else on `PATH`.
    pub fn find(keel_kv: Option<PathBuf>, etcd: Option<PathBuf>) -> Binaries {
        let beside_me = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|directory| directory.join("keel-kv")))
            .filter(|path| path.is_file());
        Binaries {
            keel_kv: keel_kv.or(beside_me).or_else(|| on_path("keel-kv")),
            etcd: etcd.or_else(|| on_path("etcd")),
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join(name))
            .find(|path| path.is_file())
    })
}

/// Free loopback ports, found by binding port 0 (the listeners are closed
/// before the servers bind them: a small race that loopback-only runs accept).
fn free_addresses(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners.iter().map(|listener| listener.local_addr()).collect()
}

fn spawn_logged(command: &mut Command, log: &Path) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
}

impl Cluster {
    /// Starts three keel-kv nodes with durable storage in fresh directories
    /// under `parent`, and waits for a leader.
    pub fn start_keel_kv(binary: &Path, parent: &Path) -> Result<Cluster, String> {
        let data = tempfile::tempdir_in(parent).map_err(|error| error.to_string())?;
        let addresses = free_addresses(2 * MEMBERS).map_err(|error| error.to_string())?;
        let initial: Vec<String> = (0..MEMBERS)
            .map(|index| format!("{}={}", index + 1, addresses[index]))
            .collect();
        let initial = initial.join(",");
        let mut cluster = Cluster {
            protocol: Protocol::KeelKv,
            members: Vec::new(),
            data,
        };
        for index in 0..MEMBERS {
            let id = index as u64 + 1;
            let directory = cluster.data.path().join(format!("node{id}"));
            let client_address = addresses[MEMBERS + index];
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .args(["--id", &id.to_string()])
                .arg("--data-dir")
                .arg(&directory)
                .args(["--peer-addr", &addresses[index].to_string()])
                .args(["--client-addr", &client_address.to_string()])
                .args(["--initial-cluster", &initial])
                .args(["--log-level", "warn"]);
            let log = cluster.data.path().join(format!("node{id}.log"));
            let child =
                spawn_logged(&mut command, &log).map_err(|error| format!("spawn keel-kv: {error}"))?;
            cluster.members.push(Member {
                id,
                client_address,
                pid: child.id(),
                child: Some(child),
            });
        }
        cluster.wait_for_leader(STARTUP_TIMEOUT)?;
        Ok(cluster)
    }

    /// Starts three etcd members (default durability: one fdatasync per
    /// batch of its WAL; default heartbeat 100 ms and election timeout
    /// 1000 ms) in fresh directories under `parent`, and waits for a leader.
    pub fn start_etcd(binary: &Path, parent: &Path) -> Result<Cluster, String> {
        let data = tempfile::tempdir_in(parent).map_err(|error| error.to_string())?;
        let addresses = free_addresses(2 * MEMBERS).map_err(|error| error.to_string())?;
        let initial: Vec<String> = (0..MEMBERS)
            .map(|index| format!("m{}=http://{}", index + 1, addresses[index]))
            .collect();
        let initial = initial.join(",");
        let mut cluster = Cluster {
            protocol: Protocol::Etcd,
            members: Vec::new(),
            data,
        };
        for index in 0..MEMBERS {
            let id = index as u64 + 1;
            let peer = format!("http://{}", addresses[index]);
            let client_address = addresses[MEMBERS + index];
            let client = format!("http://{client_address}");
            let mut command = Command::new(binary);
            command
                .args(["--name", &format!("m{id}")])
                .arg("--data-dir")
                .arg(cluster.data.path().join(format!("m{id}")))
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "keel-bench"])
                .args(["--log-level", "warn"]);
            let log = cluster.data.path().join(format!("m{id}.log"));
            let child = spawn_logged(&mut command, &log).map_err(|error| format!("spawn etcd: {error}"))?;
            cluster.members.push(Member {
                id,
                client_address,
                pid: child.id(),
                child: Some(child),
            });
        }
        cluster.wait_for_leader(STARTUP_TIMEOUT)?;
        Ok(cluster)
    }

    /// Client addresses of the members still running.
    pub fn live_addresses(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|member| member.child.is_some())
            .map(|member| member.client_address)
            .collect()
    }

    /// The position in `members` of the member that says it is the leader.
    pub fn leader(&self) -> Option<usize> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            for (position, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                if is_leader(self.protocol, member.client_address).await == Some(true) {
                    return Some(position);
                }
            }
            None
        })
    }

    /// Waits until a member is leader and a write through every member
    /// succeeds.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> Result<usize, String> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            for member in &mut self.members {
                if let Some(child) = member.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        self.data.disable_cleanup(true);
                        return Err(format!(
                            "{:?} member {} exited with {status}; its log is in {}",
                            self.protocol,
                            member.id,
                            self.data.path().display()
                        ));
                    }
                }
            }
            if let Some(leader) = self.leader() {
                if self.write_through_all() {
                    return Ok(leader);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.data.disable_cleanup(true);
        Err(format!(
            "{:?} cluster elected no leader in {timeout:?}; logs kept in {}",
            self.protocol,
            self.data.path().display()
        ))
    }

    fn write_through_all(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return false;
        };
        runtime.block_on(async {
            for address in self.live_addresses() {
                let mut connection = Connection::new(address);
                if !self.protocol.write(&mut connection, 0, b"ready").await {
                    return false;
                }
            }
            true
        })
    }

    /// kill -9 the member at `position`.
    pub fn kill(&mut self, position: usize) {
        if let Some(mut child) = self.members[position].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT the member at `position`.
    pub fn pause(&self, position: usize, pause: bool) -> Result<(), String> {
        let signal = if pause { Signal::SIGSTOP } else { Signal::SIGCONT };
        kill(Pid::from_raw(self.members[position].pid as i32), signal).map_err(|error| error.to_string())
    }

    /// Resident memory of the member at `position`, in bytes.
    pub fn resident_bytes(&self, position: usize) -> Option<u64> {
        resident_bytes(self.members[position].pid)
    }

    /// The directory holding the members' data and logs.
    pub fn data_directory(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // A stopped process still dies of SIGKILL.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// VmRSS of a process, in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn is_leader(protocol: Protocol, address: SocketAddr) -> Option<bool> {
    let mut connection = Connection::new(address);
    let timeout = Duration::from_secs(1);
    match protocol {
        Protocol::KeelKv => {
            let response = connection
                .request("GET", "/v1/cluster", None, b"", timeout)
                .await
                .ok()?;
            let view: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
            Some(view.get("role")?.as_str()? == "leader")
        }
        Protocol::Etcd => {
            let response = connection
                .request(
                    "POST",
                    "/v3/maintenance/status",
                    Some("application/json"),
                    b"{}",
                    timeout,
                )
                .await
                .ok()?;
            let view: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
            let member = view.get("header")?.get("member_id")?.as_str()?;
            let leader = view.get("leader")?.as_str()?;
            Some(member == leader)
        }
    }
}
