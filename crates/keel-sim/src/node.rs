//! One simulated node: a `RawNode` over a [`SimStorage`], its state machine,
//! and the runtime loop that handles its `Ready`s (synchronously, or with
//! a simulated asynchronous disk).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use keel::{
    ConfChange, ConfState, Config, Entry, EntryKind, Envelope, Error, HardState, Index, LogId, Message,
    NodeId, PersistMarker, RawNode, ReadState, Ready, Role, SnapshotMetadata, StorageWrite, Term, VoteKind,
};

use crate::budget::READY_ROUNDS_MAX;
use crate::checker::{Property, Violation};
use crate::history::Completion;
use crate::kv::{Applied, Command, KvStore, Output};
use crate::storage::SimStorage;
use crate::trace::TraceEvent;
use crate::world::World;

/// What a node last reported, to check it never goes back within one
/// incarnation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Observed {
    pub(crate) hard_state: HardState,
    pub(crate) applied: Index,
    pub(crate) role: Option<Role>,
    pub(crate) leader: Option<NodeId>,
}

/// Writes of one `Ready` waiting for the asynchronous disk.
#[derive(Debug)]
pub(crate) struct PersistJob {
    number: u64,
    snapshot: Option<(SnapshotMetadata, KvStore)>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    must_sync: bool,
    marker: PersistMarker,
    persisted_messages: Vec<Envelope>,
}

/// Committed entries of one `Ready` waiting to be applied.
#[derive(Debug)]
pub(crate) struct ApplyJob {
    ready_number: u64,
    snapshot: Option<(SnapshotMetadata, KvStore)>,
    entries: Vec<Entry>,
    /// The membership after each membership change among `entries` (the
    /// core switched to it when the entries were handed out).
    memberships: Vec<(Index, ConfState)>,
    applied_index: Option<Index>,
}

/// A running process.
pub(crate) struct Running {
    pub(crate) raw: RawNode<SimStorage>,
    pub(crate) kv: KvStore,
    /// The last index applied to `kv`.
    pub(crate) kv_applied: Index,
    /// The membership as of `kv_applied`: what a snapshot taken now holds.
    pub(crate) applied_conf: ConfState,
    /// The node applied a membership without itself, having been in the
    /// one before, at this index: it has learnt it was removed.
    pub(crate) learnt_removal: Option<Index>,
    /// Paused since this tick: no input until resumed.
    pub(crate) paused_since_tick: Option<u64>,
    pub(crate) resume_at_tick: u64,
    /// A sync failed: the process crashes at this tick. Until then its
    /// outputs are discarded (the runtime stopped writing and sending).
    pub(crate) crash_at_tick: Option<u64>,
    /// Keel returned a fatal error: every later call must say `Stopped`.
    pub(crate) stopped: bool,
    pub(crate) unpersisted: VecDeque<PersistJob>,
    pub(crate) unapplied: VecDeque<ApplyJob>,
    persisted_ready: u64,
    /// Snapshot images received with snapshot messages, by index.
    pub(crate) received_images: BTreeMap<Index, KvStore>,
    /// Confirmed reads waiting for `kv_applied` to reach their index.
    confirmed_reads: Vec<ReadState>,
    pub(crate) observed: Observed,
    /// Entries up to here were checked against the committed entries.
    pub(crate) commit_checked: Index,
    /// A newly seen leadership whose completeness check waits for the
    /// asynchronous disk to catch up.
    pub(crate) leader_check_pending: bool,
}

impl Running {
    /// Whether the process takes input now.
    pub(crate) fn is_responsive(&self) -> bool {
        self.paused_since_tick.is_none()
    }

    /// Whether its outputs count (not failed, not stopped).
    pub(crate) fn is_healthy(&self) -> bool {
        self.crash_at_tick.is_none() && !self.stopped
    }
}

/// A process, running or down.
pub(crate) enum Process {
    Running(Box<Running>),
    Down {
        storage: Box<SimStorage>,
        restart_at_tick: u64,
    },
}

/// A node of the simulated cluster across its incarnations.
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) incarnation: u32,
    pub(crate) process: Process,
    /// Shut down for good after it learnt it was removed from the cluster.
    pub(crate) retired: bool,
    /// Learnt it was removed but is left running (an operator who forgot
    /// it): it must not disrupt the cluster.
    pub(crate) lingering: bool,
    /// Whether the operator decided yet between lingering and shutting down.
    pub(crate) removal_decided: bool,
}

