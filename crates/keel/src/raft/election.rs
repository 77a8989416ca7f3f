//! Elections: timeouts, pre-vote, vote requests and their tally (§5.2,
//! §5.4.1, thesis §9.6).

use crate::error::Error;
use crate::message::{ElectionReason, Envelope, Message, VoteKind, VoteRequest, VoteResponse};
use crate::quorum::VoteResult;
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::types::{NodeId, Term};

/// Which kind of campaign to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// A pre-vote round first.
    PreElection,
    /// A real election straight away.
    Election,
    /// A real election asked for by the leader (leadership transfer).
    Transfer,
}

impl<S: Storage> Raft<S> {
    /// Whether this node may become leader: it is a voter and not in the
    /// middle of installing a snapshot.
    pub(crate) fn is_promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && self.log.persisted_index().is_some()
    }

    pub(crate) fn tick_election(&mut self) -> Result<(), Error> {
        self.election_elapsed_ticks += 1;
        if self.is_promotable() && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            let kind = if self.config.pre_vote {
                Campaign::PreElection
            } else {
                Campaign::Election
            };
            self.campaign(kind)?;
        }
        Ok(())
    }

    /// Starts a campaign. Does nothing on a leader, a non-voter, a node
    /// whose term cannot advance, or a node with a committed membership
    /// change it has not applied yet.
    pub(crate) fn campaign(&mut self, kind: Campaign) -> Result<(), Error> {
        if self.role == Role::Leader || !self.is_promotable() || self.term >= Term::LIMIT {
            return Ok(());
        }
        // Thesis §4.1: a configuration takes effect on each server when it is
        // applied. A node that has not applied a committed change counts
        // votes and commits in the configuration the cluster has left: it
        // could win with a quorum of the old voters while the leader of the
        // new configuration commits something else at the same index.
        if self.has_unapplied_committed_conf_change()?
            && !super::planted!(self.config, CampaignWithUnappliedConfChange)
        {
            return Ok(());
        }
        let (vote_kind, vote_term) = if kind == Campaign::PreElection {
            self.become_pre_candidate();
            (VoteKind::PreVote, self.term.next())
        } else {
            self.become_candidate();
            (VoteKind::Vote, self.term)
        };
        let id = self.id;
        self.tracker.record_vote(id, true);
        if self.tally_votes(vote_kind)? {
            return Ok(());
        }
        let request = VoteRequest {
            kind: vote_kind,
            last_log: self.log.last_log_id()?,
            reason: if kind == Campaign::Transfer {
                ElectionReason::Transfer
            } else {
                ElectionReason::Timeout
            },
            priority: self.config.priority,
        };
        let voters: Vec<NodeId> = self
            .tracker
            .voters()
            .voter_ids()
            .into_iter()
            .filter(|voter| *voter != id)
            .collect();
        for voter in voters {
            match vote_kind {
                // A pre-vote promises nothing, so it may leave at once.
                VoteKind::PreVote => self.send_with_term(voter, vote_term, Message::Vote(request)),
                // The new term and our vote for ourselves must be durable
                // before anyone can count on them.
                VoteKind::Vote => self.send_after_persist(voter, vote_term, Message::Vote(request)),
            }
        }
        Ok(())
    }

    /// Whether a membership change in `(applied, committed]` waits to be
    /// applied. Reads those entries in bounded chunks; an entry that cannot
    /// be read now counts as a change (campaigning later is safe).
    fn has_unapplied_committed_conf_change(&self) -> Result<bool, Error> {
        let low = self.log.applied().next();
        let committed = self.log.committed();
        if low > committed {
            return Ok(false);
        }
        Ok(!matches!(
            self.last_conf_change_between(low, committed)?,
            Some(None)
        ))
    }

    /// Counts the votes so far and acts on a decision. Returns whether the
    /// election was decided.
    fn tally_votes(&mut self, kind: VoteKind) -> Result<bool, Error> {
        match self.tracker.vote_result() {
            VoteResult::Won => {
                match kind {
                    VoteKind::PreVote => self.campaign(Campaign::Election)?,
                    VoteKind::Vote => self.become_leader()?,
                }
                Ok(true)
            }
            VoteResult::Lost => {
                // A pre-candidate keeps its term; a candidate stays in its new one.
                self.become_follower(self.term, None);
                Ok(true)
            }
            VoteResult::Pending => Ok(false),
        }
    }

    /// A (pre-)vote request at a term no lower than ours (Figure 2,
    /// RequestVote receiver; §5.4.1 up-to-date check).
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        request: VoteRequest,
    ) -> Result<(), Error> {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (request.kind == VoteKind::PreVote && term > self.term);
        let up_to_date =
            self.log.is_up_to_date(request.last_log)? || super::planted!(self.config, VoteWithoutLogCheck);
        // Priority: a candidate of lower priority does not win against a
        // voter of higher priority whose log is exactly as long; with a
        // strictly longer candidate log, safety and liveness come first.
        // A node that cannot become leader itself (not a voter in its own
        // configuration) has no claim to defer to: refusing on priority
        // there can leave a cluster with no electable node at all.
        let priority_allows = request.priority >= self.config.priority
            || request.last_log > self.log.last_log_id()?
            || request.reason == ElectionReason::Transfer
            || !self.is_promotable();
        let granted = can_vote && up_to_date && priority_allows;
        let response = VoteResponse {
            kind: request.kind,
            granted,
        };
        let response_term = if granted { term } else { self.term };
        match request.kind {
            VoteKind::PreVote => self.send_with_term(from, response_term, Message::VoteResponse(response)),
            VoteKind::Vote => {
                if granted {
                    self.election_elapsed_ticks = 0;
                    self.vote = Some(from);
                }
                self.send_after_persist(from, response_term, Message::VoteResponse(response));
            }
        }
        Ok(())
    }

    /// Messages to a pre-candidate or candidate at its term.
    pub(crate) fn step_candidate(&mut self, envelope: Envelope) -> Result<(), Error> {
        let expected = if self.role == Role::PreCandidate {
            VoteKind::PreVote
        } else {
            VoteKind::Vote
        };
        match envelope.message {
            Message::VoteResponse(response) if response.kind == expected => {
                self.tracker.record_vote(envelope.from, response.granted);
                self.tally_votes(expected)?;
                Ok(())
            }
            Message::ReadIndex(request) => {
                self.refuse_read_index(envelope.from, request);
                Ok(())
            }
            Message::Append(_) | Message::Heartbeat(_) | Message::Snapshot(_) => {
                // Another node won this term (§5.2).
                self.become_follower(self.term, Some(envelope.from));
                self.step_follower(envelope)
            }
            // Proposals and reads have no leader to go to; the caller's
            // timeout covers forwarded ones.
            _ => Ok(()),
        }
    }
}
