//! [`LogStore`]: the durable log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{
    ConfState, Entry, HardState, Index, InitialState, LogId, NodeId, SnapshotMetadata, Storage, StorageError,
    StorageWrite, Term,
};

use crate::cache::EntryCache;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fs::{child, sync_parent_directory, FileSystem, ReadableFile, RealFileSystem, WritableFile};
use crate::record::{self, Encoder, Parsed, HEADER_BYTES};
use crate::recovery::{scan, segment_file_name, TornTail};
use crate::state::{Location, LogState};

/// The largest entry payload a record can hold.
const ENTRY_DATA_BYTES_MAX: usize = u32::MAX as usize - record::ENTRY_PREFIX_BYTES;

/// One group commit: everything a runtime persists for one `Ready`, written
/// with a single `write` and made durable with a single `fdatasync`.
///
/// Its parts are applied in this order: installed snapshot, entries (a
/// conflicting suffix is truncated first), hard state, membership, created
/// snapshot, compaction.
///
/// ```
/// use keel::{HardState, Index, Term};
/// use keel_log::WriteBatch;
/// let entries = keel::testing::entries(1, 1, 3);
/// let batch = WriteBatch::new()
///     .with_entries(&entries)
///     .with_hard_state(HardState { term: Term::new(1), vote: None, commit: Index::new(2) });
/// assert!(!batch.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct WriteBatch<'a> {
    installed_snapshot: Option<SnapshotMetadata>,
    entries: &'a [Entry],
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    snapshot: Option<SnapshotMetadata>,
    compact_through: Option<Index>,
}

impl<'a> WriteBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Replaces the log with a snapshot received from the leader (as
    /// [`StorageWrite::apply_snapshot`]).
    pub fn with_installed_snapshot(mut self, metadata: SnapshotMetadata) -> Self {
        self.installed_snapshot = Some(metadata);
        self
    }

    /// Appends contiguous entries (as [`StorageWrite::append`]).
    pub fn with_entries(mut self, entries: &'a [Entry]) -> Self {
        self.entries = entries;
        self
    }

    /// Replaces the hard state.
    pub fn with_hard_state(mut self, hard_state: HardState) -> Self {
        self.hard_state = Some(hard_state);
        self
    }

    /// Replaces the membership.
    pub fn with_conf_state(mut self, conf_state: ConfState) -> Self {
        self.conf_state = Some(conf_state);
        self
    }

    /// Records a snapshot the application took (as
    /// [`StorageWrite::create_snapshot`]).
    pub fn with_snapshot(mut self, metadata: SnapshotMetadata) -> Self {
        self.snapshot = Some(metadata);
        self
    }

    /// Discards entries through `through` (as [`StorageWrite::compact`]).
    pub fn with_compaction_through(mut self, through: Index) -> Self {
        self.compact_through = Some(through);
        self
    }

    /// Whether the batch holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.installed_snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.snapshot.is_none()
            && self.compact_through.is_none()
    }
}

/// What is durable after a successful [`LogStore::write`]: everything in
/// the batch and before it, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableState {
    first_index: Index,
    last: LogId,
    hard_state: HardState,
}

impl DurableState {
    /// The first entry still in the log.
    pub fn first_index(&self) -> Index {
        self.first_index
    }

    /// The last durable entry (the snapshot's last entry if the log is empty).
    pub fn last(&self) -> LogId {
        self.last
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }
}

/// The batch after validation: what will be written.
struct Plan<'a> {
    installed_snapshot: Option<&'a SnapshotMetadata>,
    truncate_from: Option<Index>,
    entries: &'a [Entry],
    hard_state: Option<HardState>,
    conf_state: Option<&'a ConfState>,
    snapshot: Option<&'a SnapshotMetadata>,
    compact_through: Option<LogId>,
}

impl Plan<'_> {
    fn is_empty(&self) -> bool {
        self.installed_snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.snapshot.is_none()
            && self.compact_through.is_none()
    }
}

#[derive(Debug)]
struct ActiveSegment {
    sequence: u64,
    path: PathBuf,
    writer: Box<dyn WritableFile>,
    /// Whether the segment's first record, its checkpoint, is written.
    has_checkpoint: bool,
}