impl SimNode {
    pub(crate) fn running(&self) -> Option<&Running> {
        match &self.process {
            Process::Running(running) => Some(running),
            Process::Down { .. } => None,
        }
    }

    pub(crate) fn running_mut(&mut self) -> Option<&mut Running> {
        match &mut self.process {
            Process::Running(running) => Some(running),
            Process::Down { .. } => None,
        }
    }

    /// Starts a process from `storage`, restoring the state machine from
    /// its durable snapshot.
    pub(crate) fn start(&mut self, storage: SimStorage) -> Result<(), Violation> {
        let (snapshot, image) = storage.snapshot_with_image();
        let applied_conf = keel::Storage::initial_state(&storage)
            .map(|initial| initial.conf_state)
            .map_err(|error| {
                Violation::new(
                    Property::Contract,
                    format!("node {} cannot read its membership: {error}", self.id),
                )
            })?;
        let kv = match (snapshot.is_empty(), image) {
            (true, _) => KvStore::new(),
            (false, Some(image)) => image,
            (false, None) => {
                return Err(Violation::new(
                    Property::Contract,
                    format!(
                        "node {} has snapshot {} without its image",
                        self.id, snapshot.last
                    ),
                ))
            }
        };
        let mut config = self.config.clone();
        config.applied = snapshot.last.index;
        let raw = RawNode::new(&config, storage).map_err(|error| {
            Violation::new(
                Property::Contract,
                format!("node {} cannot start: {error}", self.id),
            )
        })?;
        let status = raw.status();
        self.incarnation += 1;
        self.process = Process::Running(Box::new(Running {
            raw,
            kv,
            kv_applied: snapshot.last.index,
            applied_conf,
            learnt_removal: None,
            paused_since_tick: None,
            resume_at_tick: 0,
            crash_at_tick: None,
            stopped: false,
            unpersisted: VecDeque::new(),
            unapplied: VecDeque::new(),
            persisted_ready: 0,
            received_images: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            observed: Observed {
                hard_state: status.hard_state,
                applied: status.applied,
                role: None,
                leader: None,
            },
            commit_checked: status.applied,
            leader_check_pending: false,
        }));
        Ok(())
    }
}

/// Calls into the node and checks the stop-on-storage-failure contract:
/// a call during which keel read a failed storage must fail fatally, and
/// once stopped every call must fail with `Stopped`.
pub(crate) fn call<T>(
    node_id: NodeId,
    running: &mut Running,
    operation: impl FnOnce(&mut RawNode<SimStorage>) -> Result<T, Error>,
) -> Result<Result<T, Error>, Violation> {
    if running.stopped {
        let result = operation(&mut running.raw);
        return match result {
            Err(Error::Stopped(_)) => Ok(result),
            Err(other) => Err(Violation::new(
                Property::StopOnStorageFailure,
                format!("node {node_id} stopped earlier but a call failed with {other} instead of Stopped"),
            )),
            Ok(_) => Err(Violation::new(
                Property::StopOnStorageFailure,
                format!("node {node_id} stopped earlier but a call succeeded"),
            )),
        };
    }
    let failed_reads_before = running.raw.storage().failed_reads();
    let result = operation(&mut running.raw);
    let saw_failure = running.raw.storage().failed_reads() > failed_reads_before;
    match &result {
        Err(error) if error.is_fatal() => {
            if !running.raw.storage().is_poisoned() {
                return Err(Violation::new(
                    Property::StopOnStorageFailure,
                    format!("node {node_id} stopped with a healthy storage: {error}"),
                ));
            }
            running.stopped = true;
        }
        _ if saw_failure => {
            return Err(Violation::new(
                Property::StopOnStorageFailure,
                format!(
                    "node {node_id} read a failed storage and went on ({:?})",
                    result.as_ref().err()
                ),
            ))
        }
        _ => {}
    }
    Ok(result)
}

