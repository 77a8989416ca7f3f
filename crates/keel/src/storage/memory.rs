//! An in-memory [`Storage`]: for tests, the simulator and examples.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::StorageError;
use crate::storage::{InitialState, Storage, StorageWrite};
use crate::types::{ConfState, Entry, HardState, Index, LogId, NodeId, SnapshotMetadata, Term};

/// An in-memory log store. Clones share the same log, so a test or runtime
/// can keep one clone to write while the [`RawNode`](crate::RawNode) reads
/// through another.
///
/// ```
/// use keel::{ConfState, MemStorage, NodeId, Storage};
/// let storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
/// assert_eq!(storage.last_index().unwrap().get(), 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

#[derive(Debug, Default)]
struct MemStorageCore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot the application took or installed.
    snapshot: SnapshotMetadata,
    /// The last discarded entry, whose term stays known (the log's head).
    /// Invariant: `entries[i].index == compacted.index + 1 + i`.
    compacted: LogId,
    entries: Vec<Entry>,
}

impl MemStorageCore {
    fn first_index(&self) -> Index {
        self.compacted.index.next()
    }

    fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.compacted.index, |entry| entry.index)
    }

    fn position(&self, index: Index) -> usize {
        debug_assert!(index > self.compacted.index);
        (index.distance_from(self.compacted.index) - 1) as usize
    }

    /// Checks an append of `entries` (contiguous, no gap after the log)
    /// and removes the conflicting suffix it replaces. Returns how many of
    /// `entries` to skip (those the snapshot covers), or `None` if there is
    /// nothing to append. On an error nothing has changed.
    fn checked_append_start(&mut self, entries: &[Entry]) -> Result<Option<usize>, StorageError> {
        let Some(first) = entries.first() else {
            return Ok(None);
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
        // Skip what the snapshot already covers.
        let skip = self.first_index().distance_from(first.index) as usize;
        let Some(new_first) = entries.get(skip) else {
            return Ok(None);
        };
        let keep = self.position(new_first.index);
        self.entries.truncate(keep);
        Ok(Some(skip))
    }
}

impl MemStorage {
    /// An empty store with no members: a node that waits to be added.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// An empty store whose initial membership is `conf_state`: how the
    /// founding members of a new cluster start.
    pub fn new_with_conf_state(conf_state: ConfState) -> Self {
        let storage = MemStorage::new();
        storage.write().conf_state = conf_state;
        storage
    }

    fn read(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        // A panic while the lock was held already failed a test; keep going
        // with the data as it is rather than cascading panics.
        self.core.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state
    }

    /// A copy of every stored entry.
    pub fn all_entries(&self) -> Vec<Entry> {
        self.read().entries.clone()
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let core = self.read();
        Ok(InitialState {
            hard_state: core.hard_state,
            conf_state: core.conf_state.clone(),
        })
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        self.entries_into(low, high, max_bytes, &mut out)?;
        Ok(out)
    }

    fn entries_into(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        let core = self.read();
        if low <= core.compacted.index {
            return Err(StorageError::Compacted(low));
        }
        if high > core.last_index().next() {
            return Err(StorageError::Unavailable(high));
        }
        if low >= high {
            return Ok(());
        }
        let slice = &core.entries[core.position(low)..core.position(high)];
        out.extend_from_slice(&slice[..Entry::count_within_bytes(slice, max_bytes)]);
        Ok(())
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let core = self.read();
        if index < core.compacted.index {
            return Err(StorageError::Compacted(index));
        }
        if index == core.compacted.index {
            return Ok(core.compacted.term);
        }
        if index > core.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        Ok(core.entries[core.position(index)].term)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, _request_index: Index, _to: NodeId) -> Result<SnapshotMetadata, StorageError> {
        Ok(self.read().snapshot.clone())
    }
}

impl StorageWrite for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut core = self.write();
        let Some(skip) = core.checked_append_start(entries)? else {
            return Ok(());
        };
        core.entries.extend_from_slice(&entries[skip..]);
        Ok(())
    }

    fn append_owned(&mut self, mut entries: Vec<Entry>) -> Result<(), StorageError> {
        let mut core = self.write();
        let Some(skip) = core.checked_append_start(&entries)? else {
            return Ok(());
        };
        if skip > 0 {
            entries.drain(..skip);
        }
        core.entries.append(&mut entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.write().hard_state = hard_state;
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageError> {
        self.write().conf_state = conf_state;
        Ok(())
    }

    fn apply_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        let mut core = self.write();
        if metadata.last.index < core.snapshot.last.index {
            return Err(StorageError::Compacted(metadata.last.index));
        }
        core.entries.clear();
        core.compacted = metadata.last;
        core.conf_state = metadata.conf_state.clone();
        core.snapshot = metadata;
        Ok(())
    }

    fn create_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        let mut core = self.write();
        if metadata.last.index < core.snapshot.last.index {
            return Err(StorageError::Compacted(metadata.last.index));
        }
        if metadata.last.index > core.last_index() {
            return Err(StorageError::Unavailable(metadata.last.index));
        }
        core.snapshot = metadata;
        Ok(())
    }

    fn compact(&mut self, through: Index) -> Result<(), StorageError> {
        let mut core = self.write();
        if through <= core.compacted.index {
            return Ok(());
        }
        if through > core.last_index() {
            return Err(StorageError::Unavailable(through));
        }
        let position = core.position(through);
        core.compacted = core.entries[position].log_id();
        core.entries.drain(..=position);
        Ok(())
    }
}
