//! The tail of the log that is not yet durable.

use std::collections::VecDeque;

use crate::types::{Entry, Index, LogId, SnapshotMetadata, Term};

/// Entries (and possibly a snapshot) that the core has accepted but the
/// runtime has not yet reported durable. They sit on top of the stable log.
#[derive(Clone, Debug)]
pub(crate) struct Unstable {
    /// A snapshot received from the leader, not yet durable.
    snapshot: Option<SnapshotMetadata>,
    /// Whether `snapshot` was handed out in a `Ready`.
    snapshot_in_progress: bool,
    /// Invariant: `entries[i].index == offset + i`; if `snapshot` is set,
    /// `offset == snapshot.last.index + 1`.
    entries: VecDeque<Entry>,
    offset: Index,
    /// Entries below this index were handed out in a `Ready` for
    /// persistence. Invariant: `offset <= in_progress <= offset + len`.
    in_progress: Index,
    /// The term of the stable entry at `offset - 1`, when known: the entry
    /// every follower's append is matched against and the leader commits,
    /// so the hot path answers it without reading storage. Invariant
    /// (checked by `RaftLog::check_invariants`): equal to the stable log's
    /// term there.
    stable_tail_term: Option<Term>,
}

impl Unstable {
    /// An empty tail after a stable log ending at `stable_last`.
    pub(crate) fn new(stable_last: Index) -> Self {
        Unstable {
            snapshot: None,
            snapshot_in_progress: false,
            entries: VecDeque::new(),
            offset: stable_last.next(),
            in_progress: stable_last.next(),
            stable_tail_term: None,
        }
    }

    /// Records the term of the stable log's last entry (at `offset - 1`).
    pub(crate) fn set_stable_tail_term(&mut self, term: Option<Term>) {
        self.stable_tail_term = term;
    }

    /// The cached term of the stable entry at `offset - 1`, if known.
    pub(crate) fn stable_tail_term(&self) -> Option<Term> {
        self.stable_tail_term
    }

    pub(crate) fn offset(&self) -> Index {
        self.offset
    }

    pub(crate) fn snapshot(&self) -> Option<&SnapshotMetadata> {
        self.snapshot.as_ref()
    }

    pub(crate) fn first_index(&self) -> Option<Index> {
        self.snapshot.as_ref().map(|snapshot| snapshot.last.index.next())
    }

    pub(crate) fn last_index(&self) -> Option<Index> {
        match self.entries.back() {
            Some(entry) => Some(entry.index),
            None => self.snapshot.as_ref().map(|snapshot| snapshot.last.index),
        }
    }