/// Sends envelopes from `running`: records granted votes, attaches the
/// snapshot image to snapshot messages.
fn send(world: &mut World, running: &Running, envelopes: Vec<Envelope>) -> Result<(), Violation> {
    for envelope in envelopes {
        let image = match &envelope.message {
            Message::VoteResponse(response) if response.kind == VoteKind::Vote && response.granted => {
                world
                    .checker
                    .observe_vote(envelope.from, envelope.term, envelope.to)?;
                None
            }
            Message::Snapshot(metadata) => {
                let (stored, image) = running.raw.storage().snapshot_with_image();
                match image {
                    Some(image) if stored == **metadata => Some(image),
                    _ => {
                        return Err(Violation::new(
                            Property::Contract,
                            format!(
                                "node {} sends snapshot {} but its storage holds {} (image: {})",
                                envelope.from,
                                metadata.last,
                                stored.last,
                                if stored == **metadata { "missing" } else { "other" }
                            ),
                        ))
                    }
                }
            }
            _ => None,
        };
        world.network.send(&mut world.rng, world.now, envelope, image);
    }
    Ok(())
}

/// Hands out and handles every `Ready` the node has.
pub(crate) fn process_ready(node: &mut SimNode, world: &mut World) -> Result<(), Violation> {
    let id = node.id;
    let incarnation = node.incarnation;
    let async_writes = node.config.async_storage_writes;
    let Some(running) = node.running_mut() else {
        return Ok(());
    };
    for _ in 0..READY_ROUNDS_MAX {
        if running.stopped {
            if running.raw.has_ready() {
                return Err(Violation::new(
                    Property::StopOnStorageFailure,
                    format!("node {id} is stopped but has a Ready"),
                ));
            }
            return Ok(());
        }
        if !running.raw.has_ready() {
            return Ok(());
        }
        let ready = match call(id, running, RawNode::ready)? {
            Ok(ready) => ready,
            Err(_) => return Ok(()),
        };
        if running.crash_at_tick.is_some() {
            // The runtime has failed; it hands out nothing more.
            return Ok(());
        }
        trace_soft_state(world, id, running, &ready);
        if async_writes {
            queue_ready(world, id, incarnation, running, ready)?;
        } else {
            handle_ready_sync(world, id, incarnation, running, ready)?;
        }
    }
    Err(Violation::new(
        Property::Budget,
        format!("node {id} still has a Ready after {READY_ROUNDS_MAX} rounds: its Ready loop never drains"),
    ))
}

fn trace_soft_state(world: &mut World, id: NodeId, running: &Running, ready: &Ready) {
    if let Some(soft_state) = ready.soft_state() {
        let term = running.raw.status().hard_state.term;
        world.hash(&[7, id.get(), term.get(), soft_state.leader.map_or(0, NodeId::get)]);
        if world.trace.is_enabled() {
            let detail = format!(
                "{:?}, leader {:?}",
                soft_state.role,
                soft_state.leader.map(NodeId::get)
            );
            world.trace_event(TraceEvent::Role {
                node: id,
                term,
                detail,
            });
        }
    }
}

/// The snapshot image for a `Ready`'s snapshot, received with the message.
fn take_image(id: NodeId, running: &mut Running, metadata: &SnapshotMetadata) -> Result<KvStore, Violation> {
    let image = running
        .received_images
        .remove(&metadata.last.index)
        .ok_or_else(|| {
            Violation::new(
                Property::Contract,
                format!(
                    "node {id} must install snapshot {} that it never received",
                    metadata.last
                ),
            )
        })?;
    running
        .received_images
        .retain(|index, _| *index > metadata.last.index);
    Ok(image)
}

fn handle_ready_sync(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    mut ready: Ready,
) -> Result<(), Violation> {
    send(world, running, ready.take_messages())?;
    let snapshot = match ready.snapshot().cloned() {
        Some(metadata) => Some((metadata.clone(), take_image(id, running, &metadata)?)),
        None => None,
    };
    let job = PersistJob {
        number: ready.number(),
        snapshot: snapshot.clone(),
        entries: ready.take_entries(),
        hard_state: ready.hard_state(),
        must_sync: ready.must_sync(),
        marker: ready.persist_marker(),
        persisted_messages: Vec::new(),
    };
    if !write_to_disk(world, id, running, &job)? {
        return Ok(());
    }
    send(world, running, ready.take_persisted_messages())?;
    if let Some((metadata, image)) = snapshot {
        restore(world, id, running, &metadata, image)?;
    }
    let committed = ready.take_committed_entries();
    let memberships = hand_out_conf_changes(world, id, running, &committed)?;
    apply_entries(world, id, incarnation, running, &committed, &memberships)?;
    take_reads(world, id, incarnation, running, &mut ready);
    match call(id, running, |raw| raw.advance(ready))? {
        Ok(()) => {}
        Err(_) => return Ok(()),
    }
    serve_reads(world, id, incarnation, running);
    Ok(())
}

