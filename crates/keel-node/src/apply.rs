//! The applier: a dedicated thread that owns the state machine, applies
//! committed entries in order, answers reads once their index is applied,
//! and takes snapshots. A slow state machine delays answers here, never the
//! raft loop's heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keel::{ConfState, Entry, EntryKind, Index, LogId, NodeId, SnapshotMetadata, Term};
use keel_log::SnapshotStore;
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::members::{read_snapshot_prefix, snapshot_prefix, AddressBook};
use crate::metrics::Metrics;
use crate::request::{tagged, RequestId};
use crate::state_machine::StateMachine;

/// Where a writer waits for its command's response.
pub(crate) type WriteResponder<M> = oneshot::Sender<Result<<M as StateMachine>::Response, NodeError>>;
/// Where a reader waits for its query's answer.
pub(crate) type ReadResponder<M> = oneshot::Sender<Result<<M as StateMachine>::QueryResponse, NodeError>>;

/// A query waiting for its read index to be applied.
type WaitingRead<M> = (<M as StateMachine>::Query, ReadResponder<M>);

/// Writers waiting for their entries to be applied, by request id, shared
/// by the raft loop (which registers them) and the applier (which answers).
/// Only this life's ids are ever registered, so an entry proposed in an
/// earlier life finds no one here.
pub(crate) type PendingWrites<M> = Arc<Mutex<HashMap<RequestId, (Instant, WriteResponder<M>)>>>;

/// Work for the applier, in log order.
pub(crate) enum ApplyJob<M: StateMachine> {
    /// Committed entries, with the membership (and address book) in force
    /// after each membership change among them.
    Entries {
        entries: Vec<Entry>,
        memberships: Vec<(Index, ConfState, AddressBook)>,
    },
    /// Replace the state with the latest stored snapshot, which ends at
    /// `metadata.last`.
    Restore { metadata: SnapshotMetadata },
    /// Answer `query` once `index` is applied.
    Read {
        index: Index,
        query: M::Query,
        responder: ReadResponder<M>,
    },
    /// Stop.
    Shutdown,
}

/// What the applier tells the raft loop.
#[derive(Debug)]
pub(crate) enum ApplyEvent {
    /// Everything up to this index is applied.
    Applied(Index),
    /// A snapshot was taken and stored; the log may be compacted behind it.
    SnapshotTaken(SnapshotMetadata),
    /// A snapshot was restored; its address book is in force.
    Restored(AddressBook),
    /// The state machine failed; the node must stop.
    Fatal(String),
}

pub(crate) struct Applier<M: StateMachine> {
    local: NodeId,
    state_machine: M,
    applied: LogId,
    membership: (ConfState, AddressBook),
    last_snapshot_index: Index,
    snapshot_interval_entries: u64,
    snapshots: Arc<Mutex<SnapshotStore>>,
    pending_writes: PendingWrites<M>,
    /// Reads waiting for their index, by index.
    pending_reads: BTreeMap<Index, Vec<WaitingRead<M>>>,
    events: mpsc::UnboundedSender<ApplyEvent>,
    failed: Option<String>,
    metrics: Arc<Metrics>,
}

