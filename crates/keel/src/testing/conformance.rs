//! The storage conformance suite: every
//! [`StorageWrite`] implementation — [`MemStorage`](crate::MemStorage),
//! `keel-log`'s disk store, the simulator's store — runs the same cases, so
//! they all mean the same thing by "first index", "compacted" and so on.
//!
//! ```
//! keel::testing::run_storage_conformance(keel::MemStorage::new);
//! ```

use bytes::Bytes;

use crate::error::StorageError;
use crate::storage::StorageWrite;
use crate::types::{ConfState, Entry, EntryKind, HardState, Index, LogId, NodeId, SnapshotMetadata, Term};

/// An entry with a small payload derived from its index.
pub fn entry(term: u64, index: u64) -> Entry {
    Entry::new(
        Term::new(term),
        Index::new(index),
        EntryKind::Normal,
        Bytes::from(format!("entry {index} of term {term}")),
    )
}

/// Entries `first..=last`, all of term `term`.
pub fn entries(term: u64, first: u64, last: u64) -> Vec<Entry> {
    (first..=last).map(|index| entry(term, index)).collect()
}

/// A named conformance case.
type Case<S> = (&'static str, fn(&mut S));

/// Runs every conformance case, each on a fresh store from `new_storage`.
///
/// # Panics
/// On the first case the store fails, with the case's name.
pub fn run_storage_conformance<S: StorageWrite>(mut new_storage: impl FnMut() -> S) {
    let cases: [Case<S>; 12] = [
        ("empty store", case_empty),
        ("append and read back", case_append_and_read),
        ("entries byte limit", case_entries_byte_limit),
        ("conflicting suffix is replaced", case_truncate_suffix),
        ("append with a gap fails and changes nothing", case_append_gap),
        ("compact discards the prefix", case_compact),
        ("apply snapshot replaces the log", case_apply_snapshot),
        ("append after snapshot", case_append_after_snapshot),
        ("hard and conf state round trip", case_state_round_trip),
        ("create snapshot keeps entries", case_create_snapshot),
        ("owned append behaves as append", case_append_owned),
        ("entries_into appends what entries returns", case_entries_into),
    ];
    for (name, case) in cases {
        let mut storage = new_storage();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut storage)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            panic!("storage conformance case '{name}' failed: {message}");
        }
    }
}

fn case_empty<S: StorageWrite>(storage: &mut S) {
    assert_eq!(storage.first_index().unwrap(), Index::new(1));
    assert_eq!(storage.last_index().unwrap(), Index::ZERO);
    assert_eq!(storage.term(Index::ZERO).unwrap(), Term::ZERO);
    assert!(matches!(
        storage.term(Index::new(1)),
        Err(StorageError::Unavailable(_))
    ));
    assert!(storage
        .entries(Index::new(1), Index::new(1), u64::MAX)
        .unwrap()
        .is_empty());
    assert!(storage.initial_state().unwrap().hard_state.is_empty());
}

fn case_append_and_read<S: StorageWrite>(storage: &mut S) {
    let written = entries(1, 1, 10);
    storage.append(&written).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(1));
    assert_eq!(storage.last_index().unwrap(), Index::new(10));
    assert_eq!(
        storage.entries(Index::new(1), Index::new(11), u64::MAX).unwrap(),
        written
    );
    assert_eq!(
        storage.entries(Index::new(4), Index::new(7), u64::MAX).unwrap(),
        written[3..6]
    );
    assert_eq!(storage.term(Index::new(10)).unwrap(), Term::new(1));
    assert!(matches!(
        storage.entries(Index::new(5), Index::new(12), u64::MAX),
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(
        storage.term(Index::new(11)),
        Err(StorageError::Unavailable(_))
    ));
}

fn case_entries_byte_limit<S: StorageWrite>(storage: &mut S) {
    let written = entries(1, 1, 10);
    storage.append(&written).unwrap();
    let one = written[0].size_bytes();
    // A limit below one entry still yields one entry, so progress is possible.
    assert_eq!(
        storage.entries(Index::new(1), Index::new(11), 0).unwrap().len(),
        1
    );
    let three = written[..3].iter().map(Entry::size_bytes).sum::<u64>();
    assert_eq!(
        storage
            .entries(Index::new(1), Index::new(11), three)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        storage
            .entries(Index::new(1), Index::new(11), three + one - 1)
            .unwrap()
            .len(),
        3
    );
}

fn case_truncate_suffix<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 10)).unwrap();
    storage.append(&entries(2, 6, 8)).unwrap();
    assert_eq!(storage.last_index().unwrap(), Index::new(8));
    assert_eq!(storage.term(Index::new(5)).unwrap(), Term::new(1));
    assert_eq!(storage.term(Index::new(6)).unwrap(), Term::new(2));
    let all = storage.entries(Index::new(1), Index::new(9), u64::MAX).unwrap();
    let mut expected = entries(1, 1, 5);
    expected.extend(entries(2, 6, 8));
    assert_eq!(all, expected);
}

fn case_append_gap<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 3)).unwrap();
    assert!(storage.append(&entries(1, 5, 6)).is_err());
    assert_eq!(storage.last_index().unwrap(), Index::new(3));
    assert_eq!(
        storage.entries(Index::new(1), Index::new(4), u64::MAX).unwrap(),
        entries(1, 1, 3)
    );
}

