//! Recovery benchmark: writes a log of `--size-mib` MiB (default 256; use
//! `--size-mib 1024` for 1 GiB) in batches of 256 entries, then times
//! `LogStore::open`, which replays and checksums every record.
//!
//! ```text
//! cargo run --release -p keel-log --example recovery_bench -- --size-mib 1024 [--entry-bytes 1024] [--dir PATH]
//! ```
//!
//! The page cache is warm for the timed open (the file was just written);
//! with `--drop-caches` (root on Linux) it is dropped first, so the figure
//! includes reading the disk.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use keel::{Entry, EntryKind, Index, Storage, Term};
use keel_log::{LogConfig, LogStore, WriteBatch};

struct Options {
    size_mib: u64,
    entry_bytes: usize,
    directory: Option<PathBuf>,
    drop_caches: bool,
}

fn options() -> Options {
    let mut options = Options {
        size_mib: 256,
        entry_bytes: 1024,
        directory: None,
        drop_caches: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--size-mib" => options.size_mib = arguments.next().and_then(|value| value.parse().ok()).unwrap(),
            "--entry-bytes" => {
                options.entry_bytes = arguments.next().and_then(|value| value.parse().ok()).unwrap()
            }
            "--dir" => options.directory = arguments.next().map(PathBuf::from),
            "--drop-caches" => options.drop_caches = true,
            other => panic!("unknown argument {other}; see the example's documentation"),
        }
    }
    options
}

fn main() {
    let options = options();
    let temporary = tempfile::tempdir().unwrap();
    let directory = options
        .directory
        .clone()
        .unwrap_or_else(|| temporary.path().join("log"));
    let _ = std::fs::remove_dir_all(&directory);
    let config = LogConfig::default();
    let data = Bytes::from(vec![0xA5u8; options.entry_bytes]);
    let entry_count = (options.size_mib << 20) / options.entry_bytes as u64;
    let batch_entries = 256u64;

    let mut store = LogStore::open(&directory, config.clone()).unwrap();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(batch_entries as usize);
    let mut next = 1u64;
    while next <= entry_count {
        batch.clear();
        let end = (next + batch_entries).min(entry_count + 1);
        batch.extend(
            (next..end)
                .map(|index| Entry::new(Term::new(1), Index::new(index), EntryKind::Normal, data.clone())),
        );
        store.write(&WriteBatch::new().with_entries(&batch)).unwrap();
        next = end;
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let segments = store.segment_count();
    drop(store);
    let on_disk_bytes: u64 = std::fs::read_dir(&directory)
        .unwrap()
        .map(|item| item.unwrap().metadata().unwrap().len())
        .sum();

    if options.drop_caches {
        std::process::Command::new("sync").status().unwrap();
        if let Err(error) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            println!("could not drop the page cache ({error}); the open below reads a warm cache");
        }
    }
    let started = Instant::now();
    let store = LogStore::open(&directory, config).unwrap();
    let open_seconds = started.elapsed().as_secs_f64();
    assert_eq!(store.last_index().unwrap(), Index::new(entry_count));

    let mib = on_disk_bytes as f64 / f64::from(1 << 20);
    println!(
        "entries: {entry_count} of {} bytes in {segments} segments, {mib:.1} MiB on disk",
        options.entry_bytes
    );
    println!(
        "write: {write_seconds:.2} s ({:.1} MiB/s, batches of {batch_entries} with one fdatasync each)",
        mib / write_seconds
    );
    println!(
        "recovery (open): {:.3} s ({:.0} MiB/s, {:.2} µs per entry)",
        open_seconds,
        mib / open_seconds,
        open_seconds * 1e6 / entry_count as f64
    );
    drop(store);
    if options.directory.is_some() {
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