/// How the applier starts.
pub(crate) struct ApplierStart<M: StateMachine> {
    pub(crate) local: NodeId,
    pub(crate) state_machine: M,
    pub(crate) applied: LogId,
    pub(crate) membership: (ConfState, AddressBook),
    pub(crate) snapshot_interval_entries: u64,
    pub(crate) snapshots: Arc<Mutex<SnapshotStore>>,
    pub(crate) pending_writes: PendingWrites<M>,
    pub(crate) events: mpsc::UnboundedSender<ApplyEvent>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<M: StateMachine> Applier<M> {
    pub(crate) fn new(start: ApplierStart<M>) -> Self {
        Applier {
            local: start.local,
            state_machine: start.state_machine,
            applied: start.applied,
            membership: start.membership,
            last_snapshot_index: start.applied.index,
            snapshot_interval_entries: start.snapshot_interval_entries,
            snapshots: start.snapshots,
            pending_writes: start.pending_writes,
            pending_reads: BTreeMap::new(),
            events: start.events,
            failed: None,
            metrics: start.metrics,
        }
    }

    /// Runs until `Shutdown` or the channel closes.
    pub(crate) fn run(mut self, mut jobs: mpsc::UnboundedReceiver<ApplyJob<M>>) {
        while let Some(job) = jobs.blocking_recv() {
            match job {
                ApplyJob::Shutdown => break,
                ApplyJob::Read {
                    index,
                    query,
                    responder,
                } => self.read(index, query, responder),
                job if self.failed.is_some() => drop(job),
                ApplyJob::Entries { entries, memberships } => self.apply_entries(entries, memberships),
                ApplyJob::Restore { metadata } => self.restore(metadata),
            }
        }
        self.fail_pending_reads(NodeError::ShuttingDown);
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(node = %self.local, %reason, "state machine failed; the node stops");
        self.failed = Some(reason.clone());
        self.fail_pending_reads(NodeError::Fatal(reason.clone()));
        let _ = self.events.send(ApplyEvent::Fatal(reason));
    }

    fn fail_pending_reads(&mut self, error: NodeError) {
        for (_, reads) in std::mem::take(&mut self.pending_reads) {
            for (_, responder) in reads {
                let _ = responder.send(Err(error.clone()));
            }
        }
    }

    fn read(&mut self, index: Index, query: M::Query, responder: ReadResponder<M>) {
        if let Some(reason) = &self.failed {
            let _ = responder.send(Err(NodeError::Fatal(reason.clone())));
            return;
        }
        if index <= self.applied.index {
            let answer = self.state_machine.query(&query);
            let _ = responder.send(Ok(answer));
        } else {
            self.pending_reads
                .entry(index)
                .or_default()
                .push((query, responder));
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, memberships: Vec<(Index, ConfState, AddressBook)>) {
        let started = Instant::now();
        let mut memberships = memberships.into_iter().peekable();
        for entry in entries {
            if entry.index <= self.applied.index {
                // Already applied (replayed after a snapshot restore).
                continue;
            }
            assert_eq!(
                entry.index,
                self.applied.index.next(),
                "entries applied out of order on {}",
                self.local
            );
            if let Err(reason) = self.apply_one(&entry) {
                self.fail(reason);
                return;
            }
            while memberships
                .peek()
                .is_some_and(|(index, _, _)| *index <= entry.index)
            {
                if let Some((_, conf_state, members)) = memberships.next() {
                    self.membership = (conf_state, members);
                }
            }
            self.applied = entry.log_id();
            self.answer_reads();
        }
        self.metrics.record_apply(started.elapsed());
        let _ = self.events.send(ApplyEvent::Applied(self.applied.index));
        self.maybe_snapshot();
    }

    fn apply_one(&mut self, entry: &Entry) -> Result<(), String> {
        if entry.kind != EntryKind::Normal || entry.data.is_empty() {
            // Membership changes are applied by the raft loop; empty
            // entries are a new leader's.
            return Ok(());
        }
        let Some((origin, request, command)) = tagged::decode(&entry.data) else {
            return Err(format!("entry {} has no request header", entry.log_id()));
        };
        let command = M::decode_command(&command)
            .map_err(|error| format!("entry {} cannot be decoded: {error}", entry.log_id()))?;
        let index = entry.index;
        let state_machine = &mut self.state_machine;
        let response = catch_unwind(AssertUnwindSafe(|| state_machine.apply(index, command)))
            .map_err(|_| format!("the state machine panicked applying entry {}", entry.log_id()))?;
        if origin == self.local {
            let waiting = self
                .pending_writes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&request);
            if let Some((_, responder)) = waiting {
                let _ = responder.send(Ok(response));
            }
        }
        Ok(())
    }

    fn answer_reads(&mut self) {
        while let Some(entry) = self.pending_reads.first_entry() {
            if *entry.key() > self.applied.index {
                break;
            }
            for (query, responder) in entry.remove() {
                let answer = self.state_machine.query(&query);
                let _ = responder.send(Ok(answer));
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        let since = self.applied.index.distance_from(self.last_snapshot_index);
        if since < self.snapshot_interval_entries || self.applied.term == Term::ZERO {
            return;
        }
        let metadata = SnapshotMetadata {
            last: self.applied,
            conf_state: self.membership.0.clone(),
        };
        let started = Instant::now();
        let mut data = Cursor::new(snapshot_prefix(&self.membership.1)).chain(self.state_machine.snapshot());
        let stored = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .write(metadata.clone(), &mut data);
        match stored {
            Ok(_) => {
                self.metrics.count_snapshot_taken();
                tracing::info!(
                    node = %self.local,
                    snapshot = %metadata.last,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot taken"
                );
                self.last_snapshot_index = self.applied.index;
                let _ = self.events.send(ApplyEvent::SnapshotTaken(metadata));
            }
            Err(error) => self.fail(format!("storing a snapshot failed: {error}")),
        }
    }

    fn restore(&mut self, metadata: SnapshotMetadata) {
        let reader = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .read_latest();
        let mut reader = match reader {
            Ok(Some(reader)) if reader.metadata() == &metadata => reader,
            Ok(_) => return self.fail(format!("snapshot {} is not the latest stored", metadata.last)),
            Err(error) => return self.fail(format!("opening snapshot {} failed: {error}", metadata.last)),
        };
        let members = match read_snapshot_prefix(&mut reader) {
            Ok(members) => members,
            Err(reason) => return self.fail(reason),
        };
        if let Err(error) = self.state_machine.restore(&mut reader) {
            return self.fail(format!("restoring snapshot {} failed: {error}", metadata.last));
        }
        tracing::info!(node = %self.local, snapshot = %metadata.last, "state machine restored from a received snapshot");
        self.applied = metadata.last;
        self.last_snapshot_index = metadata.last.index;
        // Writes this node proposed may be inside the snapshot (applied, but
        // their responses are gone with the entries) or may still come:
        // their outcome is unknown, and saying so now beats a timeout.
        let waiting: Vec<_> = self
            .pending_writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .collect();
        for (_, (_, responder)) in waiting {
            let _ = responder.send(Err(NodeError::Timeout));
        }
        self.membership = (metadata.conf_state, members.clone());
        let _ = self.events.send(ApplyEvent::Restored(members));
        let _ = self.events.send(ApplyEvent::Applied(self.applied.index));
        self.answer_reads();
    }
}
