//! Membership changes in the protocol: proposing them (one pending at a
//! time), switching to a new configuration when one is applied, leaving a
//! joint configuration automatically, and a removed leader stepping down.

use bytes::Bytes;

use crate::confchange::{self, ConfChange};
use crate::error::{Error, ProposalError};
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::types::{ConfState, EntryKind, Index};

impl<S: Storage> Raft<S> {
    /// Checks a membership change the leader is about to append: only one
    /// may be pending, and it must apply to the current configuration.
    pub(crate) fn check_conf_change_proposal(&self, data: &Bytes) -> Result<(), Error> {
        let change =
            ConfChange::decode(data).map_err(|_| ProposalError::Malformed("undecodable conf change"))?;
        if self.pending_conf_index > self.log.applied() {
            return Err(ProposalError::ConfChangePending {
                pending_index: self.pending_conf_index,
            }
            .into());
        }
        confchange::apply(&self.tracker.conf_state(), &change).map_err(ProposalError::InvalidConfChange)?;
        Ok(())
    }

    /// The index of the last membership change in the log after the
    /// applied index (zero if none): what a new leader must see applied
    /// before it accepts another change. Scans at most a bounded suffix;
    /// beyond that (or if entries are unreadable) it answers the last index,
    /// which is safe, only more cautious.
    pub(crate) fn last_unapplied_conf_change(&self) -> Result<Index, Error> {
        const SCAN_ENTRIES_MAX: u64 = 4096;
        let low = self.log.applied().next();
        let last = self.log.last_index();
        if low > last {
            return Ok(Index::ZERO);
        }
        if last.distance_from(low) >= SCAN_ENTRIES_MAX {
            return Ok(last);
        }
        Ok(match self.last_conf_change_between(low, last)? {
            Some(found) => found.unwrap_or(Index::ZERO),
            None => last,
        })
    }

    /// The index of the last membership change in `[low, high]`, read in
    /// bounded chunks: `Some(None)` if there is none, `None` if some entry
    /// cannot be read now (compacted or temporarily unavailable).
    pub(crate) fn last_conf_change_between(
        &self,
        low: Index,
        high: Index,
    ) -> Result<Option<Option<Index>>, Error> {
        const CHUNK_BYTES_MAX: u64 = 1024 * 1024;
        let mut found = None;
        let mut next = low;
        while next <= high {
            let entries = match self.log.entries(next, high.next(), CHUNK_BYTES_MAX) {
                Ok(entries) => entries,
                Err(crate::log::ReadEntriesError::Fatal(error)) => return Err(error.into()),
                Err(_) => return Ok(None),
            };
            let Some(last) = entries.last() else {
                return Ok(None);
            };
            next = last.index.next();
            if let Some(entry) = entries.iter().rev().find(|entry| entry.kind.is_conf_change()) {
                found = Some(entry.index);
            }
        }
        Ok(Some(found))
    }

    /// Switches to the configuration that results from an applied change.
    pub(crate) fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, Error> {
        let next = confchange::apply(&self.tracker.conf_state(), change)?;
        let next_index = self.log.last_index().next();
        self.tracker.apply_conf_state(&next, next_index);
        if self.role != Role::Leader {
            return Ok(next);
        }
        if !self.tracker.is_voter(self.id) {
            self.hand_over_after_removal()?;
        }
        if self
            .transfer_target
            .is_some_and(|target| !self.tracker.is_voter(target))
        {
            self.transfer_target = None;
        }
        let id = self.id;
        if let Some(progress) = self.tracker.progress_mut(id) {
            progress.set_recent_active(true);
        }
        // Quorums changed: the commit index and waiting reads may move, and
        // new members need the log.
        if self.maybe_commit()? {
            self.broadcast_pending = true;
        }
        self.release_reads_after_conf_change();
        self.broadcast_pending = true;
        Ok(next)
    }

    /// A leader no longer among the voters keeps leading — it takes no
    /// proposals, but goes on replicating, so the new voters learn what is
    /// committed (stepping down at once can leave a joint configuration
    /// without anyone able to win an election: simulator seed 905) — and
    /// hands leadership to the most up-to-date voter as soon as that voter
    /// has its whole log. The successor's election, at a higher term, ends
    /// this node's leadership. Retried every election timeout until done.
    pub(crate) fn hand_over_after_removal(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader || self.tracker.is_voter(self.id) || self.transfer_target.is_some() {
            return Ok(());
        }
        let successor = self
            .tracker
            .iter()
            .filter(|(id, progress)| *id != self.id && !progress.is_learner())
            .max_by_key(|(id, progress)| (progress.matched(), std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        match successor {
            Some(successor) => self.leader_transfer(successor),
            None => Ok(()),
        }
    }

    /// The application applied up to `index`: a leader in a joint
    /// configuration with auto-leave proposes leaving it once the change
    /// that entered it is applied.
    pub(crate) fn on_applied(&mut self, index: Index) -> Result<(), Error> {
        self.log.applied_to(index);
        let leave_now = self.role == Role::Leader
            && self.tracker.leaves_joint_automatically()
            && index >= self.pending_conf_index;
        if leave_now {
            let leave = ConfChange::leave_joint();
            self.append_entries(std::iter::once((EntryKind::ConfChange, leave.encode())))?;
        }
        Ok(())
    }
}
