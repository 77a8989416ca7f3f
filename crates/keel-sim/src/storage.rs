//! [`SimStorage`]: a simulated disk behind `keel::Storage`.
//!
//! Every write lands in the *current* state at once (what the running
//! process reads back, like a page cache) and is queued as *pending*. A
//! [`SimStorage::sync`] makes everything pending *durable*. A crash keeps
//! the durable state plus a prefix of the pending writes — the disk may
//! have written some of them, in order, before power went — and the last
//! surviving append may be torn (only a prefix of its entries survives), as
//! a write-ahead log cuts a torn tail record on recovery. A sync can be made
//! to fail: the store is then *poisoned* and every later read or write fails
//! with [`StorageError::Failed`], which must stop the node.
//!
//! The state machine's snapshot image is stored beside the snapshot
//! metadata, so a restarted node restores both from the same durable state;
//! so is the membership (a snapshot taken with its image also sets the
//! store's membership to the snapshot's).

use std::sync::Arc;

use keel::{
    ConfState, Entry, HardState, Index, InitialState, LogId, NodeId, SnapshotMetadata, Storage, StorageError,
    StorageWrite, Term,
};

use crate::kv::KvStore;

/// One disk image: the log, hard state, membership and latest snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DiskImage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
    /// The state machine as of `snapshot.last`; `None` only for no snapshot
    /// or a snapshot recorded through the bare `StorageWrite` trait.
    snapshot_image: Option<KvStore>,
    /// The last discarded entry; its term stays known.
    /// Invariant: `entries[i].index == compacted.index + 1 + i`.
    compacted: LogId,
    entries: Vec<Entry>,
}

/// A write, as queued until it is synced.
#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
    ConfState(ConfState),
    ApplySnapshot(SnapshotMetadata, Option<KvStore>),
    CreateSnapshot(SnapshotMetadata, Option<KvStore>),
    Compact(Index),
}

impl DiskImage {
    fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.compacted.index, |entry| entry.index)
    }

    fn position(&self, index: Index) -> usize {
        debug_assert!(index > self.compacted.index);
        (index.distance_from(self.compacted.index) - 1) as usize
    }

    /// Checks a write against this image without changing it.
    fn validate(&self, write: &Write) -> Result<(), StorageError> {
        match write {
            Write::Append(entries) => {
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                if first.index > self.last_index().next() {
                    return Err(StorageError::Unavailable(first.index));
                }
                if entries
                    .windows(2)
                    .any(|pair| pair[1].index != pair[0].index.next())
                {
                    return Err(StorageError::Failed("appended entries are not contiguous".into()));
                }
                Ok(())
            }
            Write::HardState(_) | Write::ConfState(_) => Ok(()),
            Write::ApplySnapshot(metadata, _) => {
                if metadata.last.index < self.snapshot.last.index {
                    return Err(StorageError::Compacted(metadata.last.index));
                }
                Ok(())
            }
            Write::CreateSnapshot(metadata, _) => {
                if metadata.last.index < self.snapshot.last.index {
                    return Err(StorageError::Compacted(metadata.last.index));
                }
                if metadata.last.index > self.last_index() {
                    return Err(StorageError::Unavailable(metadata.last.index));
                }
                Ok(())
            }
            Write::Compact(through) => {
                if *through > self.compacted.index && *through > self.last_index() {
                    return Err(StorageError::Unavailable(*through));
                }
                Ok(())
            }
        }
    }

    /// Applies a write that [`DiskImage::validate`] accepted.
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Append(entries) => {
                let Some(first) = entries.first() else {
                    return;
                };
                let skip = self.compacted.index.next().distance_from(first.index) as usize;
                let Some(new_entries) = entries.get(skip..).filter(|rest| !rest.is_empty()) else {
                    return;
                };
                let keep = self.position(new_entries[0].index);
                self.entries.truncate(keep);
                self.entries.extend_from_slice(new_entries);
            }
            Write::HardState(hard_state) => self.hard_state = *hard_state,
            Write::ConfState(conf_state) => self.conf_state = conf_state.clone(),
            Write::ApplySnapshot(metadata, image) => {
                self.entries.clear();
                self.compacted = metadata.last;
                self.conf_state = metadata.conf_state.clone();
                self.snapshot = metadata.clone();
                self.snapshot_image = image.clone();
            }
            Write::CreateSnapshot(metadata, image) => {
                self.snapshot = metadata.clone();
                // The simulator's runtime keeps the membership with its
                // snapshots (as keel-node does): a restart takes the
                // snapshot's and replays later changes from the log.
                if image.is_some() {
                    self.conf_state = metadata.conf_state.clone();
                }
                self.snapshot_image = image.clone();
            }
            Write::Compact(through) => {
                if *through <= self.compacted.index {
                    return;
                }
                let position = self.position(*through);
                self.compacted = self.entries[position].log_id();
                self.entries.drain(..=position);
            }
        }
        debug_assert!(self
            .entries
            .iter()
            .enumerate()
            .all(|(position, entry)| entry.index == self.compacted.index.plus(position as u64 + 1)));
    }
}