/// A durable Raft log in a directory of segment files.
///
/// Implements [`Storage`] and [`StorageWrite`] (each write call is one
/// batch, one `fdatasync`); a runtime that persists a whole `Ready` at once
/// uses [`LogStore::write`]. See the [crate documentation](crate) for the
/// format and the guarantees.
///
/// ```
/// use keel::{Index, Storage, StorageWrite};
/// use keel_log::{LogConfig, LogStore};
/// let directory = std::env::temp_dir().join(format!("keel-log-store-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&directory);
/// let mut store = LogStore::open(&directory, LogConfig::default())?;
/// store.append(&keel::testing::entries(1, 1, 3))?;
/// drop(store);
/// let store = LogStore::open(&directory, LogConfig::default())?;
/// assert_eq!(store.last_index()?, Index::new(3));
/// # std::fs::remove_dir_all(&directory).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LogStore {
    file_system: Arc<dyn FileSystem>,
    directory: PathBuf,
    config: LogConfig,
    state: LogState,
    /// Readers of every segment, the active one included.
    readers: BTreeMap<u64, Box<dyn ReadableFile>>,
    active: ActiveSegment,
    cache: EntryCache,
    /// Reused for every batch so writing allocates nothing per entry.
    batch_buffer: Vec<u8>,
    /// Set by the first failed write; every later write is refused.
    write_failure: Option<Arc<str>>,
    recovered_torn_tail: Option<TornTail>,
    /// How long the `fdatasync` of the last write that synced took.
    last_sync_duration: Option<Duration>,
}

impl LogStore {
    /// Opens (or creates) the log in `directory` on the real file system,
    /// recovering from a crash: see [`LogStore::open_with_file_system`].
    pub fn open(directory: impl AsRef<Path>, config: LogConfig) -> Result<LogStore, LogError> {
        LogStore::open_with_file_system(Arc::new(RealFileSystem), directory, config)
    }

    /// Opens (or creates) the log in `directory` on `file_system`.
    ///
    /// Replays every segment. A torn record at the end of the last segment
    /// (a crash during a write that was never acknowledged: the record cut
    /// short, or zeroed sectors) is cut off and reported by
    /// [`LogStore::recovered_torn_tail`].
    ///
    /// # Errors
    /// [`LogError::Corruption`], naming the file and offset, for a bad
    /// checksum anywhere else (the last record included, when it is complete
    /// and not zeroed: that is synced data damaged, not a torn write), a gap,
    /// a duplicated or out-of-order index, a missing segment;
    /// [`LogError::Io`] if the disk fails.
    pub fn open_with_file_system(
        file_system: Arc<dyn FileSystem>,
        directory: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<LogStore, LogError> {
        config.validate()?;
        let directory = directory.as_ref().to_path_buf();
        file_system
            .create_directory_all(&directory)
            .map_err(LogError::io("create directory", &directory))?;
        // The log directory's own name must be durable before anything in it
        // is acknowledged (it may have just been created).
        sync_parent_directory(file_system.as_ref(), &directory)?;
        let found = scan(file_system.as_ref(), &directory)?;
        let active = match found.segments.last() {
            None => create_segment(file_system.as_ref(), &directory, 1)?,
            Some(last) => {
                let path = last.path().to_path_buf();
                let mut writer = file_system
                    .open_append(&path)
                    .map_err(LogError::io("open", &path))?;
                if let Some(torn_tail) = &found.torn_tail {
                    writer
                        .truncate(torn_tail.offset())
                        .map_err(LogError::io("truncate", &path))?;
                    writer.sync_data().map_err(LogError::io("fdatasync", &path))?;
                }
                ActiveSegment {
                    sequence: last.sequence(),
                    path,
                    has_checkpoint: last.valid_length_bytes() > 0,
                    writer,
                }
            }
        };
        let mut readers = BTreeMap::new();
        for sequence in found
            .segments
            .iter()
            .map(|segment| segment.sequence())
            .chain([active.sequence])
        {
            let path = child(&directory, &segment_file_name(sequence));
            let reader = file_system
                .open_read(&path)
                .map_err(LogError::io("open", &path))?;
            readers.insert(sequence, reader);
        }
        Ok(LogStore {
            cache: EntryCache::new(config.entry_cache_size_bytes()),
            file_system,
            directory,
            config,
            state: found.state,
            readers,
            active,
            batch_buffer: Vec::new(),
            write_failure: None,
            last_sync_duration: None,
            recovered_torn_tail: found.torn_tail,
        })
    }

    /// The log's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The torn tail cut off the last segment when the store was opened, if
    /// there was one.
    pub fn recovered_torn_tail(&self) -> Option<&TornTail> {
        self.recovered_torn_tail.as_ref()
    }

    /// Why the store refuses writes, if an earlier write failed.
    pub fn write_failure(&self) -> Option<&str> {
        self.write_failure.as_deref()
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.state.hard_state()
    }

    /// The durable membership.
    pub fn conf_state(&self) -> &ConfState {
        self.state.conf_state()
    }

    /// The latest snapshot recorded (created or installed).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        self.state.snapshot()
    }

