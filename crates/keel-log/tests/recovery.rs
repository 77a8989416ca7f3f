//! Goal: each kind of damage and each disk failure named in the design has
//! the documented outcome — torn tails cut and reported; damaged complete
//! last records, gaps, duplicates and missing segments refused with the
//! file and offset named; ENOSPC and
//! EIO fatal for writes without a retry — and compaction frees whole
//! segments.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel::testing::entries;
use keel::{HardState, Index, NodeId, Storage, StorageWrite, Term};
use keel_log::fs::FileSystem;
use keel_log::memory_fs::{MemoryFileSystem, TornWrites};
use keel_log::{check, LogConfig, LogError, LogStore, WriteBatch};

const DIRECTORY: &str = "/log";

fn small_segments() -> LogConfig {
    LogConfig::default().with_segment_size_bytes(512)
}

fn open(file_system: &Arc<MemoryFileSystem>, config: LogConfig) -> Result<LogStore, LogError> {
    LogStore::open_with_file_system(file_system.clone(), DIRECTORY, config)
}

fn segment_paths(file_system: &MemoryFileSystem) -> Vec<PathBuf> {
    let mut names = file_system.list_directory(Path::new(DIRECTORY)).unwrap();
    names.sort();
    names
        .into_iter()
        .map(|name| Path::new(DIRECTORY).join(name))
        .collect()
}

/// (offset, length) of every record in a segment's bytes.
fn records(contents: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut offset = 0;
    while offset + 9 <= contents.len() {
        let length = 9 + u32::from_le_bytes(contents[offset..offset + 4].try_into().unwrap()) as usize;
        found.push((offset, length));
        offset += length;
    }
    found
}

#[test]
fn a_torn_tail_is_cut_reported_and_the_log_continues() {
    let mut tears = 0;
    for seed in 0..20 {
        let file_system = Arc::new(MemoryFileSystem::new(seed));
        let mut store = open(&file_system, LogConfig::default()).unwrap();
        store.append(&entries(1, 1, 5)).unwrap();
        let path = segment_paths(&file_system)[0].clone();
        let durable_length = file_system.file_contents(&path).unwrap().len();
        // A big batch whose fsync never happens: append lands, then the crash.
        file_system.set_torn_writes(if seed.is_multiple_of(2) {
            TornWrites::Sectors512
        } else {
            TornWrites::Pages4096
        });
        file_system.set_crash_at_operation(Some(file_system.operation_count() + 2));
        let big = keel::Entry::new(
            Term::new(1),
            Index::new(6),
            keel::EntryKind::Normal,
            bytes::Bytes::from(vec![7u8; 20_000]),
        );
        assert!(store.append(std::slice::from_ref(&big)).is_err());
        drop(store);
        file_system.crash();
        let crashed_length = file_system.file_contents(&path).unwrap().len();
        let report = check(file_system.as_ref(), Path::new(DIRECTORY)).unwrap();
        let mut store = open(&file_system, LogConfig::default()).unwrap();
        assert_eq!(store.last_index().unwrap(), Index::new(5));
        if crashed_length > durable_length {
            tears += 1;
            let torn_tail = store.recovered_torn_tail().unwrap();
            assert_eq!(torn_tail.offset(), durable_length as u64);
            assert_eq!(torn_tail.length_bytes(), (crashed_length - durable_length) as u64);
            assert_eq!(report.torn_tail(), Some(torn_tail));
        } else {
            assert!(store.recovered_torn_tail().is_none());
        }
        store.append(&entries(2, 6, 8)).unwrap();
        drop(store);
        file_system.crash();
        let store = open(&file_system, LogConfig::default()).unwrap();
        assert!(store.recovered_torn_tail().is_none());
        assert_eq!(
            store.entries(Index::new(1), Index::new(9), u64::MAX).unwrap()[5..],
            entries(2, 6, 8)[..]
        );
    }
    assert!(tears > 0, "no seed tore the write");
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let file_system = Arc::new(MemoryFileSystem::new(4));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 3)).unwrap();
    drop(store);
    let path = segment_paths(&file_system)[0].clone();
    let mut contents = file_system.file_contents(&path).unwrap();
    let intact_length = contents.len();
    // Half of a record header, then zeros: a size that reached the disk before its data.
    contents.extend_from_slice(&[40, 0, 0, 0, 9, 9]);
    contents.extend_from_slice(&[0; 700]);
    file_system.write_file_durably(&path, &contents);
    let store = open(&file_system, LogConfig::default()).unwrap();
    let torn_tail = store.recovered_torn_tail().unwrap();
    assert_eq!(torn_tail.offset(), intact_length as u64);
    assert_eq!(torn_tail.length_bytes(), 706);
    assert_eq!(file_system.file_contents(&path).unwrap().len(), intact_length);
    assert_eq!(store.last_index().unwrap(), Index::new(3));
}

