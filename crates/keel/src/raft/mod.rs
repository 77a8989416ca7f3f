//! The protocol: one node's Raft state and the rules that move it.
//!
//! [`Raft::step`] handles terms and the messages every role treats alike
//! once, then dispatches on the role. Roles change only through the
//! `become_*` functions, which reject illegal transitions.

/// Whether the planted bug `$bug` is switched on; `false`, and compiled
/// away, without the `planted-bugs` feature.
macro_rules! planted {
    ($config:expr, $bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let planted = $config.planted_bug == Some(crate::PlantedBug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let planted = false;
        planted
    }};
}
pub(crate) use planted;

mod arena;
mod election;
mod follower;
mod leader;
mod membership;
mod read;
mod transfer;
mod uncommitted;

use std::sync::Arc;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::Config;
use crate::error::{Error, StepError, StorageError};
use crate::log::RaftLog;
use crate::message::{Envelope, Message};
use crate::storage::Storage;
use crate::tracker::ProgressTracker;
use crate::types::{HardState, Index, NodeId, Term};
pub(crate) use election::Campaign;
pub use leader::SnapshotOutcome;
use read::Reads;
pub use read::{ReadMode, ReadState};
use uncommitted::Uncommitted;

/// A node's role in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote round: asks whether it could win before raising its
    /// term (thesis §9.6).
    PreCandidate,
    /// Campaigns for votes in a new term (§5.2).
    Candidate,
    /// Leads the cluster in its term.
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// One node's protocol state.
pub(crate) struct Raft<S> {
    id: NodeId,
    /// Invariant: never decreases.
    term: Term,
    /// Invariant: `vote == Some(id)` while a candidate.
    vote: Option<NodeId>,
    role: Role,
    /// Invariant: `leader == Some(id)` exactly when `role == Leader`.
    leader: Option<NodeId>,
    log: RaftLog<S>,
    tracker: ProgressTracker,
    config: Config,
    rng: Xoshiro256PlusPlus,
    /// Ticks since the last election timeout reset (followers, candidates)
    /// or since the last check-quorum (leader).
    election_elapsed_ticks: u64,
    heartbeat_elapsed_ticks: u64,
    /// Invariant: in `[election_timeout_ticks_min, election_timeout_ticks_max)`.
    randomized_election_timeout_ticks: u64,
    /// Messages that may be sent at once.
    messages: Vec<Envelope>,
    /// Messages that may be sent only once the current `Ready`'s writes are
    /// durable: they promise something about this node's disk.
    messages_after_persist: Vec<Envelope>,
    uncommitted: Uncommitted,
    /// The leader appended entries or advanced its commit index; followers
    /// are told when the next `Ready` is built, so a burst of proposals
    /// goes out as one message per follower.
    broadcast_pending: bool,
    /// The index of the latest configuration change in the log (leader).
    pending_conf_index: Index,
    /// A second leader claimed this node's term: a safety violation that
    /// `check_invariants` reports.
    conflicting_leader: Option<(Term, NodeId, NodeId)>,
    /// Set on a fatal storage error; every later call fails with it.
    stopped: Option<Arc<str>>,
    /// The leader's read bookkeeping.
    reads: Reads,
    /// Answered reads, for the next `Ready`.
    read_states: Vec<ReadState>,
    /// Contexts of local reads abandoned when leadership was lost.
    dropped_reads: Vec<bytes::Bytes>,
    /// This node's forwarded proposals that the leader refused, for the
    /// next `Ready`.
    refused_proposals: Vec<crate::message::RefusedProposal>,
    /// The node leadership is being transferred to (leader only).
    transfer_target: Option<NodeId>,
    /// Leader ticks since the transfer started.
    transfer_elapsed_ticks: u64,
    /// Where the leader copies small proposal payloads.
    arena: arena::PayloadArena,
}