    /// What is durable now.
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            first_index: self.state.first_index(),
            last: LogId::new(
                self.state.last_term().unwrap_or_default(),
                self.state.last_index(),
            ),
            hard_state: self.state.hard_state(),
        }
    }

    /// How long the `fdatasync` of the last write that reached the disk
    /// took (the rest of [`LogStore::write`] is encoding and the append):
    /// for metrics that tell a slow disk from a slow writer. `None` before
    /// the first such write.
    pub fn last_sync_duration(&self) -> Option<Duration> {
        self.last_sync_duration
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.readers.len()
    }

    /// Writes `batch` with one append and one `fdatasync` and returns what
    /// is durable. An empty batch (or one that changes nothing) writes
    /// nothing.
    ///
    /// # Errors
    /// Rejections ([`LogError::is_rejection`]) write nothing. Any other error
    /// means the disk's state is unknown: the store refuses every later
    /// write ([`LogError::WritesRefused`]) and must be reopened; it never
    /// retries an `fsync`.
    pub fn write(&mut self, batch: &WriteBatch<'_>) -> Result<DurableState, LogError> {
        if let Some(reason) = &self.write_failure {
            return Err(LogError::WritesRefused {
                reason: Arc::clone(reason),
            });
        }
        let plan = self.plan(batch)?;
        if plan.is_empty() {
            return Ok(self.durable_state());
        }
        if self.active.writer.length_bytes() >= self.config.segment_size_bytes() {
            self.roll().map_err(|error| self.refuse_writes(error))?;
        }
        let entry_records = self.encode(&plan);
        let base_offset = self.active.writer.length_bytes();
        let path = &self.active.path;
        let mut sync_started = None;
        let written = self
            .active
            .writer
            .append(&self.batch_buffer)
            .map_err(LogError::io("append to", path))
            .and_then(|()| {
                sync_started = Some(Instant::now());
                self.active
                    .writer
                    .sync_data()
                    .map_err(LogError::io("fdatasync", path))
            });
        if let Err(error) = written {
            return Err(self.refuse_writes(error));
        }
        self.last_sync_duration = sync_started.map(|started| started.elapsed());
        self.active.has_checkpoint = true;
        self.apply(&plan, base_offset, &entry_records);
        if let Err(error) = self.delete_unneeded_segments() {
            // The batch is durable; the failure only stops later writes.
            self.refuse_writes(error);
        }
        Ok(self.durable_state())
    }

    fn refuse_writes(&mut self, error: LogError) -> LogError {
        if self.write_failure.is_none() {
            self.write_failure = Some(error.to_string().into());
        }
        error
    }

    /// Checks `batch` against the log; nothing changes.
    fn plan<'a>(&self, batch: &'a WriteBatch<'_>) -> Result<Plan<'a>, LogError> {
        let mut compacted = self.state.compacted();
        let mut last_index = self.state.last_index();
        let mut snapshot_index = self.state.snapshot().last.index;
        if let Some(metadata) = &batch.installed_snapshot {
            if metadata.last.index < snapshot_index {
                return Err(LogError::Compacted(metadata.last.index));
            }
            compacted = metadata.last;
            last_index = metadata.last.index;
            snapshot_index = metadata.last.index;
        }
        let term_before_batch = |index: Index| {
            if index == compacted.index {
                Some(compacted.term)
            } else if batch.installed_snapshot.is_some() {
                None
            } else {
                self.state.term(index)
            }
        };
        let entries = check_entries(batch.entries, compacted, last_index)?;
        let mut truncate_from = None;
        if let Some(first) = entries.first() {
            if first.index <= last_index {
                truncate_from = Some(first.index);
            }
            let previous_term = term_before_batch(first.index.prev()).unwrap_or_default();
            if first.term < previous_term {
                return Err(LogError::InvalidWrite(format!(
                    "entry {} has term {}, below the term {previous_term} of the entry before it",
                    first.index, first.term
                )));
            }
            last_index = entries[entries.len() - 1].index;
        }
        if let Some(metadata) = &batch.snapshot {
            if metadata.last.index < snapshot_index {
                return Err(LogError::Compacted(metadata.last.index));
            }
            if metadata.last.index > last_index {
                return Err(LogError::Unavailable(metadata.last.index));
            }
        }
        let mut compact_through = None;
        if let Some(through) = batch.compact_through.filter(|through| *through > compacted.index) {
            if through > last_index {
                return Err(LogError::Unavailable(through));
            }
            let term = match entries.first() {
                Some(first) if through >= first.index => {
                    Some(entries[through.distance_from(first.index) as usize].term)
                }
                _ => term_before_batch(through),
            };
            let term = term.ok_or(LogError::Compacted(through))?;
            compact_through = Some(LogId::new(term, through));
        }
        Ok(Plan {
            installed_snapshot: batch.installed_snapshot.as_ref(),
            truncate_from,
            entries,
            hard_state: batch.hard_state,
            conf_state: batch.conf_state.as_ref(),
            snapshot: batch.snapshot.as_ref(),
            compact_through,
        })
    }

    /// Encodes the plan into the batch buffer; returns each entry record's
    /// offset in it and length.
    fn encode(&mut self, plan: &Plan<'_>) -> Vec<(usize, usize)> {
        self.batch_buffer.clear();
        let checkpoint = (!self.active.has_checkpoint).then(|| self.state.checkpoint(self.active.sequence));
        let mut encoder = Encoder::new(&mut self.batch_buffer);
        if let Some(checkpoint) = &checkpoint {
            encoder.checkpoint(checkpoint);
        }
        if let Some(metadata) = plan.installed_snapshot {
            encoder.install_snapshot(metadata);
        }
        if let Some(from) = plan.truncate_from {
            encoder.truncate(from);
        }
        let entry_records = plan.entries.iter().map(|entry| encoder.entry(entry)).collect();
        if let Some(hard_state) = &plan.hard_state {
            encoder.hard_state(hard_state);
        }
        if let Some(conf_state) = plan.conf_state {
            encoder.conf_state(conf_state);
        }
        if let Some(metadata) = plan.snapshot {
            encoder.snapshot(metadata);
        }
        if let Some(through) = plan.compact_through {
            encoder.compact(through);
        }
        entry_records
    }

    /// Applies a durable plan to the in-memory state, exactly as replay
    /// will apply its records.
    fn apply(&mut self, plan: &Plan<'_>, base_offset: u64, entry_records: &[(usize, usize)]) {
        let consistent = |outcome: Result<(), String>| {
            if let Err(reason) = outcome {
                panic!("a validated batch does not apply: {reason}");
            }
        };
        if let Some(metadata) = plan.installed_snapshot {
            consistent(self.state.apply_install_snapshot(metadata));
            self.cache.clear();
        }
        if let Some(from) = plan.truncate_from {
            consistent(self.state.apply_truncate(from));
            self.cache.truncate(from);
        }
        for (entry, &(offset, length)) in plan.entries.iter().zip(entry_records) {
            let location = Location {
                term: entry.term,
                segment_sequence: self.active.sequence,
                offset: base_offset + offset as u64,
                length_bytes: length as u32,
            };
            let header = record::EntryHeader {
                term: entry.term,
                index: entry.index,
                kind: entry.kind,
            };
            consistent(self.state.apply_entry(header, location));
        }
        self.cache.append(plan.entries);
        if let Some(hard_state) = plan.hard_state {
            self.state.apply_hard_state(hard_state);
        }
        if let Some(conf_state) = plan.conf_state {
            self.state.apply_conf_state(conf_state.clone());
        }
        if let Some(metadata) = plan.snapshot {
            consistent(self.state.apply_snapshot(metadata));
        }
        if let Some(through) = plan.compact_through {
            consistent(self.state.apply_compact(through));
            self.cache.compact(through.index);
        }
    }

    /// Starts a new segment; the old one is complete and durable.
    fn roll(&mut self) -> Result<(), LogError> {
        let sequence = self.active.sequence + 1;
        let active = create_segment(self.file_system.as_ref(), &self.directory, sequence)?;
        let reader = self
            .file_system
            .open_read(&active.path)
            .map_err(LogError::io("open", &active.path))?;
        self.readers.insert(sequence, reader);
        self.active = active;
        Ok(())
    }

    /// Deletes, oldest first, the segments before the oldest one that holds
    /// a live entry. The first remaining segment's checkpoint carries the
    /// state they held.
    fn delete_unneeded_segments(&mut self) -> Result<(), LogError> {
        let oldest_needed = self
            .state
            .oldest_needed_segment()
            .unwrap_or(self.active.sequence)
            .min(self.active.sequence);
        while let Some((&sequence, _)) = self.readers.first_key_value() {
            if sequence >= oldest_needed {
                break;
            }
            self.readers.remove(&sequence);
            let path = child(&self.directory, &segment_file_name(sequence));
            self.file_system
                .remove_file(&path)
                .map_err(LogError::io("remove", &path))?;
            // One directory sync per deletion keeps the remaining segments a
            // contiguous run even if the crash comes between two deletions.
            self.file_system
                .sync_directory(&self.directory)
                .map_err(LogError::io("fsync directory", &self.directory))?;
        }
        Ok(())
    }

    /// Entries in `[low, high)`, at least one, then as many as fit in
    /// `max_bytes`; from the cache where possible, else from disk.
    fn read_entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, LogError> {
        if low <= self.state.compacted().index {
            return Err(LogError::Compacted(low));
        }
        if high > self.state.last_index().next() {
            return Err(LogError::Unavailable(high));
        }
        let mut entries = Vec::new();
        let mut total_bytes = 0u64;
        let mut index = low;
        while index < high {
            if let Some(entry) = self.cache.get(index) {
                if !entries.is_empty() && total_bytes + entry.size_bytes() > max_bytes {
                    break;
                }
                total_bytes += entry.size_bytes();
                entries.push(entry.clone());
                index = index.next();
                continue;
            }
            let before = entries.len();
            self.read_run_from_disk(index, high, max_bytes, &mut total_bytes, &mut entries)?;
            if entries.len() == before {
                break;
            }
            index = index.plus((entries.len() - before) as u64);
        }
        Ok(entries)
    }

    /// Reads the longest run of entries from `low` that lie back to back in
    /// one segment, are not cached and fit the byte budget, with one read.
    fn read_run_from_disk(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
        total_bytes: &mut u64,
        entries: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        let first = *self.state.location(low).ok_or(LogError::Unavailable(low))?;
        let mut run_end = first.offset;
        let mut index = low;
        let mut run_bytes = 0u64;
        while index < high && self.cache.get(index).is_none() {
            let Some(location) = self.state.location(index) else {
                break;
            };
            let size_bytes = u64::from(location.length_bytes) - HEADER_BYTES as u64;
            let is_first = entries.is_empty() && index == low;
            if location.segment_sequence != first.segment_sequence
                || location.offset != run_end
                || (!is_first && *total_bytes + run_bytes + size_bytes > max_bytes)
            {
                break;
            }
            run_bytes += size_bytes;
            run_end += u64::from(location.length_bytes);
            index = index.next();
        }
        let path = child(&self.directory, &segment_file_name(first.segment_sequence));
        let reader = self
            .readers
            .get(&first.segment_sequence)
            .ok_or_else(|| LogError::Corruption {
                path: path.clone(),
                offset: first.offset,
                reason: "segment of a live entry is not open".into(),
            })?;
        let mut buffer = vec![0; (run_end - first.offset) as usize];
        reader
            .read_exact_at(first.offset, &mut buffer)
            .map_err(LogError::io("read", &path))?;
        let buffer = Bytes::from(buffer);
        let mut position = 0;
        let mut entry_index = low;
        while entry_index < index {
            let offset = first.offset + position as u64;
            let corruption = |reason: &str| LogError::Corruption {
                path: path.clone(),
                offset,
                reason: format!("reading entry {entry_index}: {reason}"),
            };
            let (payload_start, total) = match record::parse(&buffer[position..]) {
                Parsed::Valid {
                    payload, total_bytes, ..
                } => (position + total_bytes - payload.len(), total_bytes),
                Parsed::Incomplete => return Err(corruption("record cut short")),
                Parsed::Invalid(reason) => return Err(corruption(reason)),
            };
            let entry =
                record::decode_entry(&buffer.slice(payload_start..position + total)).map_err(corruption)?;
            let expected_term = self.state.term(entry_index);
            if entry.index != entry_index || Some(entry.term) != expected_term {
                return Err(corruption("the record holds a different entry"));
            }
            *total_bytes += entry.size_bytes();
            entries.push(entry);
            position += total;
            entry_index = entry_index.next();
        }
        Ok(())
    }
}