/// What survives a crash beyond the durable state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashSurvivors {
    /// How many of the pending writes (oldest first) reached the disk.
    pub writes: usize,
    /// If the last surviving write is an append, how many of its entries
    /// survive (a torn write); `None` keeps it whole.
    pub torn_entries: Option<usize>,
}

/// Counters of what the store did, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Syncs that succeeded.
    pub syncs: u64,
}

/// A simulated disk; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SimStorage {
    current: DiskImage,
    durable: DiskImage,
    pending: Vec<Write>,
    /// Set by a failed sync: every later call fails with this reason.
    poisoned: Option<Arc<str>>,
    /// The next sync fails (fault injection).
    fail_next_sync: bool,
    stats: StorageStats,
    /// Reads refused because the store is poisoned (`Storage` reads take
    /// `&self`, hence the cell).
    failed_reads: std::cell::Cell<u64>,
}

impl SimStorage {
    /// An empty store whose initial (durable) membership is `conf_state`.
    pub fn new_with_conf_state(conf_state: ConfState) -> Self {
        let image = DiskImage {
            conf_state,
            ..DiskImage::default()
        };
        SimStorage {
            current: image.clone(),
            durable: image,
            ..SimStorage::default()
        }
    }

    /// A founder's store: the bootstrap snapshot at index 1 holding the
    /// founding membership and an empty state machine, durable. Nodes added
    /// later start empty and learn the membership from it (or a later
    /// snapshot).
    pub fn bootstrapped(conf_state: ConfState) -> Self {
        let metadata = SnapshotMetadata::bootstrap(conf_state.clone());
        let image = DiskImage {
            conf_state,
            compacted: metadata.last,
            snapshot: metadata,
            snapshot_image: Some(KvStore::new()),
            ..DiskImage::default()
        };
        SimStorage {
            current: image.clone(),
            durable: image,
            ..SimStorage::default()
        }
    }

