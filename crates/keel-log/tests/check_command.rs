//! Goal: `keel-log check` tells an operator what state a log is in and what
//! to do next: healthy (a torn tail it would cut is reported, not a
//! problem), damaged (the file and offset, and the steps to restore the
//! member from its peers), or no log at all; pointed at a node's data
//! directory it checks the log inside.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel::testing::entries;
use keel::StorageWrite;
use keel_log::{LogConfig, LogStore};

fn small_segments() -> LogConfig {
    LogConfig::default().with_segment_size_bytes(512)
}

fn run_check(directory: &Path) -> (Option<i32>, String) {
    let Output { status, stdout, .. } = Command::new(env!("CARGO_BIN_EXE_keel-log"))
        .arg("check")
        .arg(directory)
        .output()
        .unwrap();
    (status.code(), String::from_utf8_lossy(&stdout).into_owned())
}

fn write_log(directory: &Path, last_index: u64) {
    let mut store = LogStore::open(directory, small_segments()).unwrap();
    for index in 1..=last_index {
        store.append(&entries(1, index, index)).unwrap();
    }
}

fn segments(directory: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|item| item.unwrap().path())
        .collect();
    paths.sort();
    paths
}

/// The offset of the last record of a segment's bytes.
fn last_record_offset(contents: &[u8]) -> usize {
    let mut offset = 0;
    let mut last = 0;
    while offset + 9 <= contents.len() {
        last = offset;
        offset += 9 + u32::from_le_bytes(contents[offset..offset + 4].try_into().unwrap()) as usize;
    }
    last
}

fn assert_points_to_the_restore_steps(text: &str) {
    assert!(text.contains("status: damaged"), "{text}");
    assert!(text.contains("remove this member from the cluster"), "{text}");
    assert!(text.contains("\"Restoring a damaged member\""), "{text}");
    assert!(text.contains("crates/keel-log/README.md"), "{text}");
}

#[test]
fn the_check_command_reports_health_and_damage() {
    let directory = tempfile::tempdir().unwrap();
    write_log(directory.path(), 30);
    let (code, text) = run_check(directory.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("log: entries 1..=30"), "{text}");
    assert!(text.contains("status: healthy"), "{text}");
    // Damage a record in the middle of the first segment.
    let segments = segments(directory.path());
    let mut contents = std::fs::read(&segments[0]).unwrap();
    let middle = contents.len() / 2;
    contents[middle] ^= 0x10;
    std::fs::write(&segments[0], &contents).unwrap();
    let (code, text) = run_check(directory.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&segments[0].display().to_string()), "{text}");
    assert!(text.contains("offset"), "{text}");
    assert_points_to_the_restore_steps(&text);
    let usage = Command::new(env!("CARGO_BIN_EXE_keel-log"))
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_bad_checksum_in_a_complete_last_record_is_reported_as_corruption_not_a_torn_tail() {
    let directory = tempfile::tempdir().unwrap();
    write_log(directory.path(), 30);
    let last = segments(directory.path()).pop().unwrap();
    let mut contents = std::fs::read(&last).unwrap();
    let offset = last_record_offset(&contents);
    let length = contents.len();
    // A bit of the last record's payload: its length is all there.
    contents[offset + 12] ^= 0x04;
    std::fs::write(&last, &contents).unwrap();
    let (code, text) = run_check(directory.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("torn tail"), "{text}");
    assert!(
        text.contains(&format!("corrupt log at {}, offset {offset}", last.display())),
        "{text}"
    );
    assert!(text.contains("not a torn write"), "{text}");
    assert_points_to_the_restore_steps(&text);
    assert_eq!(
        std::fs::read(&last).unwrap().len(),
        length,
        "check changed the file"
    );
}

#[test]
fn a_torn_tail_is_reported_as_cut_off_on_open_and_the_log_is_healthy() {
    let directory = tempfile::tempdir().unwrap();
    write_log(directory.path(), 30);
    let last = segments(directory.path()).pop().unwrap();
    let mut contents = std::fs::read(&last).unwrap();
    let intact_length = contents.len();
    // Half a record: a write a crash cut short.
    contents.extend_from_slice(&[40, 0, 0, 0, 9, 9, 1, 7, 7, 7]);
    std::fs::write(&last, &contents).unwrap();
    let (code, text) = run_check(directory.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "torn tail: 10 bytes at {} offset {intact_length}",
            last.display()
        )),
        "{text}"
    );
    assert!(text.contains("cut off on open"), "{text}");
    assert!(text.contains("status: healthy"), "{text}");
}

#[test]
fn pointed_at_a_node_data_directory_it_checks_the_log_inside() {
    // keel-node's layout: <data dir>/{log/, snapshots/, LOCK, NODE_ID}.
    let data_directory = tempfile::tempdir().unwrap();
    let log_directory = data_directory.path().join("log");
    write_log(&log_directory, 12);
    std::fs::create_dir(data_directory.path().join("snapshots")).unwrap();
    std::fs::write(data_directory.path().join("LOCK"), b"").unwrap();
    std::fs::write(data_directory.path().join("NODE_ID"), b"3\n").unwrap();
    let (code, text) = run_check(data_directory.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("log directory: {}", log_directory.display())),
        "{text}"
    );
    assert!(text.contains("log: entries 1..=12"), "{text}");
    assert!(text.contains("status: healthy"), "{text}");
    // Damage there is reported with the data directory to move aside.
    let first = segments(&log_directory).remove(0);
    let mut contents = std::fs::read(&first).unwrap();
    let middle = contents.len() / 2;
    contents[middle] ^= 0x01;
    std::fs::write(&first, &contents).unwrap();
    let (code, text) = run_check(data_directory.path());
    assert_eq!(code, Some(1), "{text}");
    assert_points_to_the_restore_steps(&text);
    assert!(
        text.contains(&format!("move {} aside", data_directory.path().display())),
        "{text}"
    );
}

#[test]
fn a_directory_with_no_log_is_reported_and_fails() {
    let empty = tempfile::tempdir().unwrap();
    let (code, text) = run_check(empty.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("no log in {}", empty.path().display())),
        "{text}"
    );
    assert!(!text.contains("healthy"), "{text}");
    // A data directory whose log/ holds no segment.
    std::fs::create_dir(empty.path().join("log")).unwrap();
    std::fs::write(empty.path().join("NODE_ID"), b"3\n").unwrap();
    let (code, text) = run_check(empty.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("no log in {}", empty.path().join("log").display())),
        "{text}"
    );
}
