//! A follower's side of replication (Figure 2, AppendEntries receiver) and
//! of proposal forwarding.

use crate::error::{Error, StepError};
use crate::message::{
    Append, AppendResponse, Envelope, ForwardedProposal, Heartbeat, HeartbeatResponse, Message,
};
use crate::raft::election::Campaign;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{Index, NodeId, SnapshotMetadata, Term};

impl<S: Storage> Raft<S> {
    /// Messages to a follower at its term.
    pub(crate) fn step_follower(&mut self, envelope: Envelope) -> Result<(), Error> {
        let from = envelope.from;
        match envelope.message {
            Message::Append(append) => {
                self.heard_from_leader(from);
                self.handle_append(from, append)
            }
            Message::Heartbeat(heartbeat) => {
                self.heard_from_leader(from);
                self.handle_heartbeat(from, heartbeat)
            }
            Message::Snapshot(metadata) => {
                self.heard_from_leader(from);
                self.handle_snapshot(from, *metadata)
            }
            Message::Propose(proposal) => self.forward_proposal(proposal),
            Message::ReadIndexResponse(response) => {
                self.on_read_index_response(response);
                Ok(())
            }
            Message::ReadIndex(request) => {
                self.refuse_read_index(from, request);
                Ok(())
            }
            Message::TimeoutNow => {
                // The leader hands over (thesis §3.10): campaign at once,
                // skipping pre-vote, which the leader's lease would fail.
                self.campaign(Campaign::Transfer)
            }
            // Responses belong to leaders and candidates; late ones are
            // expected after a role change.
            _ => Ok(()),
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed_ticks = 0;
        self.set_leader(leader);
    }

    /// Passes a proposal on to the leader, or drops it when there is none.
    fn forward_proposal(&mut self, proposal: ForwardedProposal) -> Result<(), Error> {
        if let (Some(leader), true) = (self.leader, self.config.forward_proposals) {
            self.send(leader, Message::Propose(proposal));
        }
        Ok(())
    }
}

/// Checks what a correct peer always sends, on the message alone: an
/// append's entries in order ([`validate_append`]), a snapshot's membership
/// valid.
pub(crate) fn validate_structure(from: NodeId, term: Term, message: &Message) -> Result<(), StepError> {
    match message {
        Message::Append(append) => validate_append(from, term, append),
        Message::Snapshot(metadata) if metadata.conf_state.validate().is_err() => Err(StepError::Malformed {
            from,
            reason: "snapshot membership is invalid",
        }),
        _ => Ok(()),
    }
}

/// Checks what a correct leader always sends: entries contiguous after
/// `prev`, terms never decreasing, none after the leader's term.
fn validate_append(from: NodeId, term: Term, append: &Append) -> Result<(), StepError> {
    let malformed = |reason| StepError::Malformed { from, reason };
    let mut previous = append.prev;
    for entry in &append.entries {
        if entry.index != previous.index.next() {
            return Err(malformed("entries not contiguous after prev"));
        }
        if entry.term < previous.term || entry.term > term {
            return Err(malformed("entry terms out of order"));
        }
        previous = entry.log_id();
    }
    if append.prev.term > term {
        return Err(malformed("prev term after the leader's term"));
    }
    Ok(())
}

impl<S: Storage> Raft<S> {
    /// AppendEntries receiver (Figure 2, steps 1–5).
    fn handle_append(&mut self, from: NodeId, append: Append) -> Result<(), Error> {
        // Structure checked in `step` (`validate_structure`).
        let committed = self.log.committed();
        if append.prev.index < committed {
            // Everything up to our commit index matches any leader's log
            // (Leader Completeness); tell the leader where we stand. Not our
            // last index: a stale append says nothing of what follows the
            // commit index, where an uncommitted tail from another term may
            // sit that this leader's log does not have.
            let last_index = if super::planted!(self.config, StaleAppendAcksLastIndex) {
                self.log.last_index()
            } else {
                committed
            };
            let response = AppendResponse::Accepted { last_index };
            self.send_after_persist(from, self.term, Message::AppendResponse(response));
            return Ok(());
        }
        let outcome = self
            .log
            .maybe_append(append.prev, append.commit, append.entries)?;
        let response = match outcome {
            Err(reason) => return Err(StepError::Malformed { from, reason }.into()),
            Ok(Some(last_index)) => AppendResponse::Accepted { last_index },
            Ok(None) => {
                let last = self.log.last_index();
                let hint = self
                    .log
                    .find_conflict_by_term(append.prev.index.min(last), append.prev.term)?;
                AppendResponse::Rejected {
                    rejected: append.prev.index,
                    hint,
                }
            }
        };
        // The answer claims the entries are on our disk: it waits for that.
        self.send_after_persist(from, self.term, Message::AppendResponse(response));
        Ok(())
    }

    fn handle_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat) -> Result<(), Error> {
        // The leader sends at most what it knows we hold; never trust a
        // commit index past our own log.
        let last = self.log.last_index();
        self.log.commit_to(heartbeat.commit.min(last));
        let response = HeartbeatResponse {
            read_round: heartbeat.read_round,
            priority: self.config.priority,
        };
        self.send(from, Message::HeartbeatResponse(response));
        Ok(())
    }

    /// Refuses a snapshot whose membership leaves out this node while this
    /// node is a member of its own configuration (etcd refuses these too):
    /// installing it would silently make a member a non-member. A node that
    /// is not a member yet — one being added, whose first snapshot predates
    /// its addition, which follows in the log — installs it; it is no voter
    /// in its own configuration and cannot campaign until it applies its
    /// addition.
    pub(crate) fn check_snapshot_includes_self(
        &self,
        from: NodeId,
        metadata: &SnapshotMetadata,
    ) -> Result<(), StepError> {
        if self.tracker.is_member(self.id) && !metadata.conf_state.contains(self.id) {
            return Err(StepError::Malformed {
                from,
                reason: "snapshot membership leaves out this member",
            });
        }
        Ok(())
    }

    /// InstallSnapshot receiver (Figure 13): only a snapshot ahead of our
    /// commit index is installed; if our log already holds its last entry,
    /// the entries after it are kept and only the commit index moves.
    fn handle_snapshot(&mut self, from: NodeId, metadata: SnapshotMetadata) -> Result<(), Error> {
        // Membership checked in `step` (`validate_structure`,
        // `check_snapshot_includes_self`).
        let last_index = self.restore(metadata)?;
        let response = AppendResponse::Accepted { last_index };
        self.send_after_persist(from, self.term, Message::AppendResponse(response));
        Ok(())
    }

    /// Installs `metadata` if it is news; returns the last index now known
    /// to match the leader.
    fn restore(&mut self, metadata: SnapshotMetadata) -> Result<Index, Error> {
        let committed = self.log.committed();
        if metadata.last.index <= committed {
            return Ok(committed);
        }
        if self.log.matches(metadata.last)? {
            // Figure 13 step 6: keep the entries that follow.
            self.log.commit_to(metadata.last.index);
            return Ok(metadata.last.index);
        }
        let index = metadata.last.index;
        let next = index.next();
        self.tracker.apply_conf_state(&metadata.conf_state, next);
        self.log.restore(metadata);
        Ok(index)
    }
}