    fn record(&mut self, write: Write) -> Result<(), StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Failed(reason.clone()));
        }
        self.current.validate(&write)?;
        self.current.apply(&write);
        self.pending.push(write);
        Ok(())
    }

    fn ensure_healthy(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Makes every pending write durable (fsync).
    ///
    /// # Errors
    /// If a failure was injected with [`SimStorage::fail_next_sync`]: the
    /// store is poisoned and nothing more becomes durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.ensure_healthy()?;
        if self.fail_next_sync {
            self.fail_next_sync = false;
            let reason: Arc<str> = "simulated fsync failure".into();
            self.poisoned = Some(reason.clone());
            return Err(StorageError::Failed(reason));
        }
        for write in self.pending.drain(..) {
            self.durable.apply(&write);
        }
        debug_assert_eq!(self.durable, self.current);
        self.stats.syncs += 1;
        Ok(())
    }

    /// Makes the next [`SimStorage::sync`] fail.
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// Cancels a failure armed by [`SimStorage::fail_next_sync`].
    pub fn disarm_sync_failure(&mut self) {
        self.fail_next_sync = false;
    }

    /// Whether a failed sync poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// How many writes are not yet durable.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Counters of syncs and failed reads.
    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// The disk as a restarted process finds it after a crash: the durable
    /// state plus the surviving prefix of the pending writes. The result
    /// is healthy (a restart gets a working disk) and has nothing pending.
    pub fn after_crash(&self, survivors: CrashSurvivors) -> SimStorage {
        let mut image = self.durable.clone();
        let count = survivors.writes.min(self.pending.len());
        for (position, write) in self.pending[..count].iter().enumerate() {
            let is_last = position + 1 == count;
            let write = match (write, survivors.torn_entries) {
                (Write::Append(entries), Some(kept)) if is_last => {
                    Write::Append(entries[..kept.min(entries.len())].to_vec())
                }
                _ => write.clone(),
            };
            // Each write was valid against the image it followed, and a
            // prefix of an append is valid wherever the whole one was.
            debug_assert!(image.validate(&write).is_ok());
            image.apply(&write);
        }
        SimStorage {
            current: image.clone(),
            durable: image,
            ..SimStorage::default()
        }
    }

    /// The latest snapshot and the state machine image taken with it.
    pub fn snapshot_with_image(&self) -> (SnapshotMetadata, Option<KvStore>) {
        (self.current.snapshot.clone(), self.current.snapshot_image.clone())
    }

    /// Installs a snapshot received from the leader, with its image.
    ///
    /// # Errors
    /// As [`StorageWrite::apply_snapshot`]; `Failed` once poisoned.
    pub fn apply_snapshot_with_image(
        &mut self,
        metadata: SnapshotMetadata,
        image: KvStore,
    ) -> Result<(), StorageError> {
        self.record(Write::ApplySnapshot(metadata, Some(image)))
    }

    /// Records a snapshot the application took at `metadata.last`, and its
    /// membership as the one a restart starts from (the simulator replays
    /// membership changes after the snapshot from the log rather than
    /// persisting each: a restarted state machine restarts from the
    /// snapshot, so its membership must too).
    ///
    /// # Errors
    /// As [`StorageWrite::create_snapshot`]; `Failed` once poisoned.
    pub fn create_snapshot_with_image(
        &mut self,
        metadata: SnapshotMetadata,
        image: KvStore,
    ) -> Result<(), StorageError> {
        self.record(Write::CreateSnapshot(metadata, Some(image)))
    }

    /// The hard state as the running process sees it.
    pub fn hard_state(&self) -> HardState {
        self.current.hard_state
    }

    /// The durable hard state: what a crash now would leave at the least.
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state
    }

    /// The entry at `index` as currently written, if the log holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.current.compacted.index || index > self.current.last_index() {
            return None;
        }
        self.current.entries.get(self.current.position(index))
    }

    /// The first index still in the log (ignores poisoning: for checks).
    pub fn first_index_unchecked(&self) -> Index {
        self.current.compacted.index.next()
    }

    /// The last index in the log (ignores poisoning: for checks).
    pub fn last_index_unchecked(&self) -> Index {
        self.current.last_index()
    }

    fn failed_read(&self) -> Option<StorageError> {
        self.poisoned
            .as_ref()
            .map(|reason| StorageError::Failed(reason.clone()))
    }
}

