//! Workload 3: keel-log on the disk, against the disk's raw rate.
//!
//! Append: `LogStore::write` of a batch of entries (one `fdatasync` per
//! batch) at batch sizes 1, 16 and 256, next to "write 4 KiB + fdatasync"
//! measured in the same run on the same directory. Recovery: write a log of
//! the given size, close it, time `LogStore::open`, which replays and
//! checksums every record. The page cache is warm (the log was just
//! written) unless the caller dropped it; the table says which.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Entry, EntryKind, Index, Storage, Term};
use keel_log::{LogConfig, LogStore, WriteBatch};

use crate::machine::{raw_fdatasync, Timed};

/// Appends batches of `batch_entries` entries of `entry_bytes` each, one
/// `fdatasync` per batch, for `duration` (at least one batch).
pub fn append(
    directory: &Path,
    batch_entries: u64,
    entry_bytes: usize,
    duration: Duration,
) -> Result<Timed, Box<dyn std::error::Error>> {
    let log_directory = directory.join(format!("append-{batch_entries}"));
    let mut store = LogStore::open(&log_directory, LogConfig::default())?;
    let data = Bytes::from(vec![0xA5u8; entry_bytes]);
    let mut batch = Vec::with_capacity(batch_entries as usize);
    let mut next = 1u64;
    let mut timed = Timed::default();
    let started = Instant::now();
    loop {
        batch.clear();
        batch.extend(
            (next..next + batch_entries)
                .map(|index| Entry::new(Term::new(1), Index::new(index), EntryKind::Normal, data.clone())),
        );
        let one = Instant::now();
        store.write(&WriteBatch::new().with_entries(&batch))?;
        timed.latencies_nanos.push(one.elapsed().as_nanos() as u64);
        next += batch_entries;
        timed.operations += 1;
        timed.bytes += batch_entries * entry_bytes as u64;
        if started.elapsed() >= duration {
            break;
        }
    }
    timed.elapsed = started.elapsed();
    drop(store);
    std::fs::remove_dir_all(log_directory)?;
    Ok(timed)
}

/// The raw disk rate, measured in the same run (see
/// [`raw_fdatasync`]).
pub fn raw(directory: &Path, duration: Duration) -> std::io::Result<Timed> {
    raw_fdatasync(directory, duration)
}

/// What a recovery run measured.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// Entries in the log.
    pub entries: u64,
    /// Bytes of segment files on disk.
    pub bytes_on_disk: u64,
    /// Segment files.
    pub segments: usize,
    /// Time to write the log (batches of 256, one fdatasync each).
    pub write: Duration,
    /// Time of `LogStore::open`.
    pub open: Duration,
    /// Whether the page cache was dropped before the open.
    pub cold_cache: bool,
}

/// Writes a log of about `size_bytes` of `entry_bytes` entries and times its
/// recovery. With `drop_caches` (root on Linux) the page cache is dropped
/// before the open so that it reads the disk.
pub fn recovery(
    directory: &Path,
    size_bytes: u64,
    entry_bytes: usize,
    drop_caches: bool,
) -> Result<Recovery, Box<dyn std::error::Error>> {
    let log_directory = directory.join("recovery");
    let config = LogConfig::default();
    let data = Bytes::from(vec![0xA5u8; entry_bytes]);
    let entry_count = (size_bytes / entry_bytes as u64).max(1);
    let batch_entries = 256u64;
    let mut store = LogStore::open(&log_directory, config.clone())?;
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
        store.write(&WriteBatch::new().with_entries(&batch))?;
        next = end;
    }
    let write = started.elapsed();
    let segments = store.segment_count();
    drop(store);
    let mut bytes_on_disk = 0;
    for item in std::fs::read_dir(&log_directory)? {
        bytes_on_disk += item?.metadata()?.len();
    }
    let mut cold_cache = false;
    if drop_caches {
        std::process::Command::new("sync").status()?;
        cold_cache = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    }
    let started = Instant::now();
    let store = LogStore::open(&log_directory, config)?;
    let open = started.elapsed();
    assert_eq!(
        store.last_index()?,
        Index::new(entry_count),
        "recovered log is complete"
    );
    drop(store);
    std::fs::remove_dir_all(&log_directory)?;
    Ok(Recovery {
        entries: entry_count,
        bytes_on_disk,
        segments,
        write,
        open,
        cold_cache,
    })
}
