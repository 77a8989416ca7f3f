//! The raft loop: one task owns the [`RawNode`] and turns ticks, peer
//! messages, client requests and completion reports into `Ready`s, which it
//! hands to the disk thread, the transport and the applier. It never waits
//! for disk or network IO itself.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use keel::{
    ConfChange, Error as CoreError, Index, MemStorage, Message, NodeId, RawNode, ReadMode, Ready,
    RefusalReason, RefusedProposal, Role, SnapshotOutcome,
};
use keel_log::SnapshotStore;
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{ApplyEvent, ApplyJob, PendingWrites, ReadResponder, WriteResponder};
use crate::clock::TickClock;
use crate::config::NodeConfig;
use crate::consistency::Consistency;
use crate::data_dir::DataDirectory;
use crate::disk::{DiskEvent, DiskJob, PersistJob};
use crate::error::{self, NodeError};
use crate::halt::Halt;
use crate::members::{AddressBook, ChangeContext};
use crate::metrics::Metrics;
use crate::removal::{RefusalWatch, Removal};
use crate::request::{tagged, RequestId, RequestIds};
use crate::state_machine::StateMachine;
use crate::status::NodeStatus;

mod membership;
use crate::transport::{Inbound, Transport};

type Responder<T> = oneshot::Sender<Result<T, NodeError>>;

/// A request from a handle to the raft loop.
pub(crate) enum Request<M: StateMachine> {
    Write {
        command: Bytes,
        responder: WriteResponder<M>,
    },
    Read {
        query: M::Query,
        consistency: Consistency,
        responder: ReadResponder<M>,
    },
    ChangeMembership {
        change: ConfChange,
        added: AddressBook,
        responder: Responder<()>,
    },
    TransferLeader {
        target: NodeId,
        responder: Responder<()>,
    },
    Status {
        responder: oneshot::Sender<NodeStatus>,
    },
    Shutdown {
        responder: oneshot::Sender<()>,
    },
}

/// What woke the raft loop.
enum Wake<M: StateMachine> {
    /// The next tick fell due.
    TickDue,
    Inbound(Inbound),
    Request(Request<M>),
    Disk(DiskEvent),
    Apply(ApplyEvent),
}

/// The channels the raft loop listens on.
pub(crate) struct ActorInputs<M: StateMachine> {
    pub(crate) requests: mpsc::Receiver<Request<M>>,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    pub(crate) disk_events: mpsc::UnboundedReceiver<DiskEvent>,
    pub(crate) apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
}

pub(crate) struct Actor<M: StateMachine> {
    pub(crate) config: NodeConfig,
    pub(crate) raw: RawNode<MemStorage>,
    /// The ticks owed to `raw` by the monotonic clock.
    pub(crate) clock: TickClock,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) members: AddressBook,
    /// Former members the transport forgets at the given time.
    pub(crate) leaving_peers: Vec<(tokio::time::Instant, NodeId)>,
    pub(crate) disk: mpsc::UnboundedSender<DiskJob>,
    pub(crate) applier: mpsc::UnboundedSender<ApplyJob<M>>,
    pub(crate) snapshots: Arc<Mutex<SnapshotStore>>,
    pub(crate) pending_writes: PendingWrites<M>,
    pub(crate) pending_reads: HashMap<RequestId, (Instant, M::Query, ReadResponder<M>)>,
    pub(crate) pending_changes: HashMap<RequestId, (Instant, Responder<()>)>,
    /// Membership requests whose entry is committed, answered once it is
    /// applied: only then does the leader accept the next change.
    pub(crate) changes_awaiting_apply: Vec<(Index, Responder<()>, Result<(), NodeError>)>,
    pub(crate) transfer_waiters: Vec<(Instant, NodeId, Responder<()>)>,
    /// Data files of snapshots received and stepped, by snapshot index.
    pub(crate) received_snapshots: BTreeMap<Index, PathBuf>,
    /// This life's request ids: what comes back from the protocol is
    /// matched to its caller by them, and no id of an earlier life equals
    /// one of this life (see `request.rs`).
    pub(crate) request_ids: RequestIds,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) fatal: Option<String>,
    /// How this node learned it is no longer a member, once it has.
    pub(crate) removed: Option<Removal>,
    pub(crate) refusal_watch: RefusalWatch,
    /// Announces why the node stopped serving (see `NodeHandle::halted`).
    pub(crate) halt: watch::Sender<Option<Halt>>,
    /// The leader known at the last role change, to log leader changes.
    pub(crate) known_leader: Option<NodeId>,
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
    /// This node's hold on its data directory, released once the disk and
    /// apply threads are done with it.
    pub(crate) data_directory: Option<DataDirectory>,
}

