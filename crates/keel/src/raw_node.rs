//! [`RawNode`]: the public, IO-free driving interface.

use bytes::Bytes;

use crate::config::Config;
use crate::error::{Error, ProposalError};
use crate::message::Envelope;
use crate::raft::{Campaign, Raft, ReadMode, Role};
use crate::ready::{PersistMarker, Ready, SoftState};
use crate::status::{PeerStatus, Status};
use crate::storage::Storage;
use crate::tracker::ProgressState;
use crate::types::{Entry, EntryKind, HardState, Index, NodeId, Term};

/// A Raft node with no IO: feed it ticks, messages and proposals; take its
/// work out of [`Ready`]. See the crate documentation for a walk-through.
///
/// Every method that can fail returns [`Error`]. Refusals (a proposal with
/// no leader, a malformed message) change nothing; a fatal storage error
/// stops the node, and every later call returns [`Error::Stopped`].
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    ready_count: u64,
    /// The highest term and commit index `check_invariants` has seen, to
    /// check they never go back.
    observed_term: Term,
    observed_commit: Index,
    /// The latest term known to be durable (recovered from storage, or
    /// reported by `on_persisted`). Messages of a later term wait for the
    /// persist: a node that sent them and then lost the term in a crash
    /// could reuse it with a different log.
    durable_term: Term,
    /// The entries buffer of the last `Ready` given back through
    /// [`RawNode::advance`], emptied: the next `Ready` fills it instead of
    /// allocating. Invariant: empty.
    spare_entries: Vec<Entry>,
    /// The same for the committed entries buffer. Invariant: empty.
    spare_committed: Vec<Entry>,
}

/// The largest entries buffer [`RawNode::advance`] keeps for reuse.
const SPARE_ENTRIES_CAPACITY_MAX: usize = 1024;

/// Keeps `buffer`, emptied, as `spare` if it is the larger (unless it grew
/// large in a burst: a quiet node should not hold its peak).
fn keep_spare(spare: &mut Vec<Entry>, mut buffer: Vec<Entry>) {
    if buffer.capacity() <= SPARE_ENTRIES_CAPACITY_MAX && buffer.capacity() > spare.capacity() {
        buffer.clear();
        *spare = buffer;
    }
}

/// The core must be movable to the runtime's thread.
/// Moves every message of a term later than `durable_term` from the
/// send-now outbox to the after-persist one, keeping each outbox's order.
/// Pre-votes stay: they carry the term a candidate *would* campaign in and
/// promise nothing. Runs only in the rare `Ready` whose term is not yet
/// durable (a new term, a single voter's own election).
#[cold]
fn hold_until_durable(
    durable_term: Term,
    messages: &mut Vec<Envelope>,
    persisted_messages: &mut Vec<Envelope>,
) {
    let promises_term = |envelope: &Envelope| {
        let pre_vote = match &envelope.message {
            crate::Message::Vote(request) => request.kind == crate::VoteKind::PreVote,
            crate::Message::VoteResponse(response) => response.kind == crate::VoteKind::PreVote,
            _ => false,
        };
        envelope.term > durable_term && !pre_vote
    };
    if !messages.iter().any(promises_term) {
        return;
    }
    let (held, free): (Vec<Envelope>, Vec<Envelope>) =
        std::mem::take(messages).into_iter().partition(promises_term);
    *messages = free;
    // Held messages were meant to leave first: they go ahead of those that
    // already waited for this persist.
    let waiting = std::mem::replace(persisted_messages, held);
    persisted_messages.extend(waiting);
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<RawNode<crate::MemStorage>>();
};

impl<S: Storage> RawNode<S> {
    /// Starts a node from what `storage` holds (a new cluster's founders
    /// hold the initial membership; a restarted node its whole state).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Storage`] if
    /// the storage cannot be read or holds an invalid membership.
    pub fn new(config: &Config, storage: S) -> Result<Self, Error> {
        let raft = Raft::new(config, storage)?;
        let previous_hard_state = raft.hard_state();
        Ok(RawNode {
            previous_soft_state: SoftState {
                leader: raft.leader(),
                role: raft.role(),
            },
            previous_hard_state,
            ready_count: 0,
            observed_term: previous_hard_state.term,
            observed_commit: previous_hard_state.commit,
            durable_term: previous_hard_state.term,
            spare_entries: Vec::new(),
            spare_committed: Vec::new(),
            raft,
        })
    }

