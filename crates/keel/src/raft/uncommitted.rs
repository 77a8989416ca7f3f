//! The leader's count of uncommitted proposal bytes, which caps how far its
//! log can run ahead of what a quorum has stored.

use std::collections::VecDeque;

use crate::types::Index;

/// Payload bytes appended by this leader and not yet committed, kept as one
/// record per appended batch (not per entry).
#[derive(Clone, Debug, Default)]
pub(crate) struct Uncommitted {
    /// `(last index of the batch, payload bytes of the batch)`, oldest first.
    batches: VecDeque<(Index, u64)>,
    /// Invariant: the sum of the batches' bytes.
    bytes: u64,
}

impl Uncommitted {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a proposal of `bytes` fits under `limit_bytes`. With nothing
    /// uncommitted any proposal fits, so one large entry cannot be stuck.
    pub(crate) fn fits(&self, bytes: u64, limit_bytes: u64) -> bool {
        bytes == 0 || self.bytes == 0 || self.bytes + bytes <= limit_bytes
    }

    pub(crate) fn add(&mut self, last_index: Index, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.batches.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Drops the batches committed up to `committed`.
    pub(crate) fn on_commit(&mut self, committed: Index) {
        while let Some(&(last_index, bytes)) = self.batches.front() {
            if last_index > committed {
                break;
            }
            self.batches.pop_front();
            self.bytes -= bytes;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let sum: u64 = self.batches.iter().map(|(_, bytes)| bytes).sum();
        if sum != self.bytes {
            return Err(format!(
                "uncommitted bytes {} != sum of batches {sum}",
                self.bytes
            ));
        }
        Ok(())
    }
}