/// Most events taken from one channel before the loop builds a `Ready`:
/// batching without starving the other channels.
const DRAIN_BATCH: usize = 256;

impl<M: StateMachine> Actor<M> {
    pub(crate) async fn run(mut self, mut inputs: ActorInputs<M>) {
        // The timer only wakes the loop; the ticks themselves are measured
        // by `self.clock` (see `charge_owed_ticks`).
        let tick_due = tokio::time::sleep_until(self.clock.next_tick_at());
        tokio::pin!(tick_due);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while shutdown.is_none() {
            let wake = tokio::select! {
                () = &mut tick_due => Wake::TickDue,
                Some(event) = inputs.inbound.recv() => Wake::Inbound(event),
                Some(request) = inputs.requests.recv() => Wake::Request(request),
                Some(event) = inputs.disk_events.recv() => Wake::Disk(event),
                Some(event) = inputs.apply_events.recv() => Wake::Apply(event),
                else => break,
            };
            // Time first: whatever woke the loop, it is handled with the
            // clock brought up to date, however long the loop waited or
            // the process was stopped. After a SIGCONT, `select!` may well
            // hand over a read or a peer message before the timer.
            self.charge_owed_ticks();
            shutdown = self.handle_wake(wake, &mut inputs);
            self.process_ready();
            self.retire_leaving_peers();
            let next_tick_at = self.clock.next_tick_at();
            if tick_due.deadline() != next_tick_at {
                tick_due.as_mut().reset(next_tick_at);
            }
        }
        self.stop();
        if let Some(responder) = shutdown {
            let _ = responder.send(());
        }
    }