    /// Advances the logical clock by one tick: elections on followers,
    /// heartbeats and check-quorum on the leader.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.tick_by(1)
    }

    /// Advances the logical clock by `ticks` ticks at once: the runtime
    /// charges time that passed without ticking — a process pause, a VM
    /// stall, a thread that was not scheduled — so that the leader lease
    /// and the election and check-quorum timers see it. For those clocks it
    /// is `ticks` calls of [`tick`](Self::tick); what fires is handled once
    /// (at most one heartbeat round, one check-quorum, one campaign).
    /// `tick_by(0)` does nothing.
    ///
    /// A runtime that offers [`ReadMode::Lease`] reads must charge every
    /// tick its monotonic clock owes before it asks for one: a leader that
    /// was paused for longer than its lease must not answer from it (see
    /// [`Config::max_clock_drift_percent`]).
    ///
    /// ```
    /// use keel::{Config, MemStorage, ConfState, NodeId, RawNode, Role};
    ///
    /// let storage = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3].map(NodeId::new)));
    /// let mut node = RawNode::new(&Config::new(NodeId::new(1)), storage)?;
    /// // Paused for 25 ticks (longer than any election timeout): the node
    /// // campaigns (a pre-vote round) once, not once per missed timeout.
    /// node.tick_by(25)?;
    /// assert_eq!(node.status().role, Role::PreCandidate);
    /// # Ok::<(), keel::Error>(())
    /// ```
    pub fn tick_by(&mut self, ticks: u64) -> Result<(), Error> {
        if ticks == 0 {
            return Ok(());
        }
        self.raft.ensure_running()?;
        self.raft.charge_elapsed_ticks(ticks - 1);
        let result = if self.raft.role() == Role::Leader {
            self.raft.tick_leader()
        } else {
            self.raft.tick_election()
        };
        self.raft.stop_on_fatal(result)
    }

    /// Starts an election now (with pre-vote if configured), as if the
    /// election timeout had fired. Does nothing on a leader or a learner.
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let kind = if self.raft.config().pre_vote {
            Campaign::PreElection
        } else {
            Campaign::Election
        };
        let result = self.raft.campaign(kind);
        self.raft.stop_on_fatal(result)
    }

    /// Proposes `data` for the log. On a follower the proposal is forwarded
    /// to the leader; whether it commits is learnt by watching committed
    /// entries (the runtime tags proposals to match them), and a refusal
    /// by the leader comes back in [`Ready::refused_proposals`].
    ///
    /// # Errors
    /// [`ProposalError`] if refused: no leader, forwarding disabled, the
    /// uncommitted-bytes cap, a transfer in progress.
    pub fn propose(&mut self, data: Bytes) -> Result<(), Error> {
        self.propose_batch([data])
    }

    /// Proposes several payloads at once: one log append and one message per
    /// follower for the whole batch. All or none are accepted. The payloads
    /// are moved into the log (never cloned); on the leader, payloads of at
    /// most 1 KiB are copied into a buffer shared with their neighbours,
    /// which saves an allocation per entry — a state machine that keeps
    /// entry data for long should copy what it keeps.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use keel::{Config, ConfState, MemStorage, NodeId, RawNode};
    /// # let storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
    /// # let mut node = RawNode::new(&Config::new(NodeId::new(1)), storage)?;
    /// # node.campaign()?;
    /// let requests = vec![Bytes::from("set x = 1"), Bytes::from("set y = 2")];
    /// node.propose_batch(requests)?;
    /// # Ok::<(), keel::Error>(())
    /// ```
    pub fn propose_batch<I>(&mut self, batch: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Bytes>,
    {
        self.raft.ensure_running()?;
        let mut batch = batch.into_iter().map(|data| (EntryKind::Normal, data)).peekable();
        if batch.peek().is_none() {
            return Err(ProposalError::Malformed("empty batch").into());
        }
        let result = self.raft.propose(batch);
        self.raft.stop_on_fatal(result)
    }

    /// Hands a message from a peer to the protocol.
    ///
    /// # Errors
    /// [`StepError`](crate::StepError) for a message addressed elsewhere, a
    /// response from a non-member, or one that breaks the protocol; the node
    /// is unchanged. Stale messages are not errors: they are ignored.
    pub fn step(&mut self, envelope: Envelope) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let result = self.raft.step(envelope);
        self.raft.stop_on_fatal(result)
    }

    /// Reports how sending a snapshot to `id` ended. The runtime must call
    /// this after every snapshot it streams: while a snapshot is in flight
    /// the leader sends that follower nothing else, so a transfer that is
    /// never reported would pause it forever. `Failed` (or
    /// [`RawNode::report_unreachable`]) makes the leader probe again and,
    /// if the follower still needs it, send a fresh snapshot.
    pub fn report_snapshot(&mut self, id: NodeId, outcome: crate::SnapshotOutcome) {
        self.raft.report_snapshot(id, outcome);
    }

    /// Asks for a linearizable read (thesis §6.4). When confirmed, a later
    /// [`Ready::read_states`] holds a [`ReadState`](crate::ReadState) with the
    /// same `context` and the index to wait for: serve the read once the
    /// state machine has applied that index. On a follower the request is
    /// forwarded to the leader (always in [`ReadMode::Safe`]).
    ///
    /// # Errors
    /// [`ReadError::NoLeader`](crate::ReadError::NoLeader) when no leader is
    /// known; [`ReadError::LeaseWithoutCheckQuorum`](crate::ReadError::LeaseWithoutCheckQuorum)
    /// for a lease read without check-quorum.
    pub fn read_index(&mut self, context: Bytes, mode: ReadMode) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let result = self.raft.read_index(context, mode);
        self.raft.stop_on_fatal(result)
    }

    /// Hands leadership to `target` (thesis §3.10): the leader stops taking
    /// proposals, brings the target's log up to date and tells it to
    /// campaign at once. Watch [`Ready::soft_state`] for the outcome; the
    /// leader gives up after an election timeout. On a follower the request
    /// is forwarded to the leader.
    ///
    /// # Errors
    /// [`TransferError::NotVoter`](crate::TransferError::NotVoter) for a
    /// learner or unknown node, [`TransferError::NoLeader`](crate::TransferError::NoLeader)
    /// when no leader is known.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let result = self.raft.transfer_leader(target);
        self.raft.stop_on_fatal(result)
    }

    /// The transport could not deliver to `id`; the leader stops pipelining
    /// to it and probes until it answers again.
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raft.report_unreachable(id);
    }

    /// Whether [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        if raft.ensure_running().is_err() {
            return false;
        }
        let log = raft.log();
        self.soft_state() != self.previous_soft_state
            || raft.hard_state() != self.previous_hard_state
            || raft.has_messages()
            || raft.has_read_news()
            || raft.has_refused_proposals()
            || log.has_entries_to_persist()
            || log.snapshot_to_persist().is_some()
            || log.has_entries_to_apply(!raft.config().async_storage_writes)
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.raft.leader(),
            role: self.raft.role(),
        }
    }

    /// Takes the pending work. Everything in it counts as handed out: the
    /// next `Ready` holds only what is new.
    #[inline]
    pub fn ready(&mut self) -> Result<Ready, Error> {
        self.raft.ensure_running()?;
        let result = self.build_ready();
        self.raft.stop_on_fatal(result)
    }

    fn build_ready(&mut self) -> Result<Ready, Error> {
        self.raft.flush_broadcast()?;
        let soft_state = self.soft_state();
        let hard_state = self.raft.hard_state();
        let allow_unpersisted = !self.raft.config().async_storage_writes;
        let max_bytes = self.raft.config().max_committed_bytes_per_ready;
        let mut committed_entries = std::mem::take(&mut self.spare_committed);
        match self
            .raft
            .log()
            .entries_to_apply_into(allow_unpersisted, max_bytes, &mut committed_entries)
        {
            Ok(()) => {}
            Err(crate::log::ReadEntriesError::Fatal(error)) => return Err(error.into()),
            // Compacted or temporarily unavailable: retry on the next Ready
            // (the buffer is left empty).
            Err(_) => {}
        }
        let log = self.raft.log();
        let to_persist = log.unstable_entries_to_persist();
        let mut entries = if self.spare_entries.capacity() >= to_persist.len() {
            std::mem::take(&mut self.spare_entries)
        } else {
            Vec::with_capacity(to_persist.len())
        };
        debug_assert!(entries.is_empty());
        entries.extend(to_persist.cloned());
        let snapshot = log.snapshot_to_persist().cloned().map(Box::new);
        let hard_state_changed = hard_state != self.previous_hard_state;
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hard_state.term != self.previous_hard_state.term
            || hard_state.vote != self.previous_hard_state.vote;
        let persist_marker = PersistMarker {
            last_entry: entries.last().map(|entry| entry.log_id()),
            snapshot: snapshot.as_ref().map(|metadata| metadata.last.index),
            term: (hard_state.term != self.previous_hard_state.term).then_some(hard_state.term),
        };
        let mut messages = self.raft.take_messages();
        let mut persisted_messages = self.raft.take_messages_after_persist();
        if hard_state.term > self.durable_term
            && !crate::raft::planted!(self.raft.config(), SendBeforeTermDurable)
        {
            hold_until_durable(self.durable_term, &mut messages, &mut persisted_messages);
        }
        let last_committed = committed_entries.last().map(|entry| entry.index);
        self.ready_count += 1;
        self.raft.log_mut().accept_in_progress();
        if let Some(index) = last_committed {
            self.raft.log_mut().applying_to(index);
        }
        let soft_state_changed = soft_state != self.previous_soft_state;
        self.previous_soft_state = soft_state;
        self.previous_hard_state = hard_state;
        // Built as the return value, after every side effect: a `Ready` is
        // large, and this lets it be written in place rather than copied.
        Ok(Ready {
            number: self.ready_count,
            soft_state: soft_state_changed.then_some(soft_state),
            hard_state: hard_state_changed.then_some(hard_state),
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states: self.raft.take_read_states(),
            dropped_reads: self.raft.take_dropped_reads(),
            refused_proposals: self.raft.take_refused_proposals(),
            must_sync,
            persist_marker,
            last_committed,
        })
    }

    /// Acknowledges a `Ready` whose writes are durable and whose committed
    /// entries are applied (synchronous mode). Equivalent to
    /// [`RawNode::on_persisted`] followed by [`RawNode::on_applied`].
    pub fn advance(&mut self, mut ready: Ready) -> Result<(), Error> {
        self.on_persisted(ready.persist_marker())?;
        let applied = ready.last_committed_index().max(ready.persist_marker().snapshot);
        if let Some(index) = applied {
            self.on_applied(index)?;
        }
        // Keep the buffers for the next `Ready`.
        keep_spare(&mut self.spare_entries, std::mem::take(&mut ready.entries));
        keep_spare(
            &mut self.spare_committed,
            std::mem::take(&mut ready.committed_entries),
        );
        Ok(())
    }

    /// Reports that the writes of a `Ready` are durable. Reports must come
    /// in the order the `Ready`s were produced; a report about entries that
    /// a newer leader has since overwritten is ignored.
    pub fn on_persisted(&mut self, marker: PersistMarker) -> Result<(), Error> {
        self.raft.ensure_running()?;
        if let Some(term) = marker.term {
            self.durable_term = self.durable_term.max(term);
        }
        let result = self.raft.on_persisted(marker.last_entry, marker.snapshot);
        self.raft.stop_on_fatal(result)
    }

    /// Reports that the state machine applied every entry up to `index`
    /// (or restored a snapshot ending there).
    ///
    /// # Panics
    /// If `index` was never handed out for applying: a runtime bug.
    pub fn on_applied(&mut self, index: Index) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let result = self.raft.on_applied(index);
        self.raft.stop_on_fatal(result)
    }

    /// Proposes a membership change (§6). It takes effect on each node when
    /// that node applies the entry and calls [`RawNode::apply_conf_change`].
    /// Only one change may be pending: a second is refused until the first
    /// is applied on the leader.
    ///
    /// A two-node cluster cannot change membership with one node down:
    /// every change, adding a node as much as removing the dead one, must
    /// commit in the old configuration, whose quorum is both nodes. Run
    /// three voters (or grow to three *before* a node fails); a two-node
    /// cluster tolerates no failure at all.
    ///
    /// On a follower the change is forwarded and judged by the leader; if
    /// the leader refuses it (one is already pending, or it is invalid), it
    /// comes back in the follower's [`Ready::refused_proposals`] with the
    /// reason.
    ///
    /// # Errors
    /// [`ProposalError::ConfChangePending`](crate::ProposalError::ConfChangePending),
    /// [`ProposalError::InvalidConfChange`](crate::ProposalError::InvalidConfChange),
    /// and the errors of [`RawNode::propose`].
    pub fn propose_conf_change(&mut self, change: &crate::ConfChange) -> Result<(), Error> {
        self.raft.ensure_running()?;
        let entry = (change.entry_kind(), change.encode());
        let result = self.raft.propose(vec![entry]);
        self.raft.stop_on_fatal(result)
    }

    /// Applies a committed membership change (decode the entry's data with
    /// [`ConfChange::decode`](crate::ConfChange::decode)) and returns the new
    /// membership, which the runtime persists with the applied index. A
    /// leader removed by the change steps down, first telling its most
    /// up-to-date successor to campaign.
    ///
    /// # Errors
    /// [`Error::ConfChange`] if the change does not apply to the current
    /// membership; nothing changes.
    pub fn apply_conf_change(&mut self, change: &crate::ConfChange) -> Result<crate::ConfState, Error> {
        self.raft.ensure_running()?;
        let result = self.raft.apply_conf_change(change);
        self.raft.stop_on_fatal(result)
    }

    /// A snapshot of this node's state, for monitoring and tests.
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        let peers = if raft.role() == Role::Leader {
            raft.tracker()
                .iter()
                .map(|(id, progress)| PeerStatus {
                    id,
                    matched: progress.matched(),
                    next: progress.next(),
                    state: progress.state(),
                    probe_paused: progress.state() == ProgressState::Probe && progress.is_paused(),
                    recent_active: progress.recent_active(),
                    is_learner: progress.is_learner(),
                    inflight_messages: progress.inflights().count(),
                    inflight_bytes: progress.inflights().bytes(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: raft.id(),
            role: raft.role(),
            hard_state: raft.hard_state(),
            leader: raft.leader(),
            applied: raft.log().applied(),
            // A failed read is not fatal here; see `Status::first_index`.
            first_index: raft.log().first_index().ok(),
            last_index: raft.log().last_index(),
            conf_state: raft.tracker().conf_state(),
            uncommitted_bytes: raft.uncommitted_bytes(),
            transfer_target: raft.transfer_target(),
            pending_conf_index: raft.pending_conf_index(),
            randomized_election_timeout_ticks: raft.randomized_election_timeout_ticks(),
            peers,
        }
    }

    /// The storage the node reads from.
    pub fn storage(&self) -> &S {
        self.raft.log().storage()
    }

    /// The storage, for a runtime that writes through the same handle.
    pub fn storage_mut(&mut self) -> &mut S {
        self.raft.log_mut().storage_mut()
    }

    /// Checks every invariant of the node's state, and that term and commit
    /// index never went back since the last call. Tests and the simulator
    /// call it after every step.
    pub fn check_invariants(&mut self) -> Result<(), String> {
        self.raft.check_invariants()?;
        let hard_state = self.raft.hard_state();
        if hard_state.term < self.observed_term {
            return Err(format!(
                "term went back from {} to {}",
                self.observed_term, hard_state.term
            ));
        }
        if hard_state.commit < self.observed_commit {
            return Err(format!(
                "commit went back from {} to {}",
                self.observed_commit, hard_state.commit
            ));
        }
        self.observed_term = hard_state.term;
        self.observed_commit = hard_state.commit;
        Ok(())
    }
}
