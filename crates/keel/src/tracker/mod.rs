//! The leader's bookkeeping: the current configuration, every member's
//! [`Progress`], and the votes of an election.

mod inflights;
mod progress;

use std::collections::BTreeSet;

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};

use crate::quorum::{quorum_index, JointConfig, MajorityConfig, VoteResult, STACK_VOTERS};
use crate::types::{ConfState, Index, NodeId};

/// The configuration in force and the progress of each of its members.
#[derive(Clone, Debug)]
pub(crate) struct ProgressTracker {
    voters: JointConfig,
    learners: BTreeSet<NodeId>,
    learners_next: BTreeSet<NodeId>,
    auto_leave: bool,
    /// One entry per member, sorted by id. Invariant: exactly the members of
    /// the configuration above.
    progress: Vec<(NodeId, Progress)>,
    /// Votes received in the current election, sorted by id.
    votes: Vec<(NodeId, bool)>,
    max_inflight_messages: usize,
    max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight_messages: usize, max_inflight_bytes: u64) -> Self {
        ProgressTracker {
            voters: JointConfig::default(),
            learners: BTreeSet::new(),
            learners_next: BTreeSet::new(),
            auto_leave: false,
            progress: Vec::new(),
            votes: Vec::new(),
            max_inflight_messages,
            max_inflight_bytes,
        }
    }

    /// Installs `conf_state`, keeping the progress of members that stay and
    /// starting new members at `next`.
    pub(crate) fn apply_conf_state(&mut self, conf_state: &ConfState, next: Index) {
        self.voters = JointConfig::new(
            MajorityConfig::new(conf_state.voters.iter().copied()),
            MajorityConfig::new(conf_state.voters_outgoing.iter().copied()),
        );
        self.learners = conf_state.learners.clone();
        self.learners_next = conf_state.learners_next.clone();
        self.auto_leave = conf_state.auto_leave;
        let members = conf_state.members();
        let mut progress = Vec::with_capacity(members.len());
        for id in members {
            let is_learner = !self.voters.contains(id);
            let mut member = match self.progress.binary_search_by_key(&id, |(member, _)| *member) {
                Ok(position) => self.progress[position].1.clone(),
                Err(_) => {
                    let mut member = Progress::new(
                        next.max(Index::new(1)),
                        self.max_inflight_messages,
                        self.max_inflight_bytes,
                        is_learner,
                    );
                    // A member just added has had no chance to answer: were
                    // it counted inactive, the next check-quorum could
                    // depose a healthy leader (one voter plus a new one).
                    member.set_recent_active(true);
                    member
                }
            };
            member.set_learner(is_learner);
            progress.push((id, member));
        }
        self.progress = progress;
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming().voters().iter().copied().collect(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters.outgoing().voters().iter().copied().collect(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }

    /// Whether the configuration is joint and is to be left automatically.
    pub(crate) fn leaves_joint_automatically(&self) -> bool {
        self.auto_leave && self.voters.is_joint()
    }

    pub(crate) fn voters(&self) -> &JointConfig {
        &self.voters
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.position(id).is_some()
    }

    /// Whether `id` is the only voter (a one-node cluster).
    pub(crate) fn is_sole_voter(&self, id: NodeId) -> bool {
        let incoming = self.voters.incoming().voters();
        incoming.len() == 1 && incoming[0] == id && !self.voters.is_joint()
    }

    fn position(&self, id: NodeId) -> Option<usize> {
        // A linear scan: clusters have a handful of members, and this runs
        // several times per message on the leader.
        self.progress.iter().position(|(member, _)| *member == id)
    }

    pub(crate) fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.position(id).map(|position| &self.progress[position].1)
    }

    pub(crate) fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.position(id).map(|position| &mut self.progress[position].1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, &Progress)> {
        self.progress.iter().map(|(id, progress)| (*id, progress))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Progress)> {
        self.progress.iter_mut().map(|(id, progress)| (*id, progress))
    }

    /// The number of members.
    pub(crate) fn member_count(&self) -> usize {
        self.progress.len()
    }

    /// The id of the member at `position` in id order.
    pub(crate) fn member_id_at(&self, position: usize) -> NodeId {
        self.progress[position].0
    }

    pub(crate) fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.progress.iter().map(|(id, _)| *id)
    }

    /// Resets every member's progress for a new leader term.
    pub(crate) fn reset_progress(&mut self, next: Index) {
        let (max_messages, max_bytes) = (self.max_inflight_messages, self.max_inflight_bytes);
        for (_, progress) in &mut self.progress {
            let priority = progress.priority();
            *progress = Progress::new(next, max_messages, max_bytes, progress.is_learner());
            progress.set_priority(priority);
        }
    }

    /// The highest index a quorum of voters has durably replicated.
    pub(crate) fn committed_index(&self) -> Index {
        if !self.voters.is_joint() && self.progress.len() <= STACK_VOTERS {
            // One configuration: its voters are exactly the members that
            // are not learners (`apply_conf_state` keeps the flag so), so
            // one pass reads every acknowledgement, with no lookups. This
            // runs on every acknowledgement the leader counts.
            let mut matched = [Index::ZERO; STACK_VOTERS];
            let mut count = 0;
            for (_, progress) in self
                .progress
                .iter()
                .filter(|(_, progress)| !progress.is_learner())
            {
                matched[count] = progress.matched();
                count += 1;
            }
            return quorum_index(&mut matched[..count]);
        }
        self.committed_index_by_lookup()
    }

    /// The general rule, for joint configurations: each half's majority,
    /// reading each voter's acknowledgement by id.
    fn committed_index_by_lookup(&self) -> Index {
        self.voters
            .committed_index(|id| self.progress(id).map(|progress| progress.matched()))
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote; a repeated vote from the same node is ignored.
    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) {
        if let Err(position) = self.votes.binary_search_by_key(&id, |(voter, _)| *voter) {
            self.votes.insert(position, (id, granted));
        }
    }

    pub(crate) fn vote_result(&self) -> VoteResult {
        self.voters.vote_result(|id| {
            self.votes
                .binary_search_by_key(&id, |(voter, _)| *voter)
                .ok()
                .map(|position| self.votes[position].1)
        })
    }

    /// Whether a quorum of voters was heard from in this check-quorum
    /// period (`local` always counts).
    pub(crate) fn quorum_active(&self, local: NodeId) -> bool {
        let result = self.voters.vote_result(|id| {
            let active = id == local || self.progress(id).is_some_and(Progress::recent_active);
            Some(active)
        });
        result == VoteResult::Won
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let members = self.conf_state().members();
        let tracked: BTreeSet<NodeId> = self.member_ids().collect();
        if members != tracked {
            return Err(format!("progress tracks {tracked:?} but members are {members:?}"));
        }
        for (id, progress) in self.iter() {
            if progress.is_learner() == self.voters.contains(id) {
                return Err(format!("{id} learner flag disagrees with the configuration"));
            }
            progress
                .check_invariants()
                .map_err(|error| format!("progress of {id}: {error}"))?;
        }
        let (fast, general) = (self.committed_index(), self.committed_index_by_lookup());
        if fast != general {
            return Err(format!("quorum index {fast} but {general} by the general rule"));
        }
        Ok(())
    }
}
