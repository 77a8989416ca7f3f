//! The leader's side: proposals, replication with flow control, heartbeats,
//! commitment and check-quorum (§5.3, §5.4.2, thesis §6.2).

use bytes::Bytes;

use crate::error::{Error, ProposalError, StepError};
use crate::log::ReadEntriesError;
use crate::message::{
    Append, AppendResponse, Envelope, ForwardedProposal, Heartbeat, Message, ProposedEntry, RefusalReason,
    RefusedProposal,
};
use crate::raft::arena::PayloadArena;
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::tracker::ProgressState;

/// How sending a snapshot to a follower ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotOutcome {
    /// The follower received all of it.
    Delivered,
    /// The transfer broke off; it will be retried.
    Failed,
}
use crate::types::{Entry, EntryKind, LogId, NodeId};

impl<S: Storage> Raft<S> {
    // ----- proposals -------------------------------------------------------------

    /// Proposes payloads for the log. On a follower they are forwarded to
    /// the leader (if allowed); nothing is appended locally. All or none
    /// are accepted.
    pub(crate) fn propose<I>(&mut self, entries: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = (EntryKind, Bytes)>,
    {
        let mut entries = entries.into_iter();
        match self.role {
            Role::Leader => self
                .propose_as_leader(&mut entries)
                .map_err(|(error, _taken_back)| error),
            _ => {
                let Some(leader) = self.leader else {
                    return Err(ProposalError::NoLeader.into());
                };
                if !self.config.forward_proposals {
                    return Err(ProposalError::NotLeader { leader: Some(leader) }.into());
                }
                let entries = entries.map(|(kind, data)| ProposedEntry { kind, data }).collect();
                self.send(leader, Message::Propose(ForwardedProposal { entries }));
                Ok(())
            }
        }
    }

    /// The leader's side of [`Raft::propose`]. On a refusal it hands back
    /// the entries it had already appended (and took out again); with
    /// what `entries` still holds, that is the whole batch.
    fn propose_as_leader(
        &mut self,
        entries: &mut impl Iterator<Item = (EntryKind, Bytes)>,
    ) -> Result<(), (Error, Vec<Entry>)> {
        debug_assert_eq!(self.role, Role::Leader);
        if !self.tracker.is_member(self.id) {
            return Err((ProposalError::NotMember.into(), Vec::new()));
        }
        if self.transfer_target.is_some() {
            return Err((ProposalError::TransferInProgress.into(), Vec::new()));
        }
        // One pass over the batch: each entry is checked and appended as it
        // comes (the payloads are moved, never cloned), and a refused batch
        // is taken back out whole. No `Ready` has seen the new entries yet,
        // so nothing else knows of them.
        let last_before = self.log.last_index();
        match self.append_proposals(entries) {
            Ok(()) => Ok(()),
            Err(error) => {
                // Sealed first, so that what is taken back has its data.
                self.seal_payloads();
                Err((error, self.log.discard_unstable_after(last_before)))
            }
        }
    }

    /// Refuses forwarded proposals back to `from`, who forwarded them.
    fn refuse_forwarded(&mut self, from: NodeId, error: &ProposalError, entries: Vec<ProposedEntry>) {
        let refused = RefusedProposal {
            entries,
            reason: RefusalReason::of(error),
        };
        self.send(from, Message::ProposalRefused(refused));
    }

    /// Appends a batch of proposals to the leader's log, checking each
    /// membership change and then the uncommitted-bytes cap for the whole
    /// batch. On an error some of the batch may be in the log (the entry
    /// found wrong included: every entry taken from `entries` is), and the
    /// caller discards it.
    fn append_proposals(&mut self, entries: impl Iterator<Item = (EntryKind, Bytes)>) -> Result<(), Error> {
        debug_assert_eq!(self.role, Role::Leader);
        let mut index = self.log.last_index();
        let mut proposed_bytes = 0u64;
        let mut conf_change_index = None;
        for (kind, data) in entries {
            index = index.next();
            let check = if !kind.is_conf_change() {
                Ok(())
            } else if conf_change_index.is_some() {
                Err(ProposalError::Malformed("more than one conf change in a batch").into())
            } else {
                conf_change_index = Some(index);
                self.check_conf_change_proposal(&data)
            };
            proposed_bytes += data.len() as u64;
            let data = if PayloadArena::wants(&data) {
                if !self.arena.has_room(data.len()) {
                    self.seal_payloads();
                }
                self.arena.copy_in(index, &data);
                // A placeholder until the batch is sealed below.
                Bytes::new()
            } else {
                data
            };
            self.log.push(Entry::new(self.term, index, kind, data));
            // Checked before, failed after the push: a refused entry is
            // taken back with the rest, and handed back whole.
            check?;
        }
        self.seal_payloads();
        if !self
            .uncommitted
            .fits(proposed_bytes, self.config.max_uncommitted_bytes)
        {
            return Err(ProposalError::UncommittedLimit {
                uncommitted_bytes: self.uncommitted.bytes(),
                proposed_bytes,
                limit_bytes: self.config.max_uncommitted_bytes,
            }
            .into());
        }
        if let Some(conf_change_index) = conf_change_index {
            self.pending_conf_index = conf_change_index;
        }
        self.uncommitted.add(index, proposed_bytes);
        self.broadcast_pending = true;
        Ok(())
    }

    /// Gives the entries whose payloads were copied into the arena their
    /// data.
    fn seal_payloads(&mut self) {
        for (index, data) in self.arena.seal() {
            self.log.set_unstable_data(index, data);
        }
    }

    /// Appends entries of the current term to the leader's log; followers
    /// hear of them when the next `Ready` is built.
    pub(crate) fn append_entries(
        &mut self,
        entries: impl Iterator<Item = (EntryKind, Bytes)>,
    ) -> Result<(), Error> {
        debug_assert_eq!(self.role, Role::Leader);
        let mut index = self.log.last_index();
        let mut bytes = 0u64;
        for (kind, data) in entries {
            index = index.next();
            bytes += data.len() as u64;
            if kind.is_conf_change() {
                self.pending_conf_index = index;
            }
            self.log.push(Entry::new(self.term, index, kind, data));
        }
        self.uncommitted.add(index, bytes);
        self.broadcast_pending = true;
        Ok(())
    }

    // ----- sending -----------------------------------------------------------------

    /// Sends to every follower what it lacks (the deferred broadcast).
    pub(crate) fn flush_broadcast(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader {
            self.broadcast_pending = false;
            return Ok(());
        }
        if self.read_round_wanted() {
            self.broadcast_heartbeat();
        }
        if !std::mem::take(&mut self.broadcast_pending) {
            return Ok(());
        }
        let committed = self.log.committed();
        // By position: sending changes progress, never membership, and this
        // runs on every Ready, so no list of followers is built.
        for position in 0..self.tracker.member_count() {
            let id = self.tracker.member_id_at(position);
            if id == self.id {
                continue;
            }
            let commit_news = self
                .tracker
                .progress(id)
                .is_some_and(|progress| progress.sent_commit() < committed);
            self.send_appends(id, commit_news)?;
        }
        Ok(())
    }

    /// Sends `to` as many appends as flow control allows; with
    /// `send_if_empty`, at least one (to carry the commit index) unless
    /// paused.
    pub(crate) fn send_appends(&mut self, to: NodeId, mut send_if_empty: bool) -> Result<(), Error> {
        while self.send_one_append(to, send_if_empty)? {
            send_if_empty = false;
        }
        Ok(())
    }

    /// Sends one append (or a snapshot) to `to`. Returns whether anything was
    /// sent and more may follow.
    fn send_one_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool, Error> {
        let Some(progress) = self.tracker.progress(to) else {
            return Ok(false);
        };
        if progress.is_paused() {
            return Ok(false);
        }
        let next = progress.next();
        let last = self.log.last_index();
        if next > last && !send_if_empty {
            // Nothing new for it (the common way out of `send_appends`).
            return Ok(false);
        }
        let Some(prev_term) = self.log.term_if_known(next.prev())? else {
            return self.send_snapshot(to);
        };
        let entries = match self.log.entries(next, last.next(), self.config.max_message_bytes) {
            Ok(entries) => entries,
            Err(ReadEntriesError::Compacted) => return self.send_snapshot(to),
            Err(ReadEntriesError::Temporary) => return Ok(false),
            Err(ReadEntriesError::Fatal(error)) => return Err(error.into()),
        };
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_sent = entries.last().map_or(next.prev(), |entry| entry.index);
        let commit = self.log.committed();
        let progress = self.tracker.progress_mut(to).expect("progress checked above");
        progress.on_entries_sent(last_sent, bytes);
        progress.set_sent_commit(commit.min(last_sent));
        let state = progress.state();
        let sent_entries = !entries.is_empty();
        let append = Append {
            prev: LogId::new(prev_term, next.prev()),
            entries,
            commit,
        };
        self.send(to, Message::Append(append));
        Ok(sent_entries && state == ProgressState::Replicate)
    }

    /// Sends `to` a snapshot because the entries it needs are compacted.
    fn send_snapshot(&mut self, to: NodeId) -> Result<bool, Error> {
        let Some(progress) = self.tracker.progress(to) else {
            return Ok(false);
        };
        if !progress.recent_active() {
            // Do not stream a snapshot to a node that may be down.
            return Ok(false);
        }
        let first_index = self.log.first_index()?;
        let metadata = match self.log.storage().snapshot(progress.next(), to) {
            Ok(metadata) => metadata,
            Err(error) if error.is_temporary() => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        if metadata.is_empty() || metadata.last.index.next() < first_index {
            // No snapshot covers the compacted entries yet (the application
            // compacted past its latest snapshot): treat it like a snapshot
            // still being built and try again on the next heartbeat.
            return Ok(false);
        }
        let progress = self.tracker.progress_mut(to).expect("progress checked above");
        progress.become_snapshot(metadata.last.index);
        self.send(to, Message::Snapshot(Box::new(metadata)));
        Ok(false)
    }

    /// Sends every follower a heartbeat of a new read round.
    fn broadcast_heartbeat(&mut self) {
        let round = self.start_read_round();
        let committed = self.log.committed();
        for (id, progress) in self.tracker.iter().filter(|(id, _)| *id != self.id) {
            // A follower may not hold entries up to our commit index yet.
            let heartbeat = Heartbeat {
                commit: committed.min(progress.matched()),
                read_round: Some(round),
            };
            let message = Message::Heartbeat(heartbeat);
            self.messages.push(Envelope::new(self.id, id, self.term, message));
        }
    }

    // ----- ticks ---------------------------------------------------------------------

    pub(crate) fn tick_leader(&mut self) -> Result<(), Error> {
        self.tick_reads();
        self.tick_transfer();
        // A removed leader whose hand-over timed out tries again.
        self.hand_over_after_removal()?;
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks_min {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    // Cut off from a quorum: stop accepting writes that could
                    // never commit (thesis §6.2).
                    self.become_follower(self.term, None);
                    return Ok(());
                }
                self.maybe_hand_over_to_preferred()?;
                let id = self.id;
                for (member, progress) in self.tracker.iter_mut() {
                    progress.set_recent_active(member == id);
                }
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    // ----- responses -------------------------------------------------------------------

    /// Messages to a leader at its term.
    pub(crate) fn step_leader(&mut self, envelope: Envelope) -> Result<(), Error> {
        let from = envelope.from;
        match envelope.message {
            Message::AppendResponse(response) => {
                self.ensure_member(from)?;
                self.handle_append_response(from, response)
            }
            Message::HeartbeatResponse(response) => {
                self.ensure_member(from)?;
                if let Some(round) = response.read_round {
                    self.on_round_acknowledged(from, round);
                }
                if let Some(progress) = self.tracker.progress_mut(from) {
                    progress.set_priority(response.priority);
                }
                self.handle_heartbeat_response(from)
            }
            Message::TransferLeader { target } => {
                self.ensure_member(from)?;
                match self.leader_transfer(target) {
                    // A refused forwarded request has no one to tell.
                    Err(Error::Transfer(_)) => Ok(()),
                    other => other,
                }
            }
            Message::ReadIndex(request) => {
                self.ensure_member(from)?;
                self.leader_read_index(request.context, super::ReadMode::Safe, Some(from))
            }
            Message::Propose(proposal) => {
                let mut entries = proposal.entries.into_iter().map(|entry| (entry.kind, entry.data));
                match self.propose_as_leader(&mut entries) {
                    Ok(()) => Ok(()),
                    // Handed back whole, so that the follower's callers
                    // learn it at once (if this is lost, they time out).
                    Err((Error::Proposal(error), taken_back)) => {
                        let mut refused: Vec<ProposedEntry> = taken_back
                            .into_iter()
                            .map(|entry| ProposedEntry {
                                kind: entry.kind,
                                data: entry.data,
                            })
                            .collect();
                        refused.extend(entries.map(|(kind, data)| ProposedEntry { kind, data }));
                        self.refuse_forwarded(from, &error, refused);
                        Ok(())
                    }
                    Err((error, _)) => Err(error),
                }
            }
            Message::Append(_) | Message::Heartbeat(_) | Message::Snapshot(_) => {
                // Only one leader per term: this is a broken peer, or a
                // safety bug. Record it and refuse.
                self.set_leader(from);
                self.leader = Some(self.id);
                Err(StepError::Malformed {
                    from,
                    reason: "a second leader in the same term",
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    fn ensure_member(&self, from: NodeId) -> Result<(), Error> {
        if self.tracker.is_member(from) {
            Ok(())
        } else {
            Err(StepError::UnknownPeer(from).into())
        }
    }

    fn handle_append_response(&mut self, from: NodeId, response: AppendResponse) -> Result<(), Error> {
        let last = self.log.last_index();
        match response {
            AppendResponse::Accepted { last_index } => {
                if last_index > last {
                    return Err(StepError::Malformed {
                        from,
                        reason: "acknowledges entries beyond the leader's log",
                    }
                    .into());
                }
                let progress = self
                    .tracker
                    .progress_mut(from)
                    .expect("membership checked by caller");
                progress.set_recent_active(true);
                let updated = progress.maybe_update(last_index);
                if !updated && progress.state() == ProgressState::Probe && progress.matched() == last_index {
                    // A probe answered at what we already knew it holds (a
                    // follower reported unreachable, then found alive and
                    // caught up): it is in step again, pipeline to it.
                    progress.become_replicate();
                }
                if updated {
                    match progress.state() {
                        ProgressState::Probe => progress.become_replicate(),
                        ProgressState::Snapshot { index } if progress.matched() >= index => {
                            progress.become_probe();
                            progress.become_replicate();
                        }
                        _ => {}
                    }
                    // An acknowledgement at or below the commit index cannot
                    // move the quorum's index past it: skip the count.
                    let matched = progress.matched();
                    if matched > self.log.committed() && self.maybe_commit()? {
                        // Tell everyone the new commit index (deferred).
                        self.broadcast_pending = true;
                    }
                    self.maybe_send_timeout_now(from)?;
                }
                self.send_appends(from, false)?;
                // A follower that has not seen the commit index yet learns
                // it at the next flush: one message however many
                // acknowledgements arrive before it.
                let committed = self.log.committed();
                if self
                    .tracker
                    .progress(from)
                    .is_some_and(|progress| progress.sent_commit() < committed)
                {
                    self.broadcast_pending = true;
                }
                Ok(())
            }
            AppendResponse::Rejected { rejected, hint } => {
                let next_probe = if hint.term > crate::types::Term::ZERO {
                    self.log.find_conflict_by_term(hint.index, hint.term)?.index
                } else {
                    hint.index
                };
                let progress = self
                    .tracker
                    .progress_mut(from)
                    .expect("membership checked by caller");
                progress.set_recent_active(true);
                if progress.maybe_decrease_to(rejected, next_probe) {
                    if progress.state() == ProgressState::Replicate {
                        progress.become_probe();
                    }
                    self.send_appends(from, false)?;
                }
                Ok(())
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId) -> Result<(), Error> {
        let last = self.log.last_index();
        let progress = self
            .tracker
            .progress_mut(from)
            .expect("membership checked by caller");
        progress.set_recent_active(true);
        match progress.state() {
            // The follower is alive: probe again.
            ProgressState::Probe => progress.resume_probe(),
            ProgressState::Replicate if progress.inflights().is_full() => {
                // Acknowledgements may have been lost; free a slot so the
                // pipeline cannot stall forever.
                progress.inflights_mut().free_oldest();
            }
            _ => {}
        }
        if progress.matched() < last || progress.state() == ProgressState::Probe {
            // Even with nothing new to send, an empty append makes a
            // follower whose appends were all lost answer with a rejection,
            // which resets its progress; otherwise it would wait forever.
            // A probing follower that is caught up answers it with an
            // acceptance, which takes it back to replicating.
            self.send_appends(from, true)?;
        }
        Ok(())
    }

    /// Advances the commit index to what a quorum has stored, if that entry
    /// is of this term (§5.4.2). Returns whether it moved.
    pub(crate) fn maybe_commit(&mut self) -> Result<bool, Error> {
        let quorum_index = self.tracker.committed_index().min(self.log.last_index());
        let advanced = if super::planted!(self.config, CommitEarlierTermByCounting) {
            let advanced = quorum_index > self.log.committed();
            self.log.commit_to(quorum_index);
            advanced
        } else {
            self.log.maybe_commit(quorum_index, self.term)?
        };
        if advanced {
            let committed = self.log.committed();
            self.uncommitted.on_commit(committed);
            if self.log.term_if_known(committed)? == Some(self.term) {
                self.on_first_commit_in_term()?;
            }
        }
        Ok(advanced)
    }

    /// The transport could not reach `id`: stop pipelining to it, probe.
    /// A snapshot in flight to it is taken as failed: its stream broke with
    /// the connection.
    pub(crate) fn report_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.tracker.progress_mut(id) {
            match progress.state() {
                ProgressState::Replicate => progress.become_probe(),
                ProgressState::Snapshot { .. } => progress.abort_snapshot(),
                ProgressState::Probe => {}
            }
        }
    }

    /// The runtime finished sending the snapshot to `id`, or failed to.
    pub(crate) fn report_snapshot(&mut self, id: NodeId, outcome: SnapshotOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.tracker.progress_mut(id) else {
            return;
        };
        let ProgressState::Snapshot { .. } = progress.state() else {
            return;
        };
        match outcome {
            // Probe from just past the snapshot; the follower's answer to
            // the next append confirms it installed it.
            SnapshotOutcome::Delivered => progress.become_probe(),
            // Back to probing from what it has: the next append finds the
            // entries compacted and sends a fresh snapshot.
            SnapshotOutcome::Failed => progress.abort_snapshot(),
        }
    }
}