fn queue_ready(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    mut ready: Ready,
) -> Result<(), Violation> {
    send(world, running, ready.take_messages())?;
    let snapshot = match ready.snapshot().cloned() {
        Some(metadata) => Some((metadata.clone(), take_image(id, running, &metadata)?)),
        None => None,
    };
    let applied_index = ready.last_committed_index().max(ready.persist_marker().snapshot);
    let committed = ready.take_committed_entries();
    let memberships = hand_out_conf_changes(world, id, running, &committed)?;
    if applied_index.is_some() {
        running.unapplied.push_back(ApplyJob {
            ready_number: ready.number(),
            snapshot: snapshot.clone(),
            entries: committed,
            memberships,
            applied_index,
        });
    }
    let persisted_messages = ready.take_persisted_messages();
    let has_writes = snapshot.is_some()
        || !ready.entries().is_empty()
        || ready.hard_state().is_some()
        || !persisted_messages.is_empty();
    if has_writes {
        running.unpersisted.push_back(PersistJob {
            number: ready.number(),
            snapshot,
            entries: ready.take_entries(),
            hard_state: ready.hard_state(),
            must_sync: ready.must_sync(),
            marker: ready.persist_marker(),
            persisted_messages,
        });
    } else {
        running.persisted_ready = running.persisted_ready.max(ready.number());
    }
    take_reads(world, id, incarnation, running, &mut ready);
    Ok(())
}

/// Writes a job's snapshot, entries and hard state, then syncs if asked.
/// Returns false if the disk failed (the process is now failing).
fn write_to_disk(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    job: &PersistJob,
) -> Result<bool, Violation> {
    let storage = running.raw.storage_mut();
    let mut result = Ok(());
    if let Some((metadata, image)) = &job.snapshot {
        result = storage.apply_snapshot_with_image(metadata.clone(), image.clone());
    }
    if result.is_ok() {
        result = storage.append(&job.entries);
    }
    if result.is_ok() {
        if let Some(hard_state) = job.hard_state {
            result = storage.set_hard_state(hard_state);
        }
    }
    if result.is_ok() && job.must_sync {
        result = storage.sync();
    }
    if let Err(error) = result {
        if !running.raw.storage().is_poisoned() {
            return Err(Violation::new(
                Property::Contract,
                format!("node {id} cannot write Ready {}: {error}", job.number),
            ));
        }
        fail_process(world, id, running);
        return Ok(false);
    }
    check_written(world, id, running, &job.entries)?;
    observe_durable_vote(world, id, running)?;
    Ok(true)
}

/// The vote in the node's durable hard state counts as given, for itself
/// too: a restart cannot take it back.
pub(crate) fn observe_durable_vote(
    world: &mut World,
    id: NodeId,
    running: &Running,
) -> Result<(), Violation> {
    let durable = running.raw.storage().durable_hard_state();
    match durable.vote {
        Some(vote) => world.checker.observe_vote(id, durable.term, vote),
        None => Ok(()),
    }
}

/// The disk failed: the runtime stops writing, sending and applying, and
/// the process crashes a little later (it may take a few inputs first).
pub(crate) fn fail_process(world: &mut World, id: NodeId, running: &mut Running) {
    let crash_at = world.now + world.rng.between(0, 3);
    running.crash_at_tick = Some(crash_at);
    world.stats.sync_failures += 1;
    world.hash(&[11, id.get(), crash_at]);
    world.trace_event(TraceEvent::Fault {
        detail: format!("node {id}: fsync failed; the process stops and crashes at tick {crash_at}"),
    });
}