impl SimStorage {
    fn check_read(&self) -> Result<(), StorageError> {
        match self.failed_read() {
            Some(error) => {
                self.failed_reads.set(self.failed_reads.get() + 1);
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Reads refused since the store was poisoned: nonzero means the node
    /// has seen a storage failure and must have stopped.
    pub fn failed_reads(&self) -> u64 {
        self.failed_reads.get()
    }
}

impl Storage for SimStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.check_read()?;
        Ok(InitialState {
            hard_state: self.current.hard_state,
            conf_state: self.current.conf_state.clone(),
        })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.check_read()?;
        let image = &self.current;
        if low <= image.compacted.index {
            return Err(StorageError::Compacted(low));
        }
        if high > image.last_index().next() {
            return Err(StorageError::Unavailable(high));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let slice = &image.entries[image.position(low)..image.position(high)];
        Ok(slice[..Entry::count_within_bytes(slice, max_bytes)].to_vec())
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.check_read()?;
        let image = &self.current;
        if index < image.compacted.index {
            return Err(StorageError::Compacted(index));
        }
        if index == image.compacted.index {
            return Ok(image.compacted.term);
        }
        if index > image.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        Ok(image.entries[image.position(index)].term)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        self.check_read()?;
        Ok(self.current.compacted.index.next())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        self.check_read()?;
        Ok(self.current.last_index())
    }

    fn snapshot(&self, _request_index: Index, _to: NodeId) -> Result<SnapshotMetadata, StorageError> {
        self.check_read()?;
        Ok(self.current.snapshot.clone())
    }
}

impl StorageWrite for SimStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return self.ensure_healthy();
        }
        self.record(Write::Append(entries.to_vec()))
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.record(Write::HardState(hard_state))
    }

    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageError> {
        self.record(Write::ConfState(conf_state))
    }

    fn apply_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.record(Write::ApplySnapshot(metadata, None))
    }

    fn create_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.record(Write::CreateSnapshot(metadata, None))
    }

    fn compact(&mut self, through: Index) -> Result<(), StorageError> {
        self.record(Write::Compact(through))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel::testing::{entries, run_storage_conformance};

    fn survivors(writes: usize, torn_entries: Option<usize>) -> CrashSurvivors {
        CrashSurvivors { writes, torn_entries }
    }

    #[test]
    fn conformance() {
        run_storage_conformance(SimStorage::default);
        // The suite again on stores that sync after every write: the
        // durable path must behave the same.
        run_storage_conformance(|| {
            let mut storage = SimStorage::default();
            storage.sync().unwrap();
            storage
        });
    }

    #[test]
    fn a_crash_keeps_synced_writes_and_loses_unsynced_ones() {
        let mut storage = SimStorage::default();
        storage.append(&entries(1, 1, 3)).unwrap();
        storage
            .set_hard_state(HardState {
                term: Term::new(1),
                vote: Some(NodeId::new(2)),
                commit: Index::new(2),
            })
            .unwrap();
        storage.sync().unwrap();
        storage.append(&entries(2, 4, 6)).unwrap();
        assert_eq!(storage.pending_writes(), 1);

        let lost = storage.after_crash(survivors(0, None));
        assert_eq!(lost.last_index().unwrap(), Index::new(3));
        assert_eq!(
            lost.initial_state().unwrap().hard_state.vote,
            Some(NodeId::new(2))
        );

        let torn = storage.after_crash(survivors(1, Some(2)));
        assert_eq!(torn.last_index().unwrap(), Index::new(5));
        assert_eq!(torn.term(Index::new(5)).unwrap(), Term::new(2));

        let whole = storage.after_crash(survivors(1, None));
        assert_eq!(whole.last_index().unwrap(), Index::new(6));
        assert_eq!(whole.pending_writes(), 0);
    }

    #[test]
    fn a_failed_sync_poisons_the_store() {
        let mut storage = SimStorage::default();
        storage.append(&entries(1, 1, 2)).unwrap();
        storage.fail_next_sync();
        assert!(matches!(storage.sync(), Err(StorageError::Failed(_))));
        assert!(storage.is_poisoned());
        assert_eq!(storage.failed_reads(), 0);
        assert!(matches!(storage.last_index(), Err(StorageError::Failed(_))));
        assert!(matches!(
            storage.term(Index::new(1)),
            Err(StorageError::Failed(_))
        ));
        assert_eq!(storage.failed_reads(), 2);
        assert!(storage.append(&entries(1, 3, 3)).is_err());
        // Nothing became durable: a restart finds the empty log.
        let restarted = storage.after_crash(survivors(0, None));
        assert_eq!(restarted.last_index().unwrap(), Index::ZERO);
        assert!(!restarted.is_poisoned());
    }

    #[test]
    fn snapshot_images_are_durable_with_their_metadata() {
        let mut storage = SimStorage::default();
        storage.append(&entries(1, 1, 4)).unwrap();
        let metadata = SnapshotMetadata {
            last: LogId::new(Term::new(1), Index::new(3)),
            conf_state: ConfState::with_voters([NodeId::new(1)]),
        };
        let mut image = KvStore::new();
        image.apply(&crate::kv::Command {
            client: 1,
            request: 1,
            operation: crate::kv::Operation::Put { key: 0, value: 9 },
        });
        storage
            .create_snapshot_with_image(metadata.clone(), image.clone())
            .unwrap();
        storage.compact(Index::new(3)).unwrap();
        storage.sync().unwrap();
        let restarted = storage.after_crash(survivors(0, None));
        assert_eq!(restarted.snapshot_with_image(), (metadata, Some(image)));
        assert_eq!(restarted.first_index().unwrap(), Index::new(4));
    }
}
