//! Workload 3: keel-log on the disk, against the disk's raw rate.
//!
//! Append: `LogStore::write` of a batch of entries (one `fdatasync` per
//! batch) at batch sizes 1, 16 and 256, next to "write 4 KiB + fdatasync"
//! measured in the same run on the same directory, in alternating slices. Recovery: write a log of
//! the given size, close it, time `LogStore::open`, which replays and
//! checksums every record. The page cache is warm (the log was just
//! written) unless the caller dropped it; the table says which.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Entry, EntryKind, Index, Storage, Term};
use keel_log::{LogConfig, LogStore, WriteBatch};

use crate::machine::Timed;

/// Slices of this length alternate between the raw disk and keel-log, so
/// that whatever else the disk is doing falls on both alike.
pub const SLICE: Duration = Duration::from_millis(250);

/// "Write 4 KiB + fdatasync" on a file of its own.
struct RawWriter {
    path: PathBuf,
    file: File,
    block: Vec<u8>,
}

impl RawWriter {
    fn open(directory: &Path) -> std::io::Result<Self> {
        let path = directory.join("raw");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(RawWriter {
            path,
            file,
            block: vec![0x5Au8; 4096],
        })
    }

    fn run_for(&mut self, duration: Duration, timed: &mut Timed) -> std::io::Result<()> {
        let started = Instant::now();
        loop {
            let one = Instant::now();
            self.file.write_all(&self.block)?;
            self.file.sync_data()?;
            timed.latencies_nanos.push(one.elapsed().as_nanos() as u64);
            timed.operations += 1;
            timed.bytes += self.block.len() as u64;
            if started.elapsed() >= duration {
                break;
            }
        }
        timed.elapsed += started.elapsed();
        Ok(())
    }

    fn remove(self) -> std::io::Result<()> {
        drop(self.file);
        std::fs::remove_file(self.path)
    }
}

/// keel-log appends of `batch_entries` entries, one `LogStore::write` (one
/// fdatasync) each.
struct Appender {
    directory: PathBuf,
    store: LogStore,
    data: Bytes,
    batch: Vec<Entry>,
    batch_entries: u64,
    next: u64,
}

impl Appender {
    fn open(directory: &Path, batch_entries: u64, entry_bytes: usize) -> Result<Self, keel_log::LogError> {
        let directory = directory.join(format!("append-{batch_entries}"));
        let store = LogStore::open(&directory, LogConfig::default())?;
        Ok(Appender {
            directory,
            store,
            data: Bytes::from(vec![0xA5u8; entry_bytes]),
            batch: Vec::with_capacity(batch_entries as usize),
            batch_entries,
            next: 1,
        })
    }

    fn run_for(&mut self, duration: Duration, timed: &mut Timed) -> Result<(), keel_log::LogError> {
        let started = Instant::now();
        loop {
            let first = self.next;
            self.batch.clear();
            self.batch
                .extend((first..first + self.batch_entries).map(|index| {
                    Entry::new(
                        Term::new(1),
                        Index::new(index),
                        EntryKind::Normal,
                        self.data.clone(),
                    )
                }));
            let one = Instant::now();
            self.store.write(&WriteBatch::new().with_entries(&self.batch))?;
            timed.latencies_nanos.push(one.elapsed().as_nanos() as u64);
            self.next += self.batch_entries;
            timed.operations += 1;
            timed.bytes += self.batch_entries * self.data.len() as u64;
            if started.elapsed() >= duration {
                break;
            }
        }
        timed.elapsed += started.elapsed();
        Ok(())
    }

    fn remove(self) -> std::io::Result<()> {
        drop(self.store);
        std::fs::remove_dir_all(self.directory)
    }
}

/// One batch size measured against the raw disk, slice by slice.
#[derive(Clone, Debug)]
pub struct AppendComparison {
    /// Entries per `LogStore::write`.
    pub batch_entries: u64,
    /// The raw disk, in the slices alternating with this batch size's.
    pub raw: Timed,
    /// keel-log.
    pub log: Timed,
}

/// For each batch size, alternates [`SLICE`]-long runs of the raw disk and
/// of keel-log appends until each has had `duration`.
pub fn append_against_raw(
    directory: &Path,
    batch_sizes: &[u64],
    entry_bytes: usize,
    duration: Duration,
) -> Result<Vec<AppendComparison>, Box<dyn std::error::Error>> {
    let mut raw = RawWriter::open(directory)?;
    let slice = SLICE.min(duration);
    let slices = (duration.as_nanos() / slice.as_nanos()).max(1);
    let mut comparisons = Vec::new();
    for &batch_entries in batch_sizes {
        let mut appender = Appender::open(directory, batch_entries, entry_bytes)?;
        let mut comparison = AppendComparison {
            batch_entries,
            raw: Timed::default(),
            log: Timed::default(),
        };
        for _ in 0..slices {
            raw.run_for(slice, &mut comparison.raw)?;
            appender.run_for(slice, &mut comparison.log)?;
        }
        appender.remove()?;
        comparisons.push(comparison);
    }
    raw.remove()?;
    Ok(comparisons)
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
