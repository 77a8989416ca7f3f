//! Goal: keel-log means the same as `MemStorage` by every `Storage` and
//! `StorageWrite` call — on a real disk, on the in-memory file system, with
//! tiny segments and no cache (every read from disk), and across a reopen
//! after every single write.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use keel::{
    ConfState, Entry, HardState, Index, InitialState, NodeId, SnapshotMetadata, Storage, StorageError,
    StorageWrite, Term,
};
use keel_log::memory_fs::MemoryFileSystem;
use keel_log::{LogConfig, LogStore};

fn tiny_config() -> LogConfig {
    LogConfig::default()
        .with_segment_size_bytes(LogConfig::SEGMENT_SIZE_BYTES_MIN)
        .with_entry_cache_size_bytes(0)
}

#[test]
fn conformance_on_a_real_disk() {
    let root = tempfile::tempdir().unwrap();
    let mut count = 0;
    keel::testing::run_storage_conformance(|| {
        count += 1;
        LogStore::open(root.path().join(format!("default-{count}")), LogConfig::default()).unwrap()
    });
    keel::testing::run_storage_conformance(|| {
        count += 1;
        LogStore::open(root.path().join(format!("tiny-{count}")), tiny_config()).unwrap()
    });
}

#[test]
fn conformance_on_the_memory_file_system() {
    let file_system = Arc::new(MemoryFileSystem::new(1));
    let mut count = 0;
    for config in [LogConfig::default(), tiny_config()] {
        keel::testing::run_storage_conformance(|| {
            count += 1;
            LogStore::open_with_file_system(file_system.clone(), format!("/log-{count}"), config.clone())
                .unwrap()
        });
    }
}

/// A store that is closed and reopened after every write, so each
/// conformance check reads what recovery rebuilt.
struct ReopeningStore {
    file_system: Arc<MemoryFileSystem>,
    directory: String,
    store: Option<LogStore>,
}

impl ReopeningStore {
    fn store(&self) -> &LogStore {
        self.store.as_ref().unwrap()
    }

    fn write<T>(
        &mut self,
        operation: impl FnOnce(&mut LogStore) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let outcome = operation(self.store.as_mut().unwrap());
        // Simulate a power loss too: what was acknowledged must be durable.
        self.store = None;
        self.file_system.crash();
        self.store = Some(
            LogStore::open_with_file_system(
                self.file_system.clone(),
                Path::new(&self.directory),
                tiny_config(),
            )
            .unwrap(),
        );
        outcome
    }
}

impl Storage for ReopeningStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.store().initial_state()
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.store().entries(low, high, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.store().term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.store().first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.store().last_index()
    }
    fn snapshot(&self, request_index: Index, to: NodeId) -> Result<SnapshotMetadata, StorageError> {
        self.store().snapshot(request_index, to)
    }
}

impl StorageWrite for ReopeningStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.write(|store| store.append(entries))
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.write(|store| store.set_hard_state(hard_state))
    }
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageError> {
        self.write(|store| store.set_conf_state(conf_state))
    }
    fn apply_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.write(|store| store.apply_snapshot(metadata))
    }
    fn create_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError> {
        self.write(|store| store.create_snapshot(metadata))
    }
    fn compact(&mut self, through: Index) -> Result<(), StorageError> {
        self.write(|store| store.compact(through))
    }
}

#[test]
fn conformance_across_a_crash_after_every_write() {
    let file_system = Arc::new(MemoryFileSystem::new(2));
    let mut count = 0;
    keel::testing::run_storage_conformance(|| {
        count += 1;
        let directory = format!("/log-{count}");
        let store = LogStore::open_with_file_system(file_system.clone(), &directory, tiny_config()).unwrap();
        ReopeningStore {
            file_system: file_system.clone(),
            directory,
            store: Some(store),
        }
    });
}