/// A log of entries 1..=3 and one last entry of `data_bytes` bytes of 0x5A;
/// returns the file system, the segment and the last record's offset.
fn log_ending_in_a_big_entry(seed: u64, data_bytes: usize) -> (Arc<MemoryFileSystem>, PathBuf, usize) {
    let file_system = Arc::new(MemoryFileSystem::new(seed));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 3)).unwrap();
    let big = keel::Entry::new(
        Term::new(1),
        Index::new(4),
        keel::EntryKind::Normal,
        bytes::Bytes::from(vec![0x5A; data_bytes]),
    );
    store.append(std::slice::from_ref(&big)).unwrap();
    drop(store);
    let path = segment_paths(&file_system)[0].clone();
    let contents = file_system.file_contents(&path).unwrap();
    let (offset, length) = *records(&contents).last().unwrap();
    assert_eq!(offset + length, contents.len());
    (file_system, path, offset)
}

#[test]
fn a_complete_last_record_with_a_bad_checksum_is_refused_not_cut_off() {
    // Goal: a synced record that changed afterwards is never dropped as if
    // it were a torn write: its full length is there and no sector of it
    // is zeroed, which no crash leaves. (It was acknowledged: the append
    // returned.)
    let (file_system, path, offset) = log_ending_in_a_big_entry(15, 2000);
    let length = file_system.file_contents(&path).unwrap().len();
    assert!(file_system.flip_bit(&path, (offset + 700) as u64, 3));
    let error = open(&file_system, LogConfig::default()).unwrap_err();
    match &error {
        LogError::Corruption {
            path: named,
            offset: at,
            reason,
        } => {
            assert_eq!(named, &path);
            assert_eq!(*at, offset as u64);
            assert!(
                reason.contains("complete") && reason.contains("not a torn write"),
                "{reason}"
            );
        }
        other => panic!("the damaged last record was not refused: {other}"),
    }
    assert!(
        error.to_string().contains("Restoring a damaged member"),
        "{error}"
    );
    assert_eq!(
        file_system.file_contents(&path).unwrap().len(),
        length,
        "the refused open cut the file"
    );
    let checked = check(file_system.as_ref(), Path::new(DIRECTORY)).unwrap_err();
    assert!(matches!(checked, LogError::Corruption { .. }), "{checked}");
}

#[test]
fn a_flipped_length_bit_in_the_last_record_is_refused_not_cut_off() {
    // Goal: a length that grew by a flipped bit makes the last record look
    // cut short, but its checksum matches the bytes really there.
    let (file_system, path, offset) = log_ending_in_a_big_entry(16, 2000);
    assert!(file_system.flip_bit(&path, (offset + 2) as u64, 0));
    let error = open(&file_system, LogConfig::default()).unwrap_err();
    assert!(
        matches!(&error, LogError::Corruption { offset: at, reason, .. } if *at == offset as u64 && reason.contains("length")),
        "{error}"
    );
}

#[test]
fn a_complete_last_record_zero_filled_from_a_sector_edge_is_still_a_torn_tail() {
    // Goal: the file's size reached the disk but its last sectors did not
    // (they read as zeros): a torn write, cut off as before.
    let (file_system, path, offset) = log_ending_in_a_big_entry(17, 2000);
    let mut contents = file_system.file_contents(&path).unwrap();
    let length = contents.len();
    let sector_edge = (offset / 512 + 2) * 512;
    contents[sector_edge..].fill(0);
    file_system.write_file_durably(&path, &contents);
    let store = open(&file_system, LogConfig::default()).unwrap();
    let torn_tail = store.recovered_torn_tail().unwrap();
    assert_eq!(torn_tail.offset(), offset as u64);
    assert_eq!(torn_tail.length_bytes(), (length - offset) as u64);
    assert_eq!(store.last_index().unwrap(), Index::new(3));
    assert_eq!(file_system.file_contents(&path).unwrap().len(), offset);
}

