//! A bounded cache of the most recent entries.

use std::collections::VecDeque;

use keel::{Entry, Index};

/// The newest entries of the log, a contiguous suffix, bounded in bytes
/// (counted with [`Entry::size_bytes`]).
#[derive(Debug)]
pub(crate) struct EntryCache {
    /// Invariant: contiguous indexes, ending at the log's last entry.
    entries: VecDeque<Entry>,
    size_bytes: u64,
    capacity_bytes: u64,
}

impl EntryCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            size_bytes: 0,
            capacity_bytes,
        }
    }

    /// The cached entry at `index`, if any.
    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        if index < first {
            return None;
        }
        self.entries.get(index.distance_from(first) as usize)
    }

    /// Adds entries that follow the log's last entry (after any truncation).
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        if self
            .entries
            .back()
            .is_some_and(|last| last.index.next() != first.index)
        {
            self.clear();
        }
        for entry in entries {
            self.size_bytes += entry.size_bytes();
            self.entries.push_back(entry.clone());
        }
        while self.size_bytes > self.capacity_bytes {
            let Some(evicted) = self.entries.pop_front() else {
                break;
            };
            self.size_bytes -= evicted.size_bytes();
        }
    }

    /// Drops entries from `from` on.
    pub(crate) fn truncate(&mut self, from: Index) {
        while self.entries.back().is_some_and(|last| last.index >= from) {
            if let Some(removed) = self.entries.pop_back() {
                self.size_bytes -= removed.size_bytes();
            }
        }
    }

    /// Drops entries up to and including `through`.
    pub(crate) fn compact(&mut self, through: Index) {
        while self.entries.front().is_some_and(|first| first.index <= through) {
            if let Some(removed) = self.entries.pop_front() {
                self.size_bytes -= removed.size_bytes();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.size_bytes = 0;
    }
}