    /// The term at `index` if this tail knows it.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            if let Some(snapshot) = &self.snapshot {
                return (snapshot.last.index == index).then_some(snapshot.last.term);
            }
            return self.stable_tail_term.filter(|_| index == self.offset.prev());
        }
        let position = index.distance_from(self.offset) as usize;
        self.entries.get(position).map(|entry| entry.term)
    }

    /// Entries not yet handed out for persistence.
    pub(crate) fn entries_to_persist(&self) -> impl ExactSizeIterator<Item = &Entry> {
        let start = self.in_progress.distance_from(self.offset) as usize;
        self.entries.range(start..)
    }

    pub(crate) fn has_entries_to_persist(&self) -> bool {
        self.offset.plus(self.entries.len() as u64) > self.in_progress
    }

    /// The snapshot if it was not yet handed out for persistence.
    pub(crate) fn snapshot_to_persist(&self) -> Option<&SnapshotMetadata> {
        self.snapshot.as_ref().filter(|_| !self.snapshot_in_progress)
    }

    /// Marks everything current as handed out.
    pub(crate) fn accept_in_progress(&mut self) {
        self.in_progress = self.offset.plus(self.entries.len() as u64);
        self.snapshot_in_progress = self.snapshot.is_some();
    }

    /// The entries up to `log_id` are durable. Ignored if the entry there has
    /// changed since it was handed out (a newer leader overwrote it).
    pub(crate) fn stable_to(&mut self, log_id: LogId) {
        if self.snapshot.is_some() || log_id.index < self.offset {
            // A snapshot must become durable first; older reports are stale.
            return;
        }
        if self.term(log_id.index) != Some(log_id.term) {
            return;
        }
        let count = log_id.index.next().distance_from(self.offset) as usize;
        self.entries.drain(..count);
        self.offset = log_id.index.next();
        self.stable_tail_term = Some(log_id.term);
        self.in_progress = self.in_progress.max(self.offset);
        self.shrink_if_sparse();
    }

    /// The snapshot at `index` is durable.
    pub(crate) fn stable_snapshot_to(&mut self, index: Index) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|snapshot| snapshot.last.index == index)
        {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replaces everything with a snapshot.
    pub(crate) fn restore(&mut self, snapshot: SnapshotMetadata) {
        self.entries.clear();
        self.offset = snapshot.last.index.next();
        self.in_progress = self.offset;
        self.stable_tail_term = Some(snapshot.last.term);
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends `entries`, first dropping whatever this tail holds at and
    /// after the first of them. The caller guarantees the result is
    /// contiguous with the log below.
    pub(crate) fn truncate_and_append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let after = first.index;
        let end = self.offset.plus(self.entries.len() as u64);
        if after == end {
            // The common case: a plain append.
        } else if after <= self.offset {
            // Replaces the whole tail (and overrides stable entries >= after).
            if after < self.offset {
                // The stable entry now below the tail is not the cached one.
                self.stable_tail_term = None;
            }
            self.offset = after;
            self.entries.clear();
            self.in_progress = after;
        } else {
            let keep = after.distance_from(self.offset) as usize;
            self.entries.truncate(keep);
            self.in_progress = self.in_progress.min(after);
        }
        self.entries.extend(entries);
    }

    /// Sets the payload of the entry at `index`, not yet handed out.
    pub(crate) fn set_data(&mut self, index: Index, data: bytes::Bytes) {
        assert!(
            index >= self.in_progress,
            "payload set on entry {index} already handed out (up to {})",
            self.in_progress
        );
        let position = index.distance_from(self.offset) as usize;
        let entry = self
            .entries
            .get_mut(position)
            .unwrap_or_else(|| panic!("payload set on entry {index} outside the unstable tail"));
        entry.data = data;
    }

    /// Takes out and returns the entries after `last`, which were never
    /// handed out for persistence (a refused proposal's).
    pub(crate) fn discard_after(&mut self, last: Index) -> Vec<Entry> {
        let keep = last.next().distance_from(self.offset) as usize;
        assert!(
            self.in_progress <= last.next(),
            "discarding entries after {last} that are being persisted (up to {})",
            self.in_progress
        );
        if keep >= self.entries.len() {
            return Vec::new();
        }
        self.entries.drain(keep..).collect()
    }

    /// Appends one entry at the end (the leader's path).
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.offset.plus(self.entries.len() as u64));
        self.entries.push_back(entry);
    }

    /// Clones the entries in `[low, high)`, which must lie within this tail,
    /// into `out`, stopping before `max_bytes` is exceeded (but taking at
    /// least one entry if `out` is empty). Returns the bytes added.
    pub(crate) fn copy_range(&self, low: Index, high: Index, max_bytes: u64, out: &mut Vec<Entry>) -> u64 {
        debug_assert!(low >= self.offset && high <= self.offset.plus(self.entries.len() as u64));
        let start = low.distance_from(self.offset) as usize;
        let end = high.distance_from(self.offset) as usize;
        let mut bytes = 0u64;
        for entry in self.entries.range(start..end) {
            let size = entry.size_bytes();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(entry.clone());
        }
        bytes
    }

    fn shrink_if_sparse(&mut self) {
        // A burst can leave a large buffer behind; give it back once it is
        // mostly empty, so a quiet node does not hold its peak forever.
        let capacity = self.entries.capacity();
        if capacity > 4096 && self.entries.len() < capacity / 8 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (position, entry) in self.entries.iter().enumerate() {
            if entry.index != self.offset.plus(position as u64) {
                return Err(format!(
                    "unstable entry {} at position {position}, offset {}",
                    entry.index, self.offset
                ));
            }
        }
        if let Some(snapshot) = &self.snapshot {
            if self.offset != snapshot.last.index.next() {
                return Err(format!(
                    "unstable offset {} after snapshot {}",
                    self.offset, snapshot.last
                ));
            }
        }
        let end = self.offset.plus(self.entries.len() as u64);
        if self.in_progress < self.offset || self.in_progress > end {
            return Err(format!(
                "in_progress {} outside [{}, {}]",
                self.in_progress, self.offset, end
            ));
        }
        Ok(())
    }
}
