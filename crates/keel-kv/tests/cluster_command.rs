//! The README's main command, `keel-kv cluster`, as a user runs it: it
//! starts, prints each node's address and curl examples that work,
//! restarts a node killed under it, stops cleanly on Ctrl-C (SIGINT), and a
//! second run resumes the same data.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The running `cluster` command; killed with its nodes if the test fails.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(data_dir: &std::path::Path, port_base: u16) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel-kv"))
            .args(["cluster", "--data-dir"])
            .arg(data_dir)
            .args(["--client-port-base", &port_base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Lines printed until one contains `marker`.
    fn read_until(&self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(90)) {
                Ok(line) => {
                    let done = line.contains(marker);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {marker:?} in the output: {seen:#?}"),
            }
        }
    }

    /// The node processes the runner started (its children, whichever of
    /// its threads started them).
    fn node_pids(&self) -> Vec<i32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        let mut pids = Vec::new();
        for task in tasks.map_while(Result::ok) {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(children.split_whitespace().map(|pid| pid.parse::<i32>().unwrap()));
        }
        pids
    }

    fn interrupt(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let lines = self.read_until("Stopped.");
        assert!(
            lines.iter().any(|line| line.contains("Stopping the cluster")),
            "{lines:#?}"
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM lets the runner stop its nodes; SIGKILL if it does not.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(command: &str) -> String {
    let output = Command::new("sh")
        .args([
            "-c",
            &format!("{} --silent --show-error --max-time 10", command.trim()),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_cluster_command_starts_prints_working_examples_stops_and_resumes() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed; the printed curl examples cannot be tried");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("keel-data");
    // A base port unlikely to be taken; busy ports are replaced anyway.
    let port_base = 20_000 + (std::process::id() % 20_000) as u16;

    let mut running = Running::start(&data_dir, port_base);
    let banner = running.read_until("Press Ctrl-C");
    let node_lines = banner
        .iter()
        .filter(|line| line.trim_start().starts_with("node "))
        .count();
    assert_eq!(node_lines, 3, "{banner:#?}");
    let examples: Vec<&String> = banner
        .iter()
        .filter(|line| line.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(examples.len(), 3, "{banner:#?}");
    let put = curl(examples[0]);
    assert!(put.contains("\"index\""), "{put}");
    assert_eq!(curl(examples[1]), "hello, keel");
    let view: serde_json::Value = serde_json::from_str(&curl(examples[2])).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 3, "{view}");

    // A node killed with SIGKILL is restarted by the runner and serves
    // again (the last curl example reads through the last node).
    let pids = running.node_pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    kill(Pid::from_raw(*pids.last().unwrap()), Signal::SIGKILL).unwrap();
    let exited = running.read_until("restarted");
    assert!(
        exited
            .iter()
            .any(|line| line.contains("exited") && line.contains("restarting it")),
        "{exited:#?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new("sh")
            .args(["-c", &format!("{} --silent --max-time 2", examples[1].trim())])
            .output()
            .unwrap();
        if output.status.success() && output.stdout == b"hello, keel" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted node never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(running.node_pids().len(), 3);
    running.interrupt();

    // Run again: the same layout and data.
    let mut running = Running::start(&data_dir, port_base);
    let again = running.read_until("Press Ctrl-C");
    let examples: Vec<&String> = again
        .iter()
        .filter(|line| line.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(curl(examples[1]), "hello, keel", "{again:#?}");
    running.interrupt();
}