/// Log matching and committed-entry checks on entries just written.
fn check_written(
    world: &mut World,
    id: NodeId,
    running: &Running,
    entries: &[Entry],
) -> Result<(), Violation> {
    let storage = running.raw.storage();
    let term = running.observed.hard_state.term;
    for entry in entries {
        if entry.index < storage.first_index_unchecked() {
            continue; // covered by the snapshot: skipped by the store
        }
        let previous_index = entry.index.prev();
        let previous_term = match storage.entry(previous_index) {
            Some(previous) => previous.term,
            None => keel::Storage::term(storage, previous_index).map_err(|error| {
                Violation::new(
                    Property::Contract,
                    format!("node {id}: no term for {previous_index} before a written entry: {error}"),
                )
            })?,
        };
        world.checker.observe_written(id, entry, previous_term)?;
        if entry.index <= running.commit_checked {
            world.checker.observe_committed(id, term, entry, "commit index")?;
        }
    }
    Ok(())
}

fn restore(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    metadata: &SnapshotMetadata,
    image: KvStore,
) -> Result<(), Violation> {
    world.checker.observe_snapshot_conf(id, metadata)?;
    running.kv = image;
    running.kv_applied = metadata.last.index;
    set_applied_conf(id, running, metadata.conf_state.clone());
    Ok(())
}

/// The state machine reached a new membership.
fn set_applied_conf(id: NodeId, running: &mut Running, conf: ConfState) {
    if running.applied_conf.contains(id) && !conf.contains(id) {
        running.learnt_removal = Some(running.kv_applied);
    }
    running.applied_conf = conf;
}

/// Applies the membership changes among committed entries handed out
/// (keel-node's order: the core switches membership as the entries leave
/// it, and the applier later records each membership at its index).
/// A change the core refuses leaves the membership as it was.
fn hand_out_conf_changes(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    entries: &[Entry],
) -> Result<Vec<(Index, ConfState)>, Violation> {
    let mut memberships = Vec::new();
    for entry in entries.iter().filter(|entry| entry.kind.is_conf_change()) {
        let change = ConfChange::decode(&entry.data).map_err(|error| {
            Violation::new(
                Property::Contract,
                format!(
                    "node {id}: committed entry {} is not a membership change: {error}",
                    entry.log_id()
                ),
            )
        })?;
        let conf = match call(id, running, |raw| raw.apply_conf_change(&change))? {
            Ok(conf) => conf,
            Err(Error::ConfChange(error)) => {
                world.stats.conf_changes_refused += 1;
                world.trace_event(TraceEvent::Fault {
                    detail: format!("node {id}: membership change {} refused: {error}", entry.log_id()),
                });
                running.raw.status().conf_state
            }
            // Fatal: the node stopped; the call check covers it.
            Err(_) => return Ok(memberships),
        };
        world.hash(&[79, id.get(), entry.index.get(), conf.voters.len() as u64]);
        memberships.push((entry.index, conf));
    }
    Ok(memberships)
}

/// Applies committed entries to the state machine, checking each against
/// the committed entries seen so far, and completes client requests.
fn apply_entries(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    entries: &[Entry],
    memberships: &[(Index, ConfState)],
) -> Result<(), Violation> {
    let term = if entries.is_empty() {
        Term::ZERO
    } else {
        running.raw.status().hard_state.term
    };
    for entry in entries {
        if entry.index != running.kv_applied.next() {
            return Err(Violation::new(
                Property::Contract,
                format!(
                    "node {id} is handed entry {} to apply after applying {}",
                    entry.log_id(),
                    running.kv_applied
                ),
            ));
        }
        world.checker.observe_committed(id, term, entry, "applied")?;
        running.kv_applied = entry.index;
        world.stats.entries_applied += 1;
        match entry.kind {
            EntryKind::Normal if entry.data.is_empty() => {}
            EntryKind::Normal => {
                let command = Command::decode(&entry.data).map_err(|error| {
                    Violation::new(
                        Property::Contract,
                        format!("node {id} applies {}: {error}", entry.log_id()),
                    )
                })?;
                let applied = running.kv.apply(&command);
                if let Applied::Fresh(output) = applied {
                    world.record_applied(id, &command, output)?;
                }
                if let Applied::Fresh(output) | Applied::Repeat(output) = applied {
                    world.complete_log_request(id, incarnation, &command, output);
                }
            }
            EntryKind::ConfChange | EntryKind::ConfChangeV2 => {
                let Some((_, conf)) = memberships.iter().find(|(index, _)| *index == entry.index) else {
                    // The node stopped while handing it out.
                    return Ok(());
                };
                world.checker.observe_applied_conf(id, entry.index, conf)?;
                set_applied_conf(id, running, conf.clone());
                world.stats.conf_changes_applied += 1;
            }
        }
    }
    Ok(())
}