#[test]
fn a_duplicated_entry_is_refused_with_its_offset() {
    let file_system = Arc::new(MemoryFileSystem::new(5));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 3)).unwrap();
    drop(store);
    let path = segment_paths(&file_system)[0].clone();
    let mut contents = file_system.file_contents(&path).unwrap();
    let (offset, length) = *records(&contents).last().unwrap();
    let duplicate = contents[offset..offset + length].to_vec();
    let duplicate_offset = contents.len();
    contents.extend_from_slice(&duplicate);
    file_system.write_file_durably(&path, &contents);
    match open(&file_system, LogConfig::default()) {
        Err(LogError::Corruption {
            path: named,
            offset,
            reason,
        }) => {
            assert_eq!(named, path);
            assert_eq!(offset, duplicate_offset as u64);
            assert!(reason.contains("duplicated"), "{reason}");
        }
        other => panic!("duplicate accepted: {other:?}"),
    }
}

#[test]
fn a_gap_inside_a_segment_is_refused() {
    let file_system = Arc::new(MemoryFileSystem::new(6));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 4)).unwrap();
    drop(store);
    let path = segment_paths(&file_system)[0].clone();
    let contents = file_system.file_contents(&path).unwrap();
    // Records: checkpoint, entries 1..=4. Cut out entry 2.
    let found = records(&contents);
    let (offset, length) = found[2];
    let mut damaged = contents[..offset].to_vec();
    damaged.extend_from_slice(&contents[offset + length..]);
    file_system.write_file_durably(&path, &damaged);
    let error = open(&file_system, LogConfig::default()).unwrap_err();
    assert!(
        matches!(&error, LogError::Corruption { offset: at, reason, .. } if *at == offset as u64 && reason.contains("gap")),
        "{error}"
    );
}

#[test]
fn a_missing_segment_is_refused_naming_it() {
    let file_system = Arc::new(MemoryFileSystem::new(7));
    let mut store = open(&file_system, small_segments()).unwrap();
    for index in 1..=40 {
        store.append(&entries(1, index, index)).unwrap();
    }
    drop(store);
    let paths = segment_paths(&file_system);
    assert!(paths.len() >= 4, "{} segments", paths.len());
    assert!(file_system.remove_file_durably(&paths[1]));
    match open(&file_system, small_segments()) {
        Err(LogError::Corruption { path, .. }) => assert_eq!(path, paths[1]),
        other => panic!("missing segment accepted: {other:?}"),
    }
    // (Losing only the newest segment cannot be told from a crash before its
    // name was durable; that is why creating a segment syncs the directory
    // before anything is written to it.)
}

#[test]
fn losing_the_first_segments_is_refused_unless_compacted() {
    let file_system = Arc::new(MemoryFileSystem::new(8));
    let mut store = open(&file_system, small_segments()).unwrap();
    for index in 1..=40 {
        store.append(&entries(1, index, index)).unwrap();
    }
    drop(store);
    let paths = segment_paths(&file_system);
    assert!(file_system.remove_file_durably(&paths[0]));
    match open(&file_system, small_segments()) {
        Err(LogError::Corruption { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("a log without its first segment opened: {other:?}"),
    }
}

#[test]
fn compaction_deletes_whole_segments_and_survives_a_reopen() {
    let file_system = Arc::new(MemoryFileSystem::new(9));
    let mut store = open(&file_system, small_segments()).unwrap();
    for index in 1..=60 {
        store.append(&entries(1, index, index)).unwrap();
    }
    let hard_state = HardState {
        term: Term::new(1),
        vote: Some(NodeId::new(1)),
        commit: Index::new(55),
    };
    store.set_hard_state(hard_state).unwrap();
    let before = store.segment_count();
    store.compact(Index::new(50)).unwrap();
    let after = store.segment_count();
    assert!(
        after < before,
        "compaction freed no segment ({before} -> {after})"
    );
    assert_eq!(segment_paths(&file_system).len(), after);
    drop(store);
    let store = open(&file_system, small_segments()).unwrap();
    assert_eq!(store.first_index().unwrap(), Index::new(51));
    assert_eq!(store.term(Index::new(50)).unwrap(), Term::new(1));
    assert_eq!(store.initial_state().unwrap().hard_state, hard_state);
    assert_eq!(
        store.entries(Index::new(51), Index::new(61), u64::MAX).unwrap(),
        entries(1, 51, 60)
    );
}

#[test]
fn no_space_is_fatal_for_writes_and_recovery_keeps_acknowledged_entries() {
    let file_system = Arc::new(MemoryFileSystem::new(10));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 3)).unwrap();
    file_system.set_no_space(true);
    let error = store
        .write(&WriteBatch::new().with_entries(&entries(1, 4, 6)))
        .unwrap_err();
    assert!(error.to_string().contains("No space left on device"), "{error}");
    file_system.set_no_space(false);
    let refused = store
        .write(&WriteBatch::new().with_entries(&entries(1, 4, 6)))
        .unwrap_err();
    assert!(matches!(refused, LogError::WritesRefused { .. }), "{refused}");
    assert!(store.write_failure().unwrap().contains("No space left on device"));
    // Reads still work from what was durable.
    assert_eq!(store.last_index().unwrap(), Index::new(3));
    drop(store);
    file_system.crash();
    let store = open(&file_system, LogConfig::default()).unwrap();
    assert_eq!(
        store.entries(Index::new(1), Index::new(4), u64::MAX).unwrap(),
        entries(1, 1, 3)
    );
}

