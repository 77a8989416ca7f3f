//! Leadership transfer (thesis §3.10): the leader stops taking proposals,
//! brings the target's log up to date, and tells it to campaign at once.

use crate::error::{Error, TransferError};
use crate::message::Message;
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::types::NodeId;

impl<S: Storage> Raft<S> {
    /// Starts handing leadership to `target`. On a follower the request is
    /// forwarded to the leader.
    pub(crate) fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        match self.role {
            Role::Leader => self.leader_transfer(target),
            _ => {
                let Some(leader) = self.leader else {
                    return Err(TransferError::NoLeader.into());
                };
                if leader != target {
                    self.send(leader, Message::TransferLeader { target });
                }
                Ok(())
            }
        }
    }

    pub(crate) fn leader_transfer(&mut self, target: NodeId) -> Result<(), Error> {
        if target == self.id {
            // Already leader: nothing to hand over; a transfer elsewhere is
            // cancelled, which is what the caller now wants.
            self.transfer_target = None;
            return Ok(());
        }
        if !self.tracker.is_voter(target) {
            return Err(TransferError::NotVoter(target).into());
        }
        if self.transfer_target == Some(target) {
            return Ok(());
        }
        self.transfer_target = Some(target);
        self.transfer_elapsed_ticks = 0;
        let last = self.log.last_index();
        if self
            .tracker
            .progress(target)
            .is_some_and(|progress| progress.matched() == last)
        {
            self.maybe_send_timeout_now(target)?;
        } else {
            // An append even with nothing new: if the target lost earlier
            // ones, its rejection restarts replication to it now rather
            // than at the next heartbeat.
            self.send_appends(target, true)?;
        }
        Ok(())
    }

    /// Sends `TimeoutNow` to the transfer target once its log is complete.
    pub(crate) fn maybe_send_timeout_now(&mut self, target: NodeId) -> Result<(), Error> {
        if self.transfer_target != Some(target) {
            return Ok(());
        }
        let last = self.log.last_index();
        if self
            .tracker
            .progress(target)
            .is_some_and(|progress| progress.matched() == last)
        {
            self.send(target, Message::TimeoutNow);
        }
        Ok(())
    }

    /// A leader of lower priority than a healthy, caught-up voter hands
    /// leadership to the highest such voter, so leadership settles where
    /// the operator prefers it (votes alone cannot ensure that: two
    /// low-priority nodes can elect each other). Called once per
    /// check-quorum period; only ever moves to a strictly higher priority,
    /// so it cannot ping-pong.
    pub(crate) fn maybe_hand_over_to_preferred(&mut self) -> Result<(), Error> {
        if self.transfer_target.is_some() {
            return Ok(());
        }
        let last = self.log.last_index();
        let own_priority = self.config.priority;
        let preferred = self
            .tracker
            .iter()
            .filter(|(id, progress)| {
                *id != self.id
                    && !progress.is_learner()
                    && progress.recent_active()
                    && progress.matched() == last
                    && progress.priority() > own_priority
            })
            .max_by_key(|(id, progress)| (progress.priority(), std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        match preferred {
            Some(target) => self.leader_transfer(target),
            None => Ok(()),
        }
    }

    /// Counts a leader tick against the transfer; gives up after an
    /// election timeout so the cluster does not stay without writes.
    pub(crate) fn tick_transfer(&mut self) {
        if self.transfer_target.is_some() {
            self.transfer_elapsed_ticks += 1;
            if self.transfer_elapsed_ticks >= self.config.election_timeout_ticks_min {
                self.transfer_target = None;
            }
        }
    }
}
