//! The log as the protocol sees it: the stable entries in [`Storage`] with
//! the unstable tail on top, and the commit and apply positions.

mod unstable;

use unstable::Unstable;

use crate::error::StorageError;
use crate::storage::Storage;
use crate::types::{Entry, Index, LogId, SnapshotMetadata, Term};

/// The log: stable entries plus the unstable tail.
///
/// Invariants: `applied <= applying <= committed <= last_index()`;
/// `first_index() - 1 <= applied` once a snapshot is installed.
pub(crate) struct RaftLog<S> {
    storage: S,
    unstable: Unstable,
    /// The highest index known to be committed.
    committed: Index,
    /// The highest index handed out for applying.
    applying: Index,
    /// The highest index the application reported applied.
    applied: Index,
    /// The planted bug `ApplyBeforeCommit` (simulator drill only).
    apply_before_commit: bool,
}

/// The entries of a `[low, high)` range could not be read.
pub(crate) enum ReadEntriesError {
    /// Some of them are compacted away: a snapshot is needed.
    Compacted,
    /// Storage asked to come back later.
    Temporary,
    /// Storage failed; fatal.
    Fatal(StorageError),
}

impl From<StorageError> for ReadEntriesError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Compacted(_) => ReadEntriesError::Compacted,
            error if error.is_temporary() => ReadEntriesError::Temporary,
            error => ReadEntriesError::Fatal(error),
        }
    }
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: Index, applied: Index) -> Result<Self, StorageError> {
        let first_index = storage.first_index()?;
        let last_index = storage.last_index()?;
        // A commit index beyond the log means acknowledged entries are
        // gone: refuse to start rather than silently forget them.
        if committed > last_index {
            return Err(StorageError::CommitBeyondLog {
                commit: committed,
                last_index,
            });
        }
        // A snapshot counts as committed and applied.
        let committed = committed.max(first_index.prev());
        let applied = applied.max(first_index.prev()).min(committed);
        let mut unstable = Unstable::new(last_index);
        // Only a cache: if storage cannot say now, it is asked later.
        unstable.set_stable_tail_term(storage.term(last_index).ok());
        Ok(RaftLog {
            storage,
            unstable,
            committed,
            applying: applied,
            applied,
            apply_before_commit: false,
        })
    }

    pub(crate) fn set_apply_before_commit(&mut self, enabled: bool) {
        self.apply_before_commit = enabled;
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub(crate) fn committed(&self) -> Index {
        self.committed
    }

    pub(crate) fn applied(&self) -> Index {
        self.applied
    }

    pub(crate) fn first_index(&self) -> Result<Index, StorageError> {
        match self.unstable.first_index() {
            Some(index) => Ok(index),
            None => self.storage.first_index(),
        }
    }

    /// The index of the last entry. Never reads storage: the unstable tail
    /// starts right after the stable log (`offset - 1` is the stable log's
    /// last entry whenever the tail is empty), so this cannot fail and a
    /// storage error can never be mistaken for an empty log.
    pub(crate) fn last_index(&self) -> Index {
        self.unstable
            .last_index()
            .unwrap_or_else(|| self.unstable.offset().prev())
    }

    /// The term at `index`: `Compacted` / `Unavailable` outside the log.
    pub(crate) fn term(&self, index: Index) -> Result<Term, StorageError> {
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        if index >= self.unstable.offset() {
            return Err(StorageError::Unavailable(index));
        }
        if self.unstable.snapshot().is_some() {
            // Everything below a pending snapshot is gone.
            return Err(StorageError::Compacted(index));
        }
        self.storage.term(index)
    }

    /// The term at `index`, or `None` if the log does not hold it.
    pub(crate) fn term_if_known(&self, index: Index) -> Result<Option<Term>, StorageError> {
        match self.term(index) {
            Ok(term) => Ok(Some(term)),
            Err(StorageError::Compacted(_) | StorageError::Unavailable(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(crate) fn last_log_id(&self) -> Result<LogId, StorageError> {
        let index = self.last_index();
        Ok(LogId::new(self.term(index)?, index))
    }

    pub(crate) fn matches(&self, log_id: LogId) -> Result<bool, StorageError> {
        Ok(self.term_if_known(log_id.index)? == Some(log_id.term))
    }

    /// Whether a candidate whose last entry is `candidate` has a log at
    /// least as up to date as this one (§5.4.1).
    pub(crate) fn is_up_to_date(&self, candidate: LogId) -> Result<bool, StorageError> {
        Ok(candidate >= self.last_log_id()?)
    }

    /// The index durable in local storage that matches the current log: the
    /// leader counts it as its own acknowledgement. `None` while a snapshot
    /// is being persisted.
    pub(crate) fn persisted_index(&self) -> Option<Index> {
        match self.unstable.snapshot() {
            Some(_) => None,
            None => Some(self.unstable.offset().prev()),
        }
    }

    /// The first index in `entries` whose term differs from this log's, or
    /// that this log lacks; `None` if all match.
    fn find_conflict(&self, entries: &[Entry]) -> Result<Option<Index>, StorageError> {
        for entry in entries {
            if self.term_if_known(entry.index)? != Some(entry.term) {
                return Ok(Some(entry.index));
            }
        }
        Ok(None)
    }

    /// The last entry at or before `index` whose term is at most `term`: where
    /// this log may match a log whose entry at `index` has `term` (fast
    /// back-off, §5.3). Returns the term found too.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> Result<LogId, StorageError> {
        let mut index = index.min(self.last_index());
        loop {
            match self.term_if_known(index)? {
                Some(found) if found <= term => return Ok(LogId::new(found, index)),
                Some(_) if index > Index::ZERO => index = index.prev(),
                _ => return Ok(LogId::new(Term::ZERO, index)),
            }
        }
    }

    /// A follower's append (§5.3, Figure 2 "Receiver implementation" steps
    /// 2–5): if this log holds `prev`, removes the first conflicting entry
    /// and everything after it, appends what is new, and advances the commit
    /// index. Returns the last index known to match the leader, or `None`
    /// if `prev` does not match.
    ///
    /// # Errors
    /// `Ok(Err(reason))` if the leader's entries contradict a committed entry,
    /// which a correct leader never sends: the log is left unchanged.
    pub(crate) fn maybe_append(
        &mut self,
        prev: LogId,
        leader_commit: Index,
        entries: Vec<Entry>,
    ) -> Result<Result<Option<Index>, &'static str>, StorageError> {
        if !self.matches(prev)? {
            return Ok(Ok(None));
        }
        let last_new = prev.index.plus(entries.len() as u64);
        if let Some(conflict) = self.find_conflict(&entries)? {
            if conflict <= self.committed {
                return Ok(Err("entries conflict with a committed entry"));
            }
            let skip = conflict.distance_from(prev.index.next()) as usize;
            // The entries are moved, not cloned: the message is consumed.
            let mut entries = entries;
            if skip > 0 {
                entries.drain(..skip);
            }
            self.unstable.truncate_and_append(entries);
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Ok(Some(last_new)))
    }

    /// The leader's append of its own new entry.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.unstable.push(entry);
    }

    /// Sets the payload of the leader's new entry at `index`, which must be
    /// in the unstable tail and not yet handed out.
    pub(crate) fn set_unstable_data(&mut self, index: Index, data: bytes::Bytes) {
        self.unstable.set_data(index, data);
    }

    /// Takes back the leader's entries after `last`, appended by a proposal
    /// that was then refused, and returns them. They must not have been
    /// handed out yet.
    pub(crate) fn discard_unstable_after(&mut self, last: Index) -> Vec<Entry> {
        self.unstable.discard_after(last)
    }

    /// Raises the commit index (never lowers it).
    ///
    /// # Panics
    /// If `index` is beyond the last entry: a caller bug.
    pub(crate) fn commit_to(&mut self, index: Index) {
        if index <= self.committed {
            return;
        }
        let last = self.last_index();
        assert!(index <= last, "commit {index} beyond last index {last}");
        self.committed = index;
    }

    /// Commits `index` if it holds an entry of `term` (§5.4.2: a leader only
    /// commits entries of its own term by counting). Returns whether the
    /// commit index moved.
    pub(crate) fn maybe_commit(&mut self, index: Index, term: Term) -> Result<bool, StorageError> {
        if index > self.committed && self.term_if_known(index)? == Some(term) {
            self.commit_to(index);
            return Ok(true);
        }
        Ok(false)
    }

    /// Entries in `[low, high)`, at least one, up to `max_bytes`.
    pub(crate) fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ReadEntriesError> {
        let mut out = if low >= self.unstable.offset() {
            // Sized for the whole range (up to a bounded guess): one
            // allocation rather than growth entry by entry.
            const FIRST_CAPACITY_MAX: u64 = 256;
            Vec::with_capacity(high.distance_from(low).min(FIRST_CAPACITY_MAX) as usize)
        } else {
            Vec::new()
        };
        self.entries_into(low, high, max_bytes, &mut out)?;
        Ok(out)
    }

    /// [`RaftLog::entries`] into `out`, which must be empty (and is left
    /// empty on an error).
    pub(crate) fn entries_into(
        &self,
        low: Index,
        high: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), ReadEntriesError> {
        debug_assert!(out.is_empty());
        if low >= high {
            return Ok(());
        }
        // The unstable tail is always readable; below it, a pending
        // snapshot has replaced everything, and storage itself reports what
        // it has compacted (its contract), so it is not asked twice.
        if low < self.unstable.offset() && self.unstable.snapshot().is_some() {
            return Err(ReadEntriesError::Compacted);
        }
        let last = self.last_index();
        if high > last.next() {
            return Err(ReadEntriesError::Fatal(StorageError::Unavailable(high)));
        }
        let offset = self.unstable.offset();
        let mut bytes = 0;
        if low < offset {
            let stable_high = high.min(offset);
            if let Err(error) = self.storage.entries_into(low, stable_high, max_bytes, out) {
                out.clear();
                return Err(error.into());
            }
            let complete = out.last().is_some_and(|entry| entry.index == stable_high.prev());
            if !complete || stable_high == high {
                return Ok(());
            }
            bytes = out.iter().map(Entry::size_bytes).sum();
        }
        let low = low.max(offset);
        self.unstable
            .copy_range(low, high, max_bytes.saturating_sub(bytes), out);
        Ok(())
    }

    /// The highest index that may be handed out for applying: committed, and
    /// (unless `allow_unpersisted`) durable locally.
    fn apply_limit(&self, allow_unpersisted: bool) -> Index {
        if self.apply_before_commit {
            return self.last_index();
        }
        if allow_unpersisted {
            return self.committed;
        }
        match self.persisted_index() {
            Some(persisted) => self.committed.min(persisted),
            None => self.applying,
        }
    }

    pub(crate) fn has_entries_to_apply(&self, allow_unpersisted: bool) -> bool {
        self.unstable.snapshot().is_none() && self.apply_limit(allow_unpersisted) > self.applying
    }

    /// Committed entries not yet handed out for applying, up to
    /// `max_bytes`, into `out` (which must be empty).
    pub(crate) fn entries_to_apply_into(
        &self,
        allow_unpersisted: bool,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), ReadEntriesError> {
        if !self.has_entries_to_apply(allow_unpersisted) {
            return Ok(());
        }
        let high = self.apply_limit(allow_unpersisted).next();
        self.entries_into(self.applying.next(), high, max_bytes, out)
    }

    /// Records that entries up to `index` were handed out for applying.
    pub(crate) fn applying_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "applying {index} beyond commit {}",
            self.committed
        );
        self.applying = self.applying.max(index);
    }

    /// Records that the application applied up to `index`.
    pub(crate) fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "applied {index} beyond commit {}",
            self.committed
        );
        self.applied = self.applied.max(index);
        self.applying = self.applying.max(index);
    }

    pub(crate) fn unstable_entries_to_persist(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.unstable.entries_to_persist()
    }

    pub(crate) fn has_entries_to_persist(&self) -> bool {
        self.unstable.has_entries_to_persist()
    }

    pub(crate) fn snapshot_to_persist(&self) -> Option<&SnapshotMetadata> {
        self.unstable.snapshot_to_persist()
    }

    pub(crate) fn accept_in_progress(&mut self) {
        self.unstable.accept_in_progress();
    }

    pub(crate) fn stable_to(&mut self, log_id: LogId) {
        self.unstable.stable_to(log_id);
    }

    pub(crate) fn stable_snapshot_to(&mut self, index: Index) {
        self.unstable.stable_snapshot_to(index);
    }

    /// Installs a snapshot: the log becomes empty after it, and everything
    /// up to it counts as committed and applied once handed out.
    pub(crate) fn restore(&mut self, snapshot: SnapshotMetadata) {
        let index = snapshot.last.index;
        self.unstable.restore(snapshot);
        self.committed = self.committed.max(index);
        self.applying = self.applying.max(index);
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.unstable.check_invariants()?;
        let last = self.last_index();
        if !(self.applied <= self.applying && self.applying <= self.committed) {
            return Err(format!(
                "applied {} <= applying {} <= committed {} broken",
                self.applied, self.applying, self.committed
            ));
        }
        if self.committed > last {
            return Err(format!("committed {} beyond last index {last}", self.committed));
        }
        let first = self.first_index().map_err(|error| error.to_string())?;
        if first.prev() > self.applying && !self.apply_before_commit {
            return Err(format!(
                "snapshot index {} ahead of what was handed out for applying ({})",
                first.prev(),
                self.applying
            ));
        }
        if let (None, Some(cached)) = (self.unstable.snapshot(), self.unstable.stable_tail_term()) {
            let index = self.unstable.offset().prev();
            // A storage error is not this check's business; a different
            // term is.
            if let Ok(stored) = self.storage.term(index) {
                if stored != cached {
                    return Err(format!(
                        "cached term {cached} of the stable tail at {index} but storage holds {stored}"
                    ));
                }
            }
        }
        let stable_last = self.storage.last_index().map_err(|error| error.to_string())?;
        if self.unstable.snapshot().is_none() && self.unstable.offset() > stable_last.next() {
            return Err(format!(
                "unstable tail starts at {} but stable log ends at {stable_last}",
                self.unstable.offset()
            ));
        }
        Ok(())
    }
}
