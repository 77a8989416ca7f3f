//! The log as the application stores it: the [`Storage`] trait the core reads
//! through, the [`StorageWrite`] trait a runtime writes through, and
//! [`MemStorage`], an in-memory implementation.
//!
//! The core only *reads* storage. Everything it wants written comes out of
//! [`Ready`](crate::Ready); the runtime writes it (through `StorageWrite` or
//! its own means) and then tells the core.

mod memory;

pub use memory::MemStorage;

use crate::error::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, NodeId, SnapshotMetadata, Term};

/// What a node recovers from storage when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The membership as of the last applied configuration change or snapshot.
    pub conf_state: ConfState,
}

/// Read access to the stable log. The core calls it from its own thread; an
/// implementation shared with a writer thread synchronises internally.
///
/// The log it describes is `(snapshot) first_index ..= last_index`: the entry
/// at `first_index - 1` is the last one covered by the snapshot (its term is
/// still known), and `last_index < first_index` means no entries.
///
/// Errors: [`StorageError::Compacted`] and [`StorageError::Unavailable`] for
/// indexes outside the log (the core handles them), the temporary variants
/// for "ask again later", and [`StorageError::Failed`] for anything else,
/// which stops the node.
pub trait Storage {
    /// The hard state and membership to start from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries in `[low, high)`. Returns at least one entry when the range is
    /// not empty, then as many more as fit in `max_bytes` (counted with
    /// [`Entry::size_bytes`]).
    ///
    /// # Errors
    /// `Compacted` if `low < first_index`; `Unavailable` if
    /// `high > last_index + 1`.
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// [`Storage::entries`], appended to `out` instead of returned: the
    /// core reuses `out` from one `Ready` to the next, so a store that
    /// holds its entries in memory need not allocate. The default calls
    /// `entries`. On an error `out` is left as it was.
    ///
    /// ```
    /// use keel::{ConfState, Index, MemStorage, NodeId, Storage};
    /// let storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
    /// let mut out = Vec::new();
    /// // Index 1 holds the founding membership's snapshot: no entries yet.
    /// assert!(storage.entries_into(Index::new(1), Index::new(2), u64::MAX, &mut out).is_err());
    /// assert!(out.is_empty());
    /// ```
    fn entries_into(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        out.extend(self.entries(low, high, max_bytes)?);
        Ok(())
    }

    /// The term of the entry at `index`, for `first_index - 1 <= index <=
    /// last_index`.
    ///
    /// # Errors
    /// `Compacted` below that range, `Unavailable` above it.
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// The index of the first entry still in the log (the snapshot's index
    /// plus one).
    fn first_index(&self) -> Result<Index, StorageError>;

    /// The index of the last entry (the snapshot's index if there are none).
    fn last_index(&self) -> Result<Index, StorageError>;

    /// The metadata of the latest snapshot, to send to `to`, which needs
    /// entries from `request_index` on. The data itself is streamed by the
    /// runtime, not carried through the core.
    ///
    /// # Errors
    /// `SnapshotTemporarilyUnavailable` while a snapshot is being built; the
    /// core retries later.
    fn snapshot(&self, request_index: Index, to: NodeId) -> Result<SnapshotMetadata, StorageError>;
}

/// Write access to a log store: what a runtime does with a
/// [`Ready`](crate::Ready). Each call is durable when it returns `Ok`.
///
/// The storage conformance suite (`keel::testing`, feature
/// `test-support`) checks that an implementation behaves like [`MemStorage`].
pub trait StorageWrite: Storage {
    /// Appends `entries`, which must be contiguous. Existing entries at and
    /// after `entries[0].index` are removed first (a conflicting suffix);
    /// entries at or below the snapshot index are skipped. An append that
    /// would leave a gap after `last_index` fails and changes nothing.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// [`StorageWrite::append`], taking the entries: a store that keeps
    /// entries in memory moves them in instead of cloning each one. The
    /// default borrows them for `append`. Pair it with
    /// [`Ready::take_entries`](crate::Ready::take_entries).
    ///
    /// ```
    /// use keel::{ConfState, Entry, EntryKind, Index, MemStorage, NodeId, Storage, StorageWrite, Term};
    ///
    /// let mut storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
    /// let next = storage.last_index()?.next();
    /// let entry = Entry::new(Term::new(1), next, EntryKind::Normal, "x".into());
    /// storage.append_owned(vec![entry])?;
    /// assert_eq!(storage.last_index()?, next);
    /// # Ok::<(), keel::StorageError>(())
    /// ```
    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.append(&entries)
    }

    /// Replaces the hard state.
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Replaces the membership reported by
    /// [`Storage::initial_state`] (after applying a configuration change).
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageError>;

    /// Replaces the whole log with a snapshot: afterwards `first_index` is
    /// `metadata.last.index + 1`, there are no entries, and the membership is
    /// the snapshot's. A snapshot older than the current one fails with
    /// `Compacted` and changes nothing.
    fn apply_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError>;

    /// Records that the application took a snapshot at `metadata.last` (an
    /// applied index), so [`Storage::snapshot`] returns it. Entries are kept:
    /// call [`StorageWrite::compact`] to discard them (keeping some lets a
    /// slightly slow follower catch up without a snapshot). `metadata.last`
    /// must be an entry of the log; an older snapshot than the current one
    /// fails with `Compacted`.
    fn create_snapshot(&mut self, metadata: SnapshotMetadata) -> Result<(), StorageError>;

    /// Discards entries up to and including `through`; the term of `through`
    /// stays known. Compacting past `last_index` fails.
    fn compact(&mut self, through: Index) -> Result<(), StorageError>;
}