/// Checks entries to append and drops those the snapshot covers.
fn check_entries(entries: &[Entry], compacted: LogId, last_index: Index) -> Result<&[Entry], LogError> {
    let Some(first) = entries.first() else {
        return Ok(entries);
    };
    if first.index > last_index.next() {
        return Err(LogError::Unavailable(first.index));
    }
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index.next() {
            return Err(LogError::InvalidWrite(format!(
                "entries are not contiguous: {} follows {}",
                pair[1].index, pair[0].index
            )));
        }
        if pair[1].term < pair[0].term {
            return Err(LogError::InvalidWrite(format!(
                "entry {} has term {}, below the term {} of the entry before it",
                pair[1].index, pair[1].term, pair[0].term
            )));
        }
    }
    if let Some(entry) = entries
        .iter()
        .find(|entry| entry.data.len() > ENTRY_DATA_BYTES_MAX)
    {
        return Err(LogError::InvalidWrite(format!(
            "entry {} holds {} bytes, above the maximum of {ENTRY_DATA_BYTES_MAX}",
            entry.index,
            entry.data.len()
        )));
    }
    let covered = compacted.index.next().distance_from(first.index) as usize;
    Ok(entries.get(covered..).unwrap_or(&[]))
}

fn create_segment(
    file_system: &dyn FileSystem,
    directory: &Path,
    sequence: u64,
) -> Result<ActiveSegment, LogError> {
    let path = child(directory, &segment_file_name(sequence));
    let writer = file_system
        .create_new(&path)
        .map_err(LogError::io("create", &path))?;
    // The new name must be durable before anything in the file is
    // acknowledged.
    file_system
        .sync_directory(directory)
        .map_err(LogError::io("fsync directory", directory))?;
    Ok(ActiveSegment {
        sequence,
        path,
        writer,
        has_checkpoint: false,
    })
}

impl Storage for LogStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.state.hard_state(),
            conf_state: self.state.conf_state().clone(),
        })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        Ok(self.read_entries(low, high, max_bytes)?)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.state.compacted().index {
            return Err(StorageError::Compacted(index));
        }
        if index > self.state.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        self.state.term(index).ok_or(StorageError::Unavailable(index))
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.state.first_index())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.state.last_index())
    }

    fn snapshot(&self, _request_index: Index, _to: NodeId) -> Result<SnapshotMetadata, StorageError> {
        Ok(self.state.snapshot().clone())
    }
}

impl StorageWrite for LogStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_entries(entries))?;
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_hard_state(hard_state))?;
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_conf_state(conf_state))?;
        Ok(())
    }

    fn apply_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_installed_snapshot(metadata))?;
        Ok(())
    }

    fn create_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_snapshot(metadata))?;
        Ok(())
    }

    fn compact(&mut self, through: Index) -> Result<(), StorageError> {
        self.write(&WriteBatch::new().with_compaction_through(through))?;
        Ok(())
    }
}
