//! A read-only health check of a log directory (`keel-log check DIR`).

use std::path::Path;

use keel::{ConfState, HardState, Index, LogId, SnapshotMetadata};

use crate::error::LogError;
use crate::fs::FileSystem;
use crate::recovery::{scan, SegmentSummary, TornTail};

/// What [`check`] found in a healthy (openable) log directory.
#[derive(Clone, Debug)]
pub struct HealthReport {
    segments: Vec<SegmentSummary>,
    first_index: Index,
    last_index: Index,
    compacted: LogId,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
    torn_tail: Option<TornTail>,
    other_files: Vec<String>,
}

impl HealthReport {
    /// The segment files, oldest first.
    pub fn segments(&self) -> &[SegmentSummary] {
        &self.segments
    }

    /// The first entry in the log.
    pub fn first_index(&self) -> Index {
        self.first_index
    }

    /// The last entry in the log.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The last discarded entry.
    pub fn compacted(&self) -> LogId {
        self.compacted
    }

    /// The hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot recorded.
    pub fn snapshot(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    /// A torn tail that opening the store would cut off (what a crash during
    /// an unacknowledged write leaves; not a problem).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// Files in the directory that are not segments.
    pub fn other_files(&self) -> &[String] {
        &self.other_files
    }
}

/// Replays the log in `directory` without changing anything.
///
/// # Errors
/// The error [`LogStore::open`](crate::LogStore::open) would fail with:
/// corruption (naming the file and offset) or an IO error.
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// use keel::StorageWrite;
/// use keel_log::memory_fs::MemoryFileSystem;
/// use keel_log::{check, LogConfig, LogStore};
///
/// let file_system = Arc::new(MemoryFileSystem::new(1));
/// let mut store = LogStore::open_with_file_system(file_system.clone(), "/log", LogConfig::default())?;
/// store.append(&keel::testing::entries(1, 1, 5))?;
/// let report = check(file_system.as_ref(), Path::new("/log"))?;
/// assert_eq!(report.last_index().get(), 5);
/// assert_eq!(report.segments().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(file_system: &dyn FileSystem, directory: &Path) -> Result<HealthReport, LogError> {
    let found = scan(file_system, directory)?;
    Ok(HealthReport {
        first_index: found.state.first_index(),
        last_index: found.state.last_index(),
        compacted: found.state.compacted(),
        hard_state: found.state.hard_state(),
        conf_state: found.state.conf_state().clone(),
        snapshot: found.state.snapshot().clone(),
        segments: found.segments,
        torn_tail: found.torn_tail,
        other_files: found.other_files,
    })
}
