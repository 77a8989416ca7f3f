//! Goal: a snapshot file is all or nothing across crashes at every write and
//! sync boundary, streams back intact in chunks, damage is reported rather
//! than returned as data, and older snapshots go once a newer one is durable.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use keel::{ConfState, Index, LogId, NodeId, SnapshotMetadata, Term};
use keel_log::fs::FileSystem;
use keel_log::memory_fs::{MemoryFileSystem, TornWrites};
use keel_log::{LogError, SnapshotStore};

const DIRECTORY: &str = "/snapshots";

fn metadata(index: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        last: LogId::new(Term::new(2), Index::new(index)),
        conf_state: ConfState::with_voters([1, 2, 3].map(NodeId::new)),
    }
}

fn data(length: usize, salt: u8) -> Vec<u8> {
    (0..length)
        .map(|position| (position % 251) as u8 ^ salt)
        .collect()
}

fn read_all(store: &SnapshotStore) -> (SnapshotMetadata, Vec<u8>) {
    let mut reader = store.read_latest().unwrap().unwrap();
    let mut contents = Vec::new();
    // Small chunks, as a runtime streaming to a follower would read.
    let mut chunk = [0u8; 4096];
    loop {
        let count = reader.read(&mut chunk).unwrap();
        if count == 0 {
            break;
        }
        contents.extend_from_slice(&chunk[..count]);
    }
    assert_eq!(contents.len() as u64, reader.data_length_bytes());
    (reader.metadata().clone(), contents)
}

#[test]
fn a_snapshot_streams_back_and_replaces_the_older_one() {
    let file_system = Arc::new(MemoryFileSystem::new(1));
    let mut store = SnapshotStore::open_with_file_system(file_system.clone(), DIRECTORY).unwrap();
    assert!(store.read_latest().unwrap().is_none());
    let first = data(3 << 20, 1);
    store.write(metadata(10), &mut &first[..]).unwrap();
    assert_eq!(read_all(&store), (metadata(10), first));
    let second = data(100_000, 2);
    store.write(metadata(20), &mut &second[..]).unwrap();
    assert_eq!(read_all(&store), (metadata(20), second.clone()));
    assert_eq!(file_system.list_directory(Path::new(DIRECTORY)).unwrap().len(), 1);
    assert!(matches!(
        store.write(metadata(15), &mut &second[..]),
        Err(LogError::Compacted(_))
    ));
    let reopened = SnapshotStore::open_with_file_system(file_system, DIRECTORY).unwrap();
    assert_eq!(read_all(&reopened), (metadata(20), second));
}

#[test]
fn a_crash_at_any_boundary_leaves_the_old_or_the_new_snapshot() {
    let old = data(20_000, 3);
    let new = data(9_000, 4);
    let mut crash_points = 0;
    let mut saw_old = false;
    let mut saw_new = false;
    for crash_point in 1.. {
        let file_system = Arc::new(MemoryFileSystem::new(crash_point));
        file_system.set_torn_writes(if crash_point.is_multiple_of(2) {
            TornWrites::Sectors512
        } else {
            TornWrites::Pages4096
        });
        let mut store = SnapshotStore::open_with_file_system(file_system.clone(), DIRECTORY).unwrap();
        store.write(metadata(10), &mut &old[..]).unwrap();
        file_system.set_crash_at_operation(Some(file_system.operation_count() + crash_point));
        let outcome = store.write(metadata(20), &mut &new[..]);
        if !file_system.is_down() {
            outcome.unwrap();
            break;
        }
        drop(store);
        file_system.crash();
        crash_points += 1;
        let store = SnapshotStore::open_with_file_system(file_system.clone(), DIRECTORY).unwrap();
        let found = read_all(&store);
        if found == (metadata(10), old.clone()) {
            saw_old = true;
        } else if found == (metadata(20), new.clone()) {
            saw_new = true;
        } else {
            panic!("crash point {crash_point}: a snapshot that is neither the old nor the new one");
        }
        // Leftover temporary files and the older snapshot are gone after open.
        assert_eq!(file_system.list_directory(Path::new(DIRECTORY)).unwrap().len(), 1);
    }
    println!("snapshot crash points tried: {crash_points}");
    assert!(crash_points >= 5 && saw_old && saw_new);
}

#[test]
fn damaged_snapshot_data_fails_the_read() {
    let file_system = Arc::new(MemoryFileSystem::new(5));
    let mut store = SnapshotStore::open_with_file_system(file_system.clone(), DIRECTORY).unwrap();
    store.write(metadata(10), &mut &data(50_000, 5)[..]).unwrap();
    let path = store.latest().unwrap().path().to_path_buf();
    assert!(file_system.flip_bit(&path, 30_000, 3));
    let mut reader = store.read_latest().unwrap().unwrap();
    let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    // Damage to the header is found when the store opens.
    assert!(file_system.flip_bit(&path, 5, 0));
    match SnapshotStore::open_with_file_system(file_system, DIRECTORY) {
        Err(LogError::Corruption { path: named, .. }) => assert_eq!(named, path),
        other => panic!("damaged header accepted: {other:?}"),
    }
}
