//! A full disk stops the process, not just the node (issue 14, item 7):
//! a real `keel-kv serve` whose data directory is on a small tmpfs that
//! the test fills. The write that meets the full disk is answered `500
//! internal`, the process exits with status 4 (so a supervisor restarts
//! it) instead of staying up as a node that answers every request with an
//! error, and once space is freed a restart recovers every acknowledged
//! write.
//!
//! Mounting a tmpfs needs root (or CAP_SYS_ADMIN); without it the test
//! says so and passes without checking anything.

#![allow(clippy::unwrap_used)]

mod processes;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use keel_kv::client::{HttpResponse, KvClient};
use processes::{free_address, serve_arguments, NodeProcess};

const WAIT: Duration = Duration::from_secs(20);

/// Status 4: the node stopped after a fatal error (see `keel-kv serve
/// --help`).
const EXIT_FATAL: i32 = 4;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_mib` MiB at `path`, or `None` if this
    /// process may not mount.
    fn mount(path: &Path, size_mib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .is_ok_and(|output| output.status.success());
        mounted.then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Fills the disk up: a file written until the disk refuses more.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk_bytes in [1 << 20, 4096, 1] {
            let chunk = vec![0xa5u8; chunk_bytes];
            while file.write_all(&chunk).is_ok() {}
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn client() -> KvClient {
    KvClient::new(&["127.0.0.1:1".to_string()], Duration::from_secs(5))
}

async fn request(address: &str, method: Method, path: &str, body: Bytes) -> Option<HttpResponse> {
    client().request_to(address, method, path, body).await.ok()
}

/// Waits until `check` holds for the answer to `GET path`.
async fn wait_until(address: &str, path: &str, check: impl Fn(&HttpResponse) -> bool, node: &NodeProcess) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = request(address, Method::GET, path, Bytes::new()).await;
        if answer.as_ref().is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never as expected:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_exits_and_recovers_once_space_is_freed() {
    let directory = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&directory.path().join("disk"), 16) else {
        eprintln!("skipped: mounting a tmpfs needs root (or CAP_SYS_ADMIN)");
        return;
    };
    let (peer, client_addr) = (free_address(), free_address());
    let mut arguments = serve_arguments(1, &disk.path, (&peer, &client_addr));
    arguments.extend(["--initial-cluster".to_string(), format!("1={peer}")]);
    let log_path = directory.path().join("node-1.log");
    let mut node = NodeProcess::spawn(1, arguments, (peer, client_addr.clone()), log_path);

    let acknowledged = |answer: &HttpResponse| answer.status == 200;
    let deadline = Instant::now() + WAIT;
    while !request(&client_addr, Method::PUT, "/v1/kv/k", Bytes::from_static(b"v"))
        .await
        .is_some_and(|answer| acknowledged(&answer))
    {
        assert!(
            Instant::now() < deadline,
            "no write acknowledged:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Quiet: the node has recorded its client address (its last write of
    // its own), so the next write to the disk is the test's.
    let registered = |answer: &HttpResponse| {
        answer
            .json()
            .is_some_and(|view| !view["members"][0]["client_addr"].is_null())
    };
    wait_until(&client_addr, "/v1/cluster", registered, &node).await;

    let filler = disk.fill();
    let value = Bytes::from(vec![b'x'; 256 * 1024]);
    let answer = request(&client_addr, Method::PUT, "/v1/kv/big", value)
        .await
        .expect("the write in flight is answered");
    assert_eq!(
        (answer.status, answer.error_code().as_deref()),
        (500, Some("internal")),
        "{}",
        answer.text()
    );
    let status = node.wait_for_exit(Duration::from_secs(10));
    let Some(status) = status else {
        panic!("the node kept running after its disk filled up:\n{}", node.log());
    };
    assert_eq!(status.code(), Some(EXIT_FATAL), "{status}\n{}", node.log());
    assert!(
        node.log().contains("No space left"),
        "the log does not say why:\n{}",
        node.log()
    );

    // Freeing space and restarting (what a supervisor does) brings it back.
    std::fs::remove_file(filler).unwrap();
    node.start();
    let value_is = |answer: &HttpResponse| answer.status == 200 && answer.body.as_ref() == b"v";
    wait_until(&client_addr, "/v1/kv/k", value_is, &node).await;
    let again = request(&client_addr, Method::PUT, "/v1/kv/k2", Bytes::from_static(b"w"))
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    node.kill_9();
}