/// Takes confirmed and dropped reads out of a `Ready`.
fn take_reads(world: &mut World, id: NodeId, incarnation: u32, running: &mut Running, ready: &mut Ready) {
    for context in ready.dropped_reads() {
        world.complete_read(
            id,
            incarnation,
            context,
            Completion::Fail("read dropped: leadership lost"),
        );
    }
    running.confirmed_reads.extend(ready.take_read_states());
}

/// Serves confirmed reads whose index is applied.
pub(crate) fn serve_reads(world: &mut World, id: NodeId, incarnation: u32, running: &mut Running) {
    let applied = running.kv_applied;
    let (ready_now, waiting): (Vec<ReadState>, Vec<ReadState>) = running
        .confirmed_reads
        .drain(..)
        .partition(|read| read.index <= applied);
    running.confirmed_reads = waiting;
    for read in ready_now {
        let Some(key) = world.read_key(id, incarnation, &read.context) else {
            continue;
        };
        let value = running.kv.get(key);
        world.complete_read(
            id,
            incarnation,
            &read.context,
            Completion::Ok(Output::Value(value)),
        );
    }
}

/// The asynchronous disk completes the oldest write of the node.
pub(crate) fn persist_next(node: &mut SimNode, world: &mut World) -> Result<bool, Violation> {
    let id = node.id;
    let Some(running) = node.running_mut() else {
        return Ok(false);
    };
    if running.crash_at_tick.is_some() || running.stopped {
        return Ok(false);
    }
    let Some(job) = running.unpersisted.pop_front() else {
        return Ok(false);
    };
    world.hash(&[13, id.get(), job.number]);
    if !write_to_disk(world, id, running, &job)? {
        return Ok(true);
    }
    if call(id, running, |raw| raw.on_persisted(job.marker))?.is_err() {
        return Ok(true);
    }
    running.persisted_ready = job.number;
    send(world, running, job.persisted_messages)?;
    if world.trace.is_enabled() {
        world.trace_event(TraceEvent::Disk {
            node: id,
            detail: format!(
                "persisted Ready {} ({} entries, sync {})",
                job.number,
                job.entries.len(),
                job.must_sync
            ),
        });
    }
    Ok(true)
}

/// The asynchronous applier applies the oldest batch of the node. A batch
/// that restores a snapshot waits until its `Ready` is durable.
pub(crate) fn apply_next(node: &mut SimNode, world: &mut World) -> Result<bool, Violation> {
    let id = node.id;
    let incarnation = node.incarnation;
    let Some(running) = node.running_mut() else {
        return Ok(false);
    };
    if running.crash_at_tick.is_some() || running.stopped {
        return Ok(false);
    }
    let Some(job) = running.unapplied.front() else {
        return Ok(false);
    };
    if job.snapshot.is_some() && job.ready_number > running.persisted_ready {
        return Ok(false);
    }
    let Some(job) = running.unapplied.pop_front() else {
        return Ok(false);
    };
    world.hash(&[17, id.get(), job.ready_number]);
    if let Some((metadata, image)) = job.snapshot {
        restore(world, id, running, &metadata, image)?;
    }
    apply_entries(world, id, incarnation, running, &job.entries, &job.memberships)?;
    if let Some(index) = job.applied_index {
        if call(id, running, |raw| raw.on_applied(index))?.is_err() {
            return Ok(true);
        }
    }
    serve_reads(world, id, incarnation, running);
    if world.trace.is_enabled() {
        world.trace_event(TraceEvent::Disk {
            node: id,
            detail: format!("applied through {}", running.kv_applied),
        });
    }
    Ok(true)
}

/// Whether the asynchronous disk or applier has work that can proceed.
pub(crate) fn has_disk_work(node: &SimNode) -> bool {
    node.running().is_some_and(|running| {
        running.is_healthy()
            && running.is_responsive()
            && (!running.unpersisted.is_empty()
                || running
                    .unapplied
                    .front()
                    .is_some_and(|job| job.snapshot.is_none() || job.ready_number <= running.persisted_ready))
    })
}