/// Pushes onto an outbox. Every `Ready` hands the outbox out whole, so most
/// pushes land in an empty vector: it is given room for a few messages at
/// once instead of growing one by one.
fn push_message(outbox: &mut Vec<Envelope>, envelope: Envelope) {
    const FIRST_CAPACITY: usize = 8;
    if outbox.capacity() == 0 {
        *outbox = Vec::with_capacity(FIRST_CAPACITY);
    }
    outbox.push(envelope);
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(config: &Config, storage: S) -> Result<Self, Error> {
        config.validate()?;
        let initial = storage.initial_state()?;
        initial
            .conf_state
            .validate()
            .map_err(|error| StorageError::Failed(format!("stored membership is invalid: {error}").into()))?;
        let hard_state = initial.hard_state;
        if hard_state.term > Term::LIMIT {
            return Err(StorageError::TermBeyondLimit(hard_state.term).into());
        }
        let mut log = RaftLog::new(storage, hard_state.commit, config.applied)?;
        log.set_apply_before_commit(planted!(config, ApplyBeforeCommit));
        let mut tracker = ProgressTracker::new(config.max_inflight_messages, config.max_inflight_bytes);
        tracker.apply_conf_state(&initial.conf_state, log.last_index().next());
        let mut raft = Raft {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            tracker,
            config: config.clone(),
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: config.election_timeout_ticks_min,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            uncommitted: Uncommitted::default(),
            broadcast_pending: false,
            pending_conf_index: Index::ZERO,
            conflicting_leader: None,
            stopped: None,
            reads: Reads::default(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            refused_proposals: Vec::new(),
            transfer_target: None,
            transfer_elapsed_ticks: 0,
            arena: arena::PayloadArena::default(),
        };
        raft.reset_randomized_election_timeout();
        Ok(raft)
    }

    // ----- accessors -------------------------------------------------------

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn log(&self) -> &RaftLog<S> {
        &self.log
    }

    pub(crate) fn log_mut(&mut self) -> &mut RaftLog<S> {
        &mut self.log
    }

    pub(crate) fn tracker(&self) -> &ProgressTracker {
        &self.tracker
    }

    pub(crate) fn hard_state(&self) -> HardState {
        let vote = if planted!(self.config, ForgetToPersistVote) {
            None
        } else {
            self.vote
        };
        HardState {
            term: self.term,
            vote,
            commit: self.log.committed(),
        }
    }

    pub(crate) fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted.bytes()
    }

    pub(crate) fn randomized_election_timeout_ticks(&self) -> u64 {
        self.randomized_election_timeout_ticks
    }

    pub(crate) fn take_messages(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.messages)
    }

    pub(crate) fn take_messages_after_persist(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.messages_after_persist)
    }

    pub(crate) fn has_messages(&self) -> bool {
        !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || self.broadcast_pending
            || self.read_round_wanted()
    }

    pub(crate) fn has_read_news(&self) -> bool {
        !self.read_states.is_empty() || !self.dropped_reads.is_empty()
    }

    pub(crate) fn has_refused_proposals(&self) -> bool {
        !self.refused_proposals.is_empty()
    }

    pub(crate) fn take_refused_proposals(&mut self) -> Vec<crate::message::RefusedProposal> {
        std::mem::take(&mut self.refused_proposals)
    }

    pub(crate) fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    pub(crate) fn take_dropped_reads(&mut self) -> Vec<bytes::Bytes> {
        std::mem::take(&mut self.dropped_reads)
    }

    pub(crate) fn transfer_target(&self) -> Option<NodeId> {
        self.transfer_target
    }

    pub(crate) fn pending_conf_index(&self) -> Index {
        self.pending_conf_index
    }

    /// Fails if an earlier fatal error stopped the node.
    pub(crate) fn ensure_running(&self) -> Result<(), Error> {
        match &self.stopped {
            Some(reason) => Err(Error::Stopped(reason.clone())),
            None => Ok(()),
        }
    }

    /// Turns a fatal error into a stop: the node refuses every later call.
    /// Inlined so that a large `Ok` value (a `Ready`) is not copied
    /// through it.
    #[inline]
    pub(crate) fn stop_on_fatal<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result {
            self.record_fatal(error);
        }
        result
    }

    #[cold]
    #[inline(never)]
    fn record_fatal(&mut self, error: &Error) {
        if error.is_fatal() && self.stopped.is_none() {
            self.stopped = Some(error.to_string().into());
        }
    }

    // ----- sending -----------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message) {
        self.send_with_term(to, self.term, message);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, message: Message) {
        push_message(&mut self.messages, Envelope::new(self.id, to, term, message));
    }

    fn send_after_persist(&mut self, to: NodeId, term: Term, message: Message) {
        let envelope = Envelope::new(self.id, to, term, message);
        push_message(&mut self.messages_after_persist, envelope);
    }

    // ----- the one step --------------------------------------------------------

    /// Handles one message from a peer.
    pub(crate) fn step(&mut self, envelope: Envelope) -> Result<(), Error> {
        if envelope.to != self.id {
            return Err(StepError::WrongRecipient {
                to: envelope.to,
                local: self.id,
            }
            .into());
        }
        if envelope.from == self.id || envelope.from == NodeId::ZERO {
            return Err(StepError::Malformed {
                from: envelope.from,
                reason: "sender is this node or id 0",
            }
            .into());
        }
        if envelope.term > Term::LIMIT || envelope.term.get() > self.term.get().saturating_add(Term::JUMP_MAX)
        {
            // Found by the simulator's forged messages: a term accepted up
            // to the limit itself left a cluster there, unable to elect.
            return Err(StepError::Malformed {
                from: envelope.from,
                reason: "a term beyond keel's limits",
            }
            .into());
        }
        // Everything that can be checked on the message alone is checked
        // before anything changes: a malformed message (forged, or from a
        // broken peer) must not move the term, the known leader or the
        // role on its way to being refused (found by the simulator's
        // forged messages).
        if let Some(reason) = envelope.message.out_of_range() {
            return Err(StepError::Malformed {
                from: envelope.from,
                reason,
            }
            .into());
        }
        follower::validate_structure(envelope.from, envelope.term, &envelope.message)?;
        if let Message::Snapshot(metadata) = &envelope.message {
            self.check_snapshot_includes_self(envelope.from, metadata)?;
        }
        if envelope.term > self.term {
            if !self.on_higher_term(&envelope)? {
                return Ok(());
            }
        } else if envelope.term < self.term {
            self.on_lower_term(&envelope)?;
            return Ok(());
        }
        if let Message::Vote(request) = envelope.message {
            return self.handle_vote_request(envelope.from, envelope.term, request);
        }
        if let Message::ReadIndexRefused(request) = envelope.message {
            // This node forwarded the read to a node that is not leader.
            self.dropped_reads.push(request.context);
            return Ok(());
        }
        if let Message::ProposalRefused(refused) = envelope.message {
            // This node forwarded them; whatever its role now, their
            // callers are waiting.
            self.refused_proposals.push(refused);
            return Ok(());
        }
        match self.role {
            Role::Follower => self.step_follower(envelope),
            Role::PreCandidate | Role::Candidate => self.step_candidate(envelope),
            Role::Leader => self.step_leader(envelope),
        }
    }

    /// A message from a later term. Returns whether to go on handling it.
    fn on_higher_term(&mut self, envelope: &Envelope) -> Result<bool, Error> {
        use crate::message::{ElectionReason, VoteKind};
        match &envelope.message {
            Message::Vote(request) => {
                // §4.2.3 of the thesis: a node that heard from a leader within
                // the minimum election timeout ignores vote requests, so a
                // removed or partitioned server cannot depose a live leader.
                // A transfer is the leader's own wish and passes.
                if request.reason != ElectionReason::Transfer && self.in_leader_lease() {
                    return Ok(false);
                }
                if request.kind == VoteKind::Vote {
                    self.become_follower(envelope.term, None);
                }
                // A pre-vote changes no state.
                Ok(true)
            }
            Message::VoteResponse(response) if response.kind == VoteKind::PreVote && response.granted => {
                // A granted pre-vote carries the term we would campaign in.
                Ok(true)
            }
            Message::Append(_) | Message::Heartbeat(_) | Message::Snapshot(_) => {
                self.become_follower(envelope.term, Some(envelope.from));
                Ok(true)
            }
            _ => {
                self.become_follower(envelope.term, None);
                Ok(true)
            }
        }
    }

    /// A message from an earlier term: mostly ignored, but a stale leader is
    /// told the current term so it steps down, and a pre-candidate learns it
    /// cannot win.
    fn on_lower_term(&mut self, envelope: &Envelope) -> Result<(), Error> {
        use crate::message::{HeartbeatResponse, VoteKind, VoteResponse};
        match &envelope.message {
            Message::Append(_) | Message::Heartbeat(_) => {
                // Without this, a leader cut off by a partition would, once
                // healed, keep ignoring the higher term it never hears (with
                // check-quorum or pre-vote the others do not campaign against
                // it with higher terms).
                self.send(
                    envelope.from,
                    Message::HeartbeatResponse(HeartbeatResponse {
                        read_round: None,
                        priority: self.config.priority,
                    }),
                );
            }
            Message::ReadIndex(request) => {
                // Refused back with our term: the requester learns it is
                // behind and fails its caller at once.
                self.send(envelope.from, Message::ReadIndexRefused(request.clone()));
            }
            Message::Vote(request) if request.kind == VoteKind::PreVote => {
                let response = VoteResponse {
                    kind: VoteKind::PreVote,
                    granted: false,
                };
                self.send(envelope.from, Message::VoteResponse(response));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether this node heard from a leader (or is one) within the minimum
    /// election timeout, with check-quorum on.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed_ticks < self.config.election_timeout_ticks_min
    }

    /// Records `leader` as the leader of the current term, noting a second
    /// leader in the same term as a safety violation.
    fn set_leader(&mut self, leader: NodeId) {
        if let Some(known) = self.leader {
            if known != leader && self.conflicting_leader.is_none() {
                self.conflicting_leader = Some((self.term, known, leader));
            }
        }
        self.leader = Some(leader);
    }

    // ----- role transitions ------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "term moving back from {} to {term}", self.term);
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.drop_reads();
        self.transfer_target = None;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_randomized_election_timeout();
        self.tracker.reset_votes();
        let next = self.log.last_index().next();
        self.tracker.reset_progress(next);
        self.uncommitted.reset();
        self.broadcast_pending = false;
    }

    fn reset_randomized_election_timeout(&mut self) {
        let span = self.config.election_timeout_ticks_max - self.config.election_timeout_ticks_min;
        self.randomized_election_timeout_ticks =
            self.config.election_timeout_ticks_min + self.rng.next_u64() % span;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        if let Some(leader) = leader {
            self.set_leader(leader);
        }
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a pre-candidate");
        // No reset: a pre-vote changes neither term nor vote.
        self.tracker.reset_votes();
        self.role = Role::PreCandidate;
        self.leader = None;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a candidate");
        self.reset(self.term.next());
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) -> Result<(), Error> {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let persisted = self.log.persisted_index();
        let id = self.id;
        if let Some(progress) = self.tracker.progress_mut(id) {
            if let Some(persisted) = persisted {
                progress.maybe_update(persisted);
            }
            progress.become_replicate();
            progress.set_recent_active(true);
        }
        // A configuration change may be in the log and not yet applied:
        // it stays pending until this leader applies it.
        self.pending_conf_index = self.last_unapplied_conf_change()?;
        // An empty entry of the new term lets the leader commit everything
        // before it (§5.4.2) and learn the commit index (§8).
        self.append_entries(std::iter::once((
            crate::types::EntryKind::Normal,
            bytes::Bytes::new(),
        )))?;
        Ok(())
    }

    // ----- time ------------------------------------------------------------------

    /// Charges `ticks` ticks that passed without ticking (a process pause, a
    /// stalled thread) to every clock: the lease, the election timeout,
    /// check-quorum, heartbeats and a transfer's deadline. Whatever those
    /// clocks fire is left to the next regular tick, so a long pause causes
    /// at most one heartbeat, one check-quorum and one campaign.
    pub(crate) fn charge_elapsed_ticks(&mut self, ticks: u64) {
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(ticks);
        if self.role == Role::Leader {
            self.charge_read_ticks(ticks);
            self.heartbeat_elapsed_ticks = self.heartbeat_elapsed_ticks.saturating_add(ticks);
            if self.transfer_target.is_some() {
                self.transfer_elapsed_ticks = self.transfer_elapsed_ticks.saturating_add(ticks);
            }
        }
    }

    // ----- persistence and applying feedback -----------------------------------

    /// The runtime made the log durable up to `last` (and the snapshot at
    /// `snapshot`, if any).
    pub(crate) fn on_persisted(
        &mut self,
        last: Option<crate::types::LogId>,
        snapshot: Option<Index>,
    ) -> Result<(), Error> {
        if let Some(index) = snapshot {
            self.log.stable_snapshot_to(index);
        }
        if let Some(log_id) = last {
            self.log.stable_to(log_id);
        }
        if self.role == Role::Leader {
            if let Some(persisted) = self.log.persisted_index() {
                let id = self.id;
                let updated = self
                    .tracker
                    .progress_mut(id)
                    .is_some_and(|progress| progress.maybe_update(persisted));
                if updated && persisted > self.log.committed() && self.maybe_commit()? {
                    // Followers learn the new commit index at the next flush.
                    self.broadcast_pending = true;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.log.check_invariants()?;
        self.arena.check_invariants()?;
        self.tracker.check_invariants()?;
        self.tracker
            .conf_state()
            .validate()
            .map_err(|error| format!("membership invalid: {error}"))?;
        if let Some((term, first, second)) = self.conflicting_leader {
            return Err(format!("two leaders in term {term}: {first} and {second}"));
        }
        if (self.role == Role::Leader) != (self.leader == Some(self.id)) {
            return Err(format!("role {} but leader {:?}", self.role, self.leader));
        }
        if self.role == Role::Candidate && self.vote != Some(self.id) {
            return Err(format!("candidate voted for {:?}", self.vote));
        }
        let timeout = self.randomized_election_timeout_ticks;
        if timeout < self.config.election_timeout_ticks_min
            || timeout >= self.config.election_timeout_ticks_max
        {
            return Err(format!("randomized election timeout {timeout} out of range"));
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted_index().unwrap_or(Index::ZERO);
            if let Some(progress) = self.tracker.progress(self.id) {
                if progress.matched() > persisted {
                    return Err(format!(
                        "leader counts itself at {} but only {persisted} is durable",
                        progress.matched()
                    ));
                }
            }
        }
        self.check_read_invariants()?;
        if self.transfer_target.is_some() && self.role != Role::Leader {
            return Err(format!("transfer target set on a {}", self.role));
        }
        self.uncommitted.check_invariants()
    }
}
