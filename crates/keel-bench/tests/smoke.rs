//! Goal: keep every workload compiling and running. Tiny sizes; nothing here
//! looks at a timing, only at the shape of the output.

use std::time::Duration;

use keel_bench::cluster::Binaries;
use keel_bench::core::{run_keel, run_raft_rs, CoreParams, RaftRsPropose};
use keel_bench::load::LoadResult;
use keel_bench::workloads::{self, EndToEndPoint, Sizes};

fn smoke_sizes(directory: &std::path::Path) -> Sizes {
    // No server binaries: the smoke test runs only the in-process workloads.
    Sizes::smoke(
        directory.to_path_buf(),
        Binaries {
            keel_kv: None,
            etcd: None,
        },
    )
}

#[test]
fn both_libraries_commit_entries_in_every_core_configuration() {
    for (nodes, entry_bytes, batch) in [
        (3, 128, 1),
        (3, 128, 256),
        (5, 128, 16),
        (7, 128, 16),
        (3, 16 << 10, 16),
    ] {
        let params = CoreParams {
            nodes,
            entry_bytes,
            batch,
            duration: Duration::from_millis(10),
        };
        assert!(
            run_keel(params).entries > 0,
            "keel committed nothing with {params:?}"
        );
        assert!(
            run_raft_rs(params, RaftRsPropose::OneMessage).entries > 0
                && run_raft_rs(params, RaftRsPropose::EachEntry).entries > 0,
            "raft-rs committed nothing with {params:?}"
        );
    }
}

#[test]
fn core_and_scaling_tables_have_a_row_per_configuration() {
    let directory = tempfile::tempdir().unwrap();
    let sizes = smoke_sizes(directory.path());
    let core = workloads::core_throughput(&sizes);
    assert_eq!(core.rows.len(), 3);
    let scaling = workloads::scaling(&sizes);
    assert_eq!(scaling.rows.len(), 12);
    assert!(core.to_markdown().contains("batch 256"));
}

#[test]
fn storage_tables_measure_the_raw_disk_and_every_batch_size() {
    let directory = tempfile::tempdir().unwrap();
    let sizes = smoke_sizes(directory.path());
    let (append, recovery) = workloads::storage(&sizes, 256).unwrap();
    assert_eq!(append.rows.len(), 6);
    assert_eq!(recovery.rows.len(), 1);
}

#[test]
fn process_workloads_say_what_was_not_measured_without_binaries() {
    let directory = tempfile::tempdir().unwrap();
    let sizes = smoke_sizes(directory.path());
    let (table, points) = workloads::end_to_end(&sizes).unwrap();
    assert!(points.is_empty());
    assert!(table.to_markdown().contains("not measured"));
    assert!(workloads::failover(&sizes)
        .unwrap()
        .to_markdown()
        .contains("not measured"));
    assert!(workloads::memory(&sizes)
        .unwrap()
        .to_markdown()
        .contains("not measured"));
}

fn fake_result(requests: u64, latency_micros: u64) -> LoadResult {
    let mut histogram = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
    histogram.record(latency_micros).unwrap();
    LoadResult {
        writes: requests,
        reads: 0,
        errors: 0,
        latency_micros: histogram.clone(),
        write_latency_micros: histogram,
        elapsed: Duration::from_secs(1),
    }
}

#[test]
fn plots_are_written_as_svg() {
    let directory = tempfile::tempdir().unwrap();
    let points: Vec<EndToEndPoint> = [1usize, 16, 64, 256]
        .into_iter()
        .map(|clients| EndToEndPoint {
            clients,
            read_percent: 0,
            etcd: Some(fake_result(100 * clients as u64, 2_000)),
            keel: Some(fake_result(300 * clients as u64, 1_000)),
        })
        .collect();
    keel_bench::plot::end_to_end(&points, directory.path()).unwrap();
    for name in ["throughput.svg", "p99.svg"] {
        let svg = std::fs::read_to_string(directory.path().join(name)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("keel-kv"),
            "{name} is not a plot"
        );
    }
}

#[test]
fn the_binary_runs_a_smoke_workload() {
    let directory = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args(["core", "--smoke", "--dir"])
        .arg(directory.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("## Machine") && stdout.contains("fdatasync") && stdout.contains("batch 16"));
}