/// Takes a snapshot of the state machine at its applied index and
/// compacts the log up to `keep_entries` before it. Returns whether a
/// snapshot was taken.
pub(crate) fn compact(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    keep_entries: u64,
) -> Result<bool, Violation> {
    if !running.is_healthy() || !running.unpersisted.is_empty() {
        return Ok(false);
    }
    let applied = running.kv_applied;
    let storage = running.raw.storage();
    let (current, _) = storage.snapshot_with_image();
    if applied <= current.last.index || applied > storage.last_index_unchecked() {
        return Ok(false);
    }
    let term = match storage.entry(applied) {
        Some(entry) => entry.term,
        None => return Ok(false),
    };
    let metadata = SnapshotMetadata {
        last: LogId::new(term, applied),
        // The membership at `applied` as the applier saw it (the core's
        // may be ahead: it switches when entries are handed out).
        conf_state: running.applied_conf.clone(),
    };
    world.checker.observe_snapshot_conf(id, &metadata)?;
    let image = running.kv.clone();
    let through = Index::new(applied.get().saturating_sub(keep_entries));
    let storage = running.raw.storage_mut();
    let mut result = storage.create_snapshot_with_image(metadata, image);
    if result.is_ok() {
        result = storage.sync();
    }
    if result.is_ok() && through >= storage.first_index_unchecked() {
        result = storage.compact(through);
    }
    if let Err(error) = result {
        if !running.raw.storage().is_poisoned() {
            return Err(Violation::new(
                Property::Contract,
                format!("node {id} cannot compact: {error}"),
            ));
        }
        fail_process(world, id, running);
        return Ok(false);
    }
    world.stats.snapshots_taken += 1;
    world.hash(&[19, id.get(), applied.get(), through.get()]);
    world.trace_event(TraceEvent::Fault {
        detail: format!(
            "node {id}: snapshot at {} (term {term}), log compacted through {through}",
            applied
        ),
    });
    Ok(true)
}

/// A received snapshot message: keep its image for the install.
pub(crate) fn receive_image(running: &mut Running, envelope: &Envelope, image: Option<KvStore>) {
    if let (Message::Snapshot(metadata), Some(image)) = (&envelope.message, image) {
        running.received_images.insert(metadata.last.index, image);
    }
}

/// A short description of a message for the trace.
pub(crate) fn describe(message: &Message) -> String {
    match message {
        Message::Append(append) => format!(
            "prev {} entries {} commit {}",
            append.prev,
            append.entries.len(),
            append.commit
        ),
        Message::AppendResponse(response) => format!("{response:?}"),
        Message::Vote(request) => format!(
            "{:?} last {} {:?}",
            request.kind, request.last_log, request.reason
        ),
        Message::VoteResponse(response) => format!("{:?} granted {}", response.kind, response.granted),
        Message::Heartbeat(heartbeat) => {
            format!("commit {} round {:?}", heartbeat.commit, heartbeat.read_round)
        }
        Message::Snapshot(metadata) => format!("last {}", metadata.last),
        _ => String::new(),
    }
}

/// A word summarising a message, for the trace hash.
pub(crate) fn message_word(envelope: &Envelope) -> u64 {
    let detail = match &envelope.message {
        Message::Append(append) => {
            append.prev.index.get() << 20 | (append.entries.len() as u64) << 8 | append.commit.get() & 0xff
        }
        Message::AppendResponse(keel::AppendResponse::Accepted { last_index }) => last_index.get(),
        Message::AppendResponse(keel::AppendResponse::Rejected { rejected, hint }) => {
            rejected.get() << 16 | hint.index.get()
        }
        Message::VoteResponse(response) => u64::from(response.granted),
        Message::Heartbeat(heartbeat) => heartbeat.commit.get(),
        Message::Snapshot(metadata) => metadata.last.index.get(),
        _ => 0,
    };
    detail ^ Term::get(envelope.term) << 48
}

/// The context bytes of a ReadIndex request by `client`.
pub(crate) fn read_context(client: crate::kv::ClientId, request: u64) -> Bytes {
    let mut context = Vec::with_capacity(12);
    context.extend_from_slice(&client.to_le_bytes());
    context.extend_from_slice(&request.to_le_bytes());
    Bytes::from(context)
}

/// Decodes [`read_context`].
pub(crate) fn parse_read_context(context: &[u8]) -> Option<(crate::kv::ClientId, u64)> {
    let client = u32::from_le_bytes(context.get(..4)?.try_into().ok()?);
    let request = u64::from_le_bytes(context.get(4..12)?.try_into().ok()?);
    Some((client, request))
}
