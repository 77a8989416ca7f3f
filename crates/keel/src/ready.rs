//! [`Ready`]: everything the core asks the runtime to do.

use crate::message::{Envelope, RefusedProposal};
use crate::raft::{ReadState, Role};
use crate::types::{Entry, HardState, Index, LogId, NodeId, SnapshotMetadata, Term};

/// The volatile state worth telling the application about when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// What a [`Ready`] asked to persist, to hand back through
/// [`RawNode::on_persisted`](crate::RawNode::on_persisted) once it is durable.
/// `Copy`, so the runtime can keep it while it moves the rest of the `Ready`
/// to a writer thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistMarker {
    /// The last entry to persist, if any.
    pub last_entry: Option<LogId>,
    /// The index of the snapshot to persist, if any.
    pub snapshot: Option<Index>,
    /// The term of the hard state to persist, if the term changed: once it
    /// is durable, messages of that term may leave before a `Ready`'s
    /// writes (until then they wait in `persisted_messages`).
    pub term: Option<Term>,
}

/// Work for the runtime, produced by [`RawNode::ready`](crate::RawNode::ready).
///
/// Handle it in this order:
/// 1. Send [`messages`](Ready::messages) — at once, in parallel with the disk
///    write (a leader's appends to followers may leave before its own write).
///    None of them is of a term that is not yet durable: those wait in
///    `persisted_messages` (a node that crashed before persisting its new
///    term could otherwise win that term again with another log).
/// 2. Persist [`snapshot`](Ready::snapshot), then [`entries`](Ready::entries)
///    (replacing any conflicting suffix), then [`hard_state`](Ready::hard_state);
///    fsync if [`must_sync`](Ready::must_sync).
/// 3. Only then send [`persisted_messages`](Ready::persisted_messages): votes
///    and append acknowledgements promise what is on this node's disk.
/// 4. Apply [`committed_entries`](Ready::committed_entries) in order.
/// 5. Call [`RawNode::advance`](crate::RawNode::advance) — or, with
///    asynchronous storage writes, [`RawNode::on_persisted`](crate::RawNode::on_persisted)
///    and [`RawNode::on_applied`](crate::RawNode::on_applied) as each part completes.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub(crate) number: u64,
    pub(crate) soft_state: Option<SoftState>,
    pub(crate) hard_state: Option<HardState>,
    /// Boxed: rare and large, and a `Ready` is moved several times.
    pub(crate) snapshot: Option<Box<SnapshotMetadata>>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) messages: Vec<Envelope>,
    pub(crate) persisted_messages: Vec<Envelope>,
    pub(crate) committed_entries: Vec<Entry>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_reads: Vec<bytes::Bytes>,
    pub(crate) refused_proposals: Vec<RefusedProposal>,
    pub(crate) must_sync: bool,
    pub(crate) persist_marker: PersistMarker,
    pub(crate) last_committed: Option<Index>,
}

impl Ready {
    /// A sequence number, increasing by one per `Ready`.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The new role and leader, if they changed.
    pub fn soft_state(&self) -> Option<SoftState> {
        self.soft_state
    }

    /// The hard state to persist, if it changed.
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// A snapshot (metadata) to install: restore the state machine from the
    /// data received with it, then persist it.
    pub fn snapshot(&self) -> Option<&SnapshotMetadata> {
        self.snapshot.as_deref()
    }

    /// Entries to append to stable storage.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Takes the entries to persist, leaving none.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// Messages that may be sent now.
    pub fn messages(&self) -> &[Envelope] {
        &self.messages
    }

    /// Takes the messages that may be sent now.
    pub fn take_messages(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.messages)
    }

    /// Messages to send only after this `Ready`'s writes are durable.
    pub fn persisted_messages(&self) -> &[Envelope] {
        &self.persisted_messages
    }

    /// Takes the messages to send after persisting.
    pub fn take_persisted_messages(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.persisted_messages)
    }

    /// Committed entries to apply, in order.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }

    /// Takes the committed entries to apply.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// Reads confirmed since the last `Ready`: serve each once the state
    /// machine has applied up to its index.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Takes the confirmed reads.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// Contexts of this node's reads that will never be answered: it lost
    /// leadership, or it forwarded them to a node that is not the leader
    /// (which refused them back). Fail them now (retry elsewhere) instead of
    /// waiting for a timeout. A refusal can be lost like any message, so
    /// callers still need a timeout.
    pub fn dropped_reads(&self) -> &[bytes::Bytes] {
        &self.dropped_reads
    }

    /// This node's proposals that it forwarded to the leader and the leader
    /// refused (each with its reason): fail their callers now instead of
    /// waiting for a timeout. A refusal can be lost like any message, so
    /// callers still need a timeout.
    pub fn refused_proposals(&self) -> &[RefusedProposal] {
        &self.refused_proposals
    }

    /// Takes the refused proposals.
    pub fn take_refused_proposals(&mut self) -> Vec<RefusedProposal> {
        std::mem::take(&mut self.refused_proposals)
    }

    /// Whether the writes must be fsynced before the persisted messages go
    /// out (new entries, or a new term or vote; a commit index alone need
    /// not be).
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    /// What to report to `on_persisted` once this `Ready` is durable.
    pub fn persist_marker(&self) -> PersistMarker {
        self.persist_marker
    }

    /// The index of the last committed entry handed out, for `on_applied`.
    pub fn last_committed_index(&self) -> Option<Index> {
        self.last_committed
    }
}