#[test]
fn a_failed_fsync_is_never_retried() {
    let file_system = Arc::new(MemoryFileSystem::new(11));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(1, 1, 3)).unwrap();
    file_system.fail_next_sync();
    let error = store.append(&entries(1, 4, 4)).unwrap_err();
    assert!(error.to_string().contains("Input/output error"), "{error}");
    let operations = file_system.operation_count();
    let refused = store
        .write(&WriteBatch::new().with_entries(&entries(1, 4, 4)))
        .unwrap_err();
    assert!(matches!(refused, LogError::WritesRefused { .. }), "{refused}");
    assert!(refused.to_string().contains("fdatasync"), "{refused}");
    assert_eq!(
        file_system.operation_count(),
        operations,
        "the store touched the disk after a failed fsync"
    );
    drop(store);
    file_system.crash();
    let store = open(&file_system, LogConfig::default()).unwrap();
    assert_eq!(store.last_index().unwrap(), Index::new(3));
}

#[test]
fn rejected_writes_change_nothing_and_leave_the_store_usable() {
    let file_system = Arc::new(MemoryFileSystem::new(12));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    store.append(&entries(2, 1, 3)).unwrap();
    let operations = file_system.operation_count();
    let lower_term = store.append(&entries(1, 4, 5));
    assert!(lower_term.is_err());
    let gap = store
        .write(&WriteBatch::new().with_entries(&entries(2, 6, 7)))
        .unwrap_err();
    assert!(gap.is_rejection());
    assert_eq!(file_system.operation_count(), operations);
    store.append(&entries(2, 4, 5)).unwrap();
    assert_eq!(store.last_index().unwrap(), Index::new(5));
}

#[test]
fn reads_from_disk_match_reads_from_the_cache() {
    let file_system = Arc::new(MemoryFileSystem::new(13));
    let cached = LogConfig::default();
    let uncached = small_segments().with_entry_cache_size_bytes(0);
    let mut stores = [
        LogStore::open_with_file_system(file_system.clone(), "/cached", cached).unwrap(),
        LogStore::open_with_file_system(file_system.clone(), "/uncached", uncached).unwrap(),
    ];
    for store in &mut stores {
        store.append(&entries(1, 1, 30)).unwrap();
        store.append(&entries(2, 20, 40)).unwrap();
    }
    let one = entries(1, 1, 1)[0].size_bytes();
    for (low, high, max_bytes) in [
        (1, 41, u64::MAX),
        (5, 25, 0),
        (5, 25, 5 * one),
        (19, 41, 7 * one + 3),
    ] {
        let [cached, uncached] = &stores;
        let (low, high) = (Index::new(low), Index::new(high));
        assert_eq!(
            cached.entries(low, high, max_bytes).unwrap(),
            uncached.entries(low, high, max_bytes).unwrap()
        );
    }
}

#[test]
fn the_sync_time_is_reported_for_writes_that_reach_the_disk_only() {
    let file_system = Arc::new(MemoryFileSystem::new(14));
    let mut store = open(&file_system, LogConfig::default()).unwrap();
    assert_eq!(store.last_sync_duration(), None);
    // A rejected write (a gap) does not touch the disk.
    assert!(store.append(&entries(1, 5, 6)).is_err());
    assert_eq!(store.last_sync_duration(), None);
    let started = std::time::Instant::now();
    store.append(&entries(1, 1, 3)).unwrap();
    let whole_write = started.elapsed();
    let sync = store.last_sync_duration().expect("a sync was timed");
    assert!(
        sync <= whole_write,
        "sync {sync:?} longer than the write {whole_write:?}"
    );
}