fn case_compact<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 5)).unwrap();
    storage.append(&entries(2, 6, 10)).unwrap();
    storage.compact(Index::new(6)).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(7));
    assert_eq!(storage.last_index().unwrap(), Index::new(10));
    assert_eq!(storage.term(Index::new(6)).unwrap(), Term::new(2));
    assert!(matches!(
        storage.term(Index::new(5)),
        Err(StorageError::Compacted(_))
    ));
    assert!(matches!(
        storage.entries(Index::new(6), Index::new(8), u64::MAX),
        Err(StorageError::Compacted(_))
    ));
    assert_eq!(
        storage.entries(Index::new(7), Index::new(11), u64::MAX).unwrap(),
        entries(2, 7, 10)
    );
    // Compacting again below the head is a no-op; past the end is an error.
    storage.compact(Index::new(3)).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(7));
    assert!(storage.compact(Index::new(11)).is_err());
    assert_eq!(storage.last_index().unwrap(), Index::new(10));
}

fn snapshot_metadata(term: u64, index: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        last: LogId::new(Term::new(term), Index::new(index)),
        conf_state: ConfState::with_voters([1, 2, 3].map(NodeId::new)),
    }
}

fn case_apply_snapshot<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 5)).unwrap();
    let metadata = snapshot_metadata(3, 20);
    storage.apply_snapshot(metadata.clone()).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(21));
    assert_eq!(storage.last_index().unwrap(), Index::new(20));
    assert_eq!(storage.term(Index::new(20)).unwrap(), Term::new(3));
    assert!(matches!(
        storage.term(Index::new(5)),
        Err(StorageError::Compacted(_))
    ));
    assert_eq!(
        storage.snapshot(Index::new(21), NodeId::new(2)).unwrap(),
        metadata
    );
    assert_eq!(storage.initial_state().unwrap().conf_state, metadata.conf_state);
    // An older snapshot is refused and changes nothing.
    assert!(storage.apply_snapshot(snapshot_metadata(2, 10)).is_err());
    assert_eq!(storage.first_index().unwrap(), Index::new(21));
}

fn case_append_after_snapshot<S: StorageWrite>(storage: &mut S) {
    storage.apply_snapshot(snapshot_metadata(3, 20)).unwrap();
    // Entries the snapshot covers are skipped, the rest appended.
    storage.append(&entries(3, 18, 25)).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(21));
    assert_eq!(storage.last_index().unwrap(), Index::new(25));
    assert_eq!(
        storage.entries(Index::new(21), Index::new(26), u64::MAX).unwrap(),
        entries(3, 21, 25)
    );
}

fn case_append_owned<S: StorageWrite>(storage: &mut S) {
    storage.append_owned(entries(1, 1, 10)).unwrap();
    // A conflicting suffix is replaced; a gap fails and changes nothing.
    storage.append_owned(entries(2, 6, 8)).unwrap();
    assert!(storage.append_owned(entries(2, 10, 11)).is_err());
    let mut expected = entries(1, 1, 5);
    expected.extend(entries(2, 6, 8));
    assert_eq!(
        storage.entries(Index::new(1), Index::new(9), u64::MAX).unwrap(),
        expected
    );
    // Entries a snapshot covers are skipped.
    storage.apply_snapshot(snapshot_metadata(3, 20)).unwrap();
    storage.append_owned(entries(3, 18, 25)).unwrap();
    assert_eq!(storage.first_index().unwrap(), Index::new(21));
    assert_eq!(
        storage.entries(Index::new(21), Index::new(26), u64::MAX).unwrap(),
        entries(3, 21, 25)
    );
    storage.append_owned(Vec::new()).unwrap();
    assert_eq!(storage.last_index().unwrap(), Index::new(25));
}

fn case_entries_into<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 10)).unwrap();
    let one = entry(1, 1).size_bytes();
    for (low, high, max_bytes) in [(1, 11, u64::MAX), (3, 7, u64::MAX), (2, 9, 3 * one), (4, 5, 0)] {
        let (low, high) = (Index::new(low), Index::new(high));
        let mut out = vec![entry(9, 99)];
        storage.entries_into(low, high, max_bytes, &mut out).unwrap();
        let mut expected = vec![entry(9, 99)];
        expected.extend(storage.entries(low, high, max_bytes).unwrap());
        assert_eq!(out, expected, "[{low}, {high}) within {max_bytes} bytes");
    }
    // An error leaves the buffer as it was.
    storage.compact(Index::new(3)).unwrap();
    let mut out = vec![entry(9, 99)];
    assert!(storage
        .entries_into(Index::new(2), Index::new(5), u64::MAX, &mut out)
        .is_err());
    assert!(storage
        .entries_into(Index::new(5), Index::new(12), u64::MAX, &mut out)
        .is_err());
    assert_eq!(out, vec![entry(9, 99)]);
}

fn case_state_round_trip<S: StorageWrite>(storage: &mut S) {
    let hard_state = HardState {
        term: Term::new(7),
        vote: Some(NodeId::new(2)),
        commit: Index::new(0),
    };
    storage.set_hard_state(hard_state).unwrap();
    let conf_state = ConfState::with_voters([4, 5, 6].map(NodeId::new));
    storage.set_conf_state(conf_state.clone()).unwrap();
    let initial = storage.initial_state().unwrap();
    assert_eq!(initial.hard_state, hard_state);
    assert_eq!(initial.conf_state, conf_state);
}

fn case_create_snapshot<S: StorageWrite>(storage: &mut S) {
    storage.append(&entries(1, 1, 10)).unwrap();
    let metadata = snapshot_metadata(1, 8);
    storage.create_snapshot(metadata.clone()).unwrap();
    assert_eq!(storage.snapshot(Index::new(1), NodeId::new(2)).unwrap(), metadata);
    assert_eq!(storage.first_index().unwrap(), Index::new(1));
    assert!(storage.create_snapshot(snapshot_metadata(1, 11)).is_err());
    assert!(storage.create_snapshot(snapshot_metadata(1, 5)).is_err());
}
