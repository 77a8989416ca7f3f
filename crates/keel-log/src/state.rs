//! The log's state as records build it: the same code applies a record when
//! it is written and when it is replayed on open, so both agree by
//! construction.

use std::collections::VecDeque;

use keel::{ConfState, HardState, Index, LogId, SnapshotMetadata, Term};

use crate::record::{Checkpoint, EntryHeader};

/// Where an entry's record is, and its term (so `term()` never reads the disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) term: Term,
    pub(crate) segment_sequence: u64,
    pub(crate) offset: u64,
    pub(crate) length_bytes: u32,
}

/// The log as seen through its records.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogState {
    /// The last discarded entry (compaction or snapshot); its term stays known.
    compacted: LogId,
    /// Only while replaying: entries in `(compacted.index, missing_through]`
    /// lived in segments that were deleted, so later records must discard
    /// them before replay ends. Invariant: `missing_through >= compacted.index`,
    /// and equal outside replay.
    missing_through: Index,
    /// The term of the entry at `missing_through`, when known.
    missing_term: Option<Term>,
    /// `locations[i]` is the entry at `missing_through + 1 + i`.
    locations: VecDeque<Location>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
}

/// A record that does not fit the log it is applied to.
pub(crate) type Inconsistency = String;

impl LogState {
    pub(crate) fn compacted(&self) -> LogId {
        self.compacted
    }

    pub(crate) fn first_index(&self) -> Index {
        self.compacted.index.next()
    }

    pub(crate) fn last_index(&self) -> Index {
        self.missing_through.plus(self.locations.len() as u64)
    }