    /// Handles what woke the loop, and whatever else is already waiting on
    /// the same channel. Returns the shutdown responder when asked to stop.
    fn handle_wake(&mut self, wake: Wake<M>, inputs: &mut ActorInputs<M>) -> Option<oneshot::Sender<()>> {
        match wake {
            // Charged already.
            Wake::TickDue => {}
            Wake::Inbound(event) => {
                self.on_inbound(event);
                for _ in 0..DRAIN_BATCH {
                    match inputs.inbound.try_recv() {
                        Ok(event) => self.on_inbound(event),
                        Err(_) => break,
                    }
                }
            }
            Wake::Request(request) => {
                let mut shutdown = self.on_request(request);
                for _ in 0..DRAIN_BATCH {
                    if shutdown.is_some() {
                        break;
                    }
                    match inputs.requests.try_recv() {
                        Ok(request) => shutdown = self.on_request(request),
                        Err(_) => break,
                    }
                }
                return shutdown;
            }
            Wake::Disk(event) => {
                self.on_disk_event(event);
                while let Ok(event) = inputs.disk_events.try_recv() {
                    self.on_disk_event(event);
                }
            }
            Wake::Apply(event) => {
                self.on_apply_event(event);
                while let Ok(event) = inputs.apply_events.try_recv() {
                    self.on_apply_event(event);
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        let _ = self.disk.send(DiskJob::Shutdown);
        let _ = self.applier.send(ApplyJob::Shutdown);
        self.fail_all(NodeError::ShuttingDown);
        self.halt.send_if_modified(|halt| {
            let first = halt.is_none();
            halt.get_or_insert(Halt::ShutDown);
            first
        });
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Before the shutdown is acknowledged: whoever waited for it may
        // start a node on the directory at once.
        self.data_directory = None;
    }

    /// Stops the protocol after a fatal error; requests get the reason.
    fn fail(&mut self, reason: String) {
        if self.fatal.is_none() {
            tracing::error!(node = %self.config.id, %reason, "fatal error: the node stops");
            self.fatal = Some(reason.clone());
            self.halt.send_replace(Some(Halt::Fatal(reason.clone())));
            self.fail_all(NodeError::Fatal(reason));
        }
    }

    fn fail_all(&mut self, error: NodeError) {
        let writes: Vec<_> = self.writes().drain().collect();
        for (_, (_, responder)) in writes {
            let _ = responder.send(Err(error.clone()));
        }
        for (_, (_, _, responder)) in self.pending_reads.drain() {
            let _ = responder.send(Err(error.clone()));
        }
        for (_, (_, responder)) in self.pending_changes.drain() {
            let _ = responder.send(Err(error.clone()));
        }
        for (_, responder, _) in self.changes_awaiting_apply.drain(..) {
            let _ = responder.send(Err(error.clone()));
        }
        for (_, _, responder) in self.transfer_waiters.drain(..) {
            let _ = responder.send(Err(error.clone()));
        }
    }

    /// Handles a core error: fatal ones stop the node, refusals are logged.
    fn on_core_result(&mut self, result: Result<(), CoreError>, what: &str) {
        match result {
            Ok(()) => {}
            Err(error) if error.is_fatal() => self.fail(format!("{what}: {error}")),
            Err(error) => tracing::debug!(node = %self.config.id, %error, "{what} refused"),
        }
    }

    /// Charges the core every tick the monotonic clock owes: one per tick
    /// interval since the last charge, however many timer wake-ups were
    /// missed. A leader's lease is counted in these ticks, so a pause (a
    /// stopped process, a stalled machine) shortens it by as much real time
    /// as it took, and the core refuses a lease read it would otherwise
    /// answer from a lease another leader may have outlived. One clock read
    /// and, between ticks, one comparison.
    fn charge_owed_ticks(&mut self) {
        let owed_ticks = self.clock.owed_ticks(tokio::time::Instant::now());
        // A removed node no longer ticks: it would only campaign among
        // members that refuse it.
        if owed_ticks == 0 || self.fatal.is_some() || self.removed.is_some() {
            return;
        }
        if owed_ticks >= self.config.raft.election_timeout_ticks_min {
            let tick_ms = u64::try_from(self.config.tick_interval.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(
                node = %self.config.id,
                owed_ticks,
                stalled_ms = tick_ms.saturating_mul(owed_ticks),
                "the raft loop did not run for an election timeout (process stopped or starved); charged to the lease and the timers"
            );
        }
        let result = self.raw.tick_by(owed_ticks);
        self.on_core_result(result, "tick");
        self.prune_expired();
    }

    /// Forgets requests whose callers have given up, so abandoned
    /// requests cannot accumulate.
    fn prune_expired(&mut self) {
        let deadline = self.config.request_timeout * 2;
        let now = Instant::now();
        let expired = |since: &Instant| now.duration_since(*since) > deadline;
        self.pending_reads.retain(|_, (since, _, _)| !expired(since));
        self.pending_changes.retain(|_, (since, _)| !expired(since));
        self.transfer_waiters.retain(|(since, _, _)| !expired(since));
        self.writes().retain(|_, (since, _)| !expired(since));
    }

    fn on_inbound(&mut self, event: Inbound) {
        if self.fatal.is_some() {
            return;
        }
        match event {
            Inbound::Message(envelope) if matches!(envelope.message, Message::Snapshot(_)) => {
                // A snapshot travels with its data (`SnapshotReceived`);
                // stepped without it, the core would accept a snapshot this
                // node cannot install, and the node would stop.
                tracing::warn!(node = %self.config.id, from = %envelope.from, "snapshot message without its data dropped");
            }
            Inbound::Message(envelope) => {
                self.refusal_watch
                    .heard_from(envelope.from, tokio::time::Instant::now());
                let result = self.raw.step(envelope);
                self.on_core_result(result, "step");
            }
            Inbound::Unreachable(id) => self.raw.report_unreachable(id),
            Inbound::Refused { peer, status } => self.on_refused(peer, status),
            Inbound::SnapshotReceived { envelope, data_path } => {
                let Message::Snapshot(metadata) = &envelope.message else {
                    let _ = std::fs::remove_file(&data_path);
                    return;
                };
                tracing::info!(node = %self.config.id, from = %envelope.from, snapshot = %metadata.last, "snapshot received");
                if let Some(previous) = self.received_snapshots.insert(metadata.last.index, data_path) {
                    let _ = std::fs::remove_file(previous);
                }
                let result = self.raw.step(envelope);
                self.on_core_result(result, "snapshot");
            }
            Inbound::SnapshotSent { to, outcome } => {
                let delivered = matches!(outcome, SnapshotOutcome::Delivered);
                self.metrics.count_snapshot_sent(delivered);
                if delivered {
                    tracing::info!(node = %self.config.id, to = %to, "snapshot sent");
                } else {
                    tracing::warn!(node = %self.config.id, to = %to, "snapshot transfer failed; it will be retried");
                }
                self.raw.report_snapshot(to, outcome)
            }
        }
    }

    fn pending_count(&self) -> usize {
        let writes = self.writes().len();
        writes + self.pending_reads.len()
    }

    /// Returns the shutdown responder when asked to stop.
    fn on_request(&mut self, request: Request<M>) -> Option<oneshot::Sender<()>> {
        if let Request::Shutdown { responder } = request {
            return Some(responder);
        }
        if let Request::Status { responder } = request {
            let _ = responder.send(self.status());
            return None;
        }
        if let Some(reason) = &self.fatal {
            let error = NodeError::Fatal(reason.clone());
            match request {
                Request::Write { responder, .. } => drop(responder.send(Err(error))),
                Request::Read { responder, .. } => drop(responder.send(Err(error))),
                Request::ChangeMembership { responder, .. } | Request::TransferLeader { responder, .. } => {
                    drop(responder.send(Err(error)))
                }
                Request::Status { .. } | Request::Shutdown { .. } => {}
            }
            return None;
        }
        if self.removed.is_some() {
            self.on_request_when_removed(request);
            return None;
        }
        if self.pending_count() >= self.config.max_pending_requests {
            let error = NodeError::Overloaded(format!(
                "{} requests are waiting, the most this node takes",
                self.config.max_pending_requests
            ));
            match request {
                Request::Write { responder, .. } => drop(responder.send(Err(error))),
                Request::Read { responder, .. } => drop(responder.send(Err(error))),
                other => self.handle_request(other),
            }
            return None;
        }
        self.handle_request(request);
        None
    }

    fn handle_request(&mut self, request: Request<M>) {
        match request {
            Request::Write { command, responder } => self.write(command, responder),
            Request::Read {
                query,
                consistency,
                responder,
            } => self.read(query, consistency, responder),
            Request::ChangeMembership {
                change,
                added,
                responder,
            } => self.change_membership(change, added, responder),
            Request::TransferLeader { target, responder } => self.transfer_leader(target, responder),
            Request::Status { .. } | Request::Shutdown { .. } => {}
        }
    }

    fn write(&mut self, command: Bytes, responder: WriteResponder<M>) {
        let request = self.request_ids.next();
        let data = tagged::encode(self.config.id, request, &command);
        // Registered before proposing: the entry may be applied before the
        // next line of this loop runs again.
        self.writes().insert(request, (Instant::now(), responder));
        self.metrics.count_proposal();
        if let Err(error) = self.raw.propose(data) {
            self.fail_write(request, error::from_core(&error));
            if error.is_fatal() {
                self.fail(error.to_string());
            }
        }
    }

    fn read(&mut self, query: M::Query, consistency: Consistency, responder: ReadResponder<M>) {
        let mode = match consistency {
            Consistency::Stale => {
                // Index zero is always applied: answered at once.
                let _ = self.applier.send(ApplyJob::Read {
                    index: Index::ZERO,
                    query,
                    responder,
                });
                return;
            }
            Consistency::Linearizable => ReadMode::Safe,
            Consistency::Lease => {
                // The lease is judged by the clock as it is now, not as it
                // was when the loop woke: draining a batch takes time, and
                // the process may have been stopped in between.
                self.charge_owed_ticks();
                ReadMode::Lease
            }
        };
        let request = self.request_ids.next();
        match self.raw.read_index(request.to_read_context(), mode) {
            Ok(()) => {
                self.pending_reads
                    .insert(request, (Instant::now(), query, responder));
            }
            Err(error) => {
                let _ = responder.send(Err(error::from_core(&error)));
            }
        }
    }

    fn transfer_leader(&mut self, target: NodeId, responder: Responder<()>) {
        if self.raw.status().leader == Some(target) {
            let _ = responder.send(Ok(()));
            return;
        }
        match self.raw.transfer_leader(target) {
            Ok(()) => self.transfer_waiters.push((Instant::now(), target, responder)),
            Err(error) => {
                let _ = responder.send(Err(error::from_core(&error)));
            }
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            raft: self.raw.status(),
            members: self.members.clone(),
            fatal: self.fatal.clone(),
            removed: self.removed.clone(),
        }
    }

    fn on_disk_event(&mut self, event: DiskEvent) {
        match event {
            DiskEvent::Persisted(marker) => {
                if self.fatal.is_none() {
                    let result = self.raw.on_persisted(marker);
                    self.on_core_result(result, "persisted");
                }
            }
            DiskEvent::Fatal(reason) => self.fail(reason),
        }
    }

    fn on_apply_event(&mut self, event: ApplyEvent) {
        match event {
            ApplyEvent::Applied(index) => {
                if self.fatal.is_none() {
                    self.metrics.record_applied(index);
                    let result = self.raw.on_applied(index);
                    self.on_core_result(result, "applied");
                    let (done, waiting) = std::mem::take(&mut self.changes_awaiting_apply)
                        .into_iter()
                        .partition(|(entry_index, _, _)| *entry_index <= index);
                    self.changes_awaiting_apply = waiting;
                    for (_, responder, reply) in done {
                        let _ = responder.send(reply);
                    }
                }
            }
            ApplyEvent::SnapshotTaken(snapshot) => {
                let through = Index::new(
                    snapshot
                        .last
                        .index
                        .get()
                        .saturating_sub(self.config.snapshot_keep_entries),
                );
                let _ = self.disk.send(DiskJob::Compact { snapshot, through });
            }
            ApplyEvent::Restored(members) => {
                self.set_members(members);
                // As for writes: a change covered by the snapshot was applied
                // without this node seeing its entry; its outcome is unknown.
                for (_, (_, responder)) in self.pending_changes.drain() {
                    let _ = responder.send(Err(NodeError::Timeout));
                }
                for (_, responder, _) in self.changes_awaiting_apply.drain(..) {
                    let _ = responder.send(Err(NodeError::Timeout));
                }
            }
            ApplyEvent::Fatal(reason) => self.fail(reason),
        }
    }

    fn process_ready(&mut self) {
        // A few rounds: handling one Ready can make another (for example a
        // read confirmed while stepping).
        for _ in 0..4 {
            if self.fatal.is_some() || !self.raw.has_ready() {
                return;
            }
            match self.raw.ready() {
                Ok(ready) => self.handle_ready(ready),
                Err(error) => return self.fail(format!("ready: {error}")),
            }
        }
    }

    fn handle_ready(&mut self, mut ready: Ready) {
        self.metrics.count_ready();
        if ready.soft_state().is_some() {
            self.on_leadership_change();
        }
        for envelope in ready.take_messages() {
            self.send(envelope);
        }
        for context in ready.dropped_reads() {
            if let Some(request) = RequestId::from_read_context(context) {
                if let Some((_, _, responder)) = self.pending_reads.remove(&request) {
                    let _ = responder.send(Err(NodeError::NoLeader));
                }
            }
        }
        for refused in ready.take_refused_proposals() {
            self.fail_refused(refused);
        }
        for state in ready.take_read_states() {
            let Some(request) = RequestId::from_read_context(&state.context) else {
                continue;
            };
            if let Some((_, query, responder)) = self.pending_reads.remove(&request) {
                let _ = self.applier.send(ApplyJob::Read {
                    index: state.index,
                    query,
                    responder,
                });
            }
        }
        let committed = ready.take_committed_entries();
        self.persist(&mut ready);
        if !committed.is_empty() {
            self.hand_out_committed(committed);
        }
        self.metrics.record_status(&self.raw.status());
    }

    fn persist(&mut self, ready: &mut Ready) {
        let snapshot = match ready.snapshot() {
            Some(metadata) => match self.received_snapshots.remove(&metadata.last.index) {
                Some(path) => Some((metadata.clone(), path)),
                None => {
                    return self.fail(format!("snapshot {} accepted without its data", metadata.last));
                }
            },
            None => None,
        };
        let mut messages = ready.take_persisted_messages();
        if messages
            .iter()
            .any(|envelope| matches!(envelope.message, Message::Snapshot(_)))
        {
            self.retry_held_snapshots(&mut messages);
        }
        let job = PersistJob {
            snapshot,
            entries: ready.take_entries(),
            hard_state: ready.hard_state(),
            messages,
            marker: ready.persist_marker(),
        };
        let nothing = job.snapshot.is_none()
            && job.entries.is_empty()
            && job.hard_state.is_none()
            && job.messages.is_empty();
        if !nothing {
            let _ = self.disk.send(DiskJob::Persist(job));
        }
    }

    /// The disk thread sends what waits for durability as plain messages,
    /// but a snapshot must stream with its data from this loop. A leader
    /// whose term is not yet durable has its snapshot held by the core (it
    /// would be sent after the write). That is rare (a new leader whose
    /// term's write is still in flight, meeting a follower that needs a
    /// snapshot), so the snapshot is reported failed instead: the core's
    /// next probe of the follower finds the entries compacted and sends a
    /// fresh snapshot, by then (or at a later retry) in a durable term.
    #[cold]
    fn retry_held_snapshots(&mut self, messages: &mut Vec<keel::Envelope>) {
        messages.retain(|envelope| {
            if matches!(envelope.message, Message::Snapshot(_)) {
                self.raw.report_snapshot(envelope.to, SnapshotOutcome::Failed);
                false
            } else {
                true
            }
        });
    }

    fn send(&mut self, envelope: keel::Envelope) {
        self.metrics.count_message_sent();
        let Message::Snapshot(metadata) = &envelope.message else {
            self.transport.send(envelope);
            return;
        };
        let to = envelope.to;
        let reader = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .read_latest();
        match reader {
            Ok(Some(reader)) if *reader.metadata() == **metadata => {
                tracing::info!(node = %self.config.id, to = %to, snapshot = %metadata.last, "sending a snapshot");
                self.transport.send_snapshot(envelope, Box::new(reader));
            }
            // The stored snapshot moved on (or is missing): the core asks
            // again with the current one.
            _ => self.raw.report_snapshot(to, SnapshotOutcome::Failed),
        }
    }

    /// The writes waiting for their entry to apply (shared with the
    /// applier, which answers them). A panic elsewhere leaves the map
    /// intact, so a poisoned lock is used as it is.
    fn writes(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, (Instant, WriteResponder<M>)>> {
        self.pending_writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers the write `request`, if it is still waiting, with `error`.
    fn fail_write(&self, request: RequestId, error: NodeError) {
        let waiting = self.writes().remove(&request);
        if let Some((_, responder)) = waiting {
            let _ = responder.send(Err(error));
        }
    }

    /// The leader refused proposals this node forwarded: their callers get
    /// the reason now rather than a timeout.
    fn fail_refused(&mut self, refused: RefusedProposal) {
        let error = || match refused.reason {
            RefusalReason::Overloaded => NodeError::Overloaded(refused.reason.to_string()),
            RefusalReason::ConfChangePending => {
                NodeError::Conflict("a membership change is in progress".to_string())
            }
            RefusalReason::Invalid => NodeError::Refused(refused.reason.to_string()),
            RefusalReason::Unavailable => NodeError::NoLeader,
        };
        for entry in &refused.entries {
            if entry.kind.is_conf_change() {
                let context = ConfChange::decode(&entry.data)
                    .ok()
                    .and_then(|change| ChangeContext::decode(change.context));
                if let Some(context) = context.filter(|context| context.origin == self.config.id) {
                    if let Some((_, responder)) = self.pending_changes.remove(&context.request) {
                        let _ = responder.send(Err(error()));
                    }
                }
            } else if let Some((origin, request, _)) = tagged::decode(&entry.data) {
                if origin != self.config.id {
                    continue;
                }
                self.fail_write(request, error());
            }
        }
    }

    fn on_leadership_change(&mut self) {
        let status = self.raw.status();
        tracing::info!(node = %self.config.id, role = %status.role, term = %status.hard_state.term, leader = ?status.leader, "role changed");
        if matches!(status.role, Role::Candidate | Role::PreCandidate) {
            self.metrics.count_election();
            tracing::info!(node = %self.config.id, role = %status.role, term = %status.hard_state.term, "election started");
        }
        let leader = status.leader;
        if leader != self.known_leader {
            self.metrics.count_leader_change();
            tracing::info!(node = %self.config.id, term = %status.hard_state.term, previous = ?self.known_leader, leader = ?leader, "leader changed");
            self.known_leader = leader;
        }
        let waiters = std::mem::take(&mut self.transfer_waiters);
        for (since, target, responder) in waiters {
            if leader == Some(target) {
                let _ = responder.send(Ok(()));
            } else if status.role == Role::Leader || leader.is_none() {
                self.transfer_waiters.push((since, target, responder));
            } else {
                // Someone else took over: the transfer cannot complete.
                let _ = responder.send(Err(NodeError::NotLeader { leader }));
            }
        }
    }
}