    /// The term of the last entry; `None` only while replaying, for an entry
    /// in a deleted segment.
    pub(crate) fn last_term(&self) -> Option<Term> {
        match self.locations.back() {
            Some(location) => Some(location.term),
            None if self.missing_through == self.compacted.index => Some(self.compacted.term),
            None => self.missing_term,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub(crate) fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub(crate) fn snapshot(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    /// The location of the entry at `index`, if it is in the log.
    pub(crate) fn location(&self, index: Index) -> Option<&Location> {
        if index <= self.missing_through {
            return None;
        }
        self.locations
            .get((index.distance_from(self.missing_through) - 1) as usize)
    }

    /// The term at `index` for `compacted.index <= index <= last_index`.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.compacted.index {
            return Some(self.compacted.term);
        }
        self.location(index).map(|location| location.term)
    }

    /// The sequence of the oldest segment holding a live entry.
    pub(crate) fn oldest_needed_segment(&self) -> Option<u64> {
        self.locations.front().map(|location| location.segment_sequence)
    }

    pub(crate) fn checkpoint(&self, segment_sequence: u64) -> Checkpoint {
        debug_assert_eq!(self.missing_through, self.compacted.index);
        Checkpoint {
            segment_sequence,
            compacted: self.compacted,
            last: LogId::new(self.last_term().unwrap_or_default(), self.last_index()),
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    /// Starts a replay from the first segment's checkpoint: the entries up
    /// to `checkpoint.last` are in deleted segments.
    pub(crate) fn start_from(checkpoint: Checkpoint) -> Result<LogState, Inconsistency> {
        if checkpoint.last.index < checkpoint.compacted.index {
            return Err("checkpoint's last index is below its compacted index".into());
        }
        Ok(LogState {
            compacted: checkpoint.compacted,
            missing_through: checkpoint.last.index,
            missing_term: Some(checkpoint.last.term),
            locations: VecDeque::new(),
            hard_state: checkpoint.hard_state,
            conf_state: checkpoint.conf_state,
            snapshot: checkpoint.snapshot,
        })
    }

    /// Checks a later segment's checkpoint against the replayed state.
    pub(crate) fn verify_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), Inconsistency> {
        let last_matches = checkpoint.last.index == self.last_index()
            && self.last_term().is_none_or(|term| term == checkpoint.last.term);
        if checkpoint.compacted != self.compacted
            || !last_matches
            || checkpoint.hard_state != self.hard_state
            || checkpoint.conf_state != self.conf_state
            || checkpoint.snapshot != self.snapshot
        {
            return Err(format!(
                "checkpoint (compacted {}, last {}) disagrees with the preceding segments (compacted {}, last \
                 index {}): a segment is missing or out of place",
                checkpoint.compacted,
                checkpoint.last,
                self.compacted,
                self.last_index()
            ));
        }
        Ok(())
    }

    /// Ends a replay: every entry of a deleted segment must have been discarded.
    pub(crate) fn finish_replay(&self) -> Result<(), Inconsistency> {
        if self.missing_through > self.compacted.index {
            return Err(format!(
                "entries {}..={} are missing: the segments that held them are gone",
                self.compacted.index.next(),
                self.missing_through
            ));
        }
        Ok(())
    }

    pub(crate) fn apply_entry(
        &mut self,
        header: EntryHeader,
        location: Location,
    ) -> Result<(), Inconsistency> {
        let expected = self.last_index().next();
        if header.index != expected {
            let what = if header.index < expected {
                "a duplicated or out-of-order"
            } else {
                "a gap before"
            };
            return Err(format!(
                "{what} entry: index {} where {expected} was expected",
                header.index
            ));
        }
        if let Some(previous_term) = self.last_term() {
            if header.term < previous_term {
                return Err(format!(
                    "entry {} has term {}, below the previous entry's term {previous_term}",
                    header.index, header.term
                ));
            }
        }
        debug_assert_eq!(header.term, location.term);
        self.locations.push_back(location);
        Ok(())
    }

    pub(crate) fn apply_truncate(&mut self, from: Index) -> Result<(), Inconsistency> {
        if from <= self.compacted.index || from > self.last_index() {
            return Err(format!(
                "truncation from {from} outside the log ({}..={})",
                self.first_index(),
                self.last_index()
            ));
        }
        let keep_through = from.prev();
        if keep_through < self.missing_through {
            self.missing_through = keep_through;
            self.missing_term = None;
            self.locations.clear();
        } else {
            self.locations
                .truncate(keep_through.distance_from(self.missing_through) as usize);
        }
        Ok(())
    }

    pub(crate) fn apply_compact(&mut self, through: LogId) -> Result<(), Inconsistency> {
        if through.index <= self.compacted.index || through.index > self.last_index() {
            return Err(format!(
                "compaction through {through} outside the log ({}..={})",
                self.first_index(),
                self.last_index()
            ));
        }
        if let Some(term) = self.term(through.index) {
            if term != through.term {
                return Err(format!(
                    "compaction through {through} but that entry has term {term}"
                ));
            }
        }
        if through.index >= self.missing_through {
            let drop_count = through.index.distance_from(self.missing_through) as usize;
            self.locations.drain(..drop_count);
            self.missing_through = through.index;
            self.missing_term = Some(through.term);
        }
        self.compacted = through;
        Ok(())
    }

    pub(crate) fn apply_install_snapshot(
        &mut self,
        metadata: &SnapshotMetadata,
    ) -> Result<(), Inconsistency> {
        if metadata.last.index < self.snapshot.last.index {
            return Err(format!(
                "installed snapshot {} is older than the current one {}",
                metadata.last, self.snapshot.last
            ));
        }
        self.compacted = metadata.last;
        self.missing_through = metadata.last.index;
        self.missing_term = Some(metadata.last.term);
        self.locations.clear();
        self.conf_state = metadata.conf_state.clone();
        self.snapshot = metadata.clone();
        Ok(())
    }

    pub(crate) fn apply_snapshot(&mut self, metadata: &SnapshotMetadata) -> Result<(), Inconsistency> {
        if metadata.last.index < self.snapshot.last.index || metadata.last.index > self.last_index() {
            return Err(format!(
                "snapshot at {} is older than {} or beyond the last entry {}",
                metadata.last,
                self.snapshot.last,
                self.last_index()
            ));
        }
        self.snapshot = metadata.clone();
        Ok(())
    }

    pub(crate) fn apply_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub(crate) fn apply_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }
}
