//! The runtime loop around one node's `RawNode`: it hands out `Ready`s,
//! sends their messages, writes them to the simulated disk (at once, or
//! through the asynchronous disk), and runs the asynchronous applier.
//! Mirrors keel-node's order of effects.

use keel::{
    Entry, Envelope, Index, LogId, Message, NodeId, RawNode, Ready, Role, SnapshotMetadata, StorageWrite,
    VoteKind,
};

use crate::applier::{apply_entries, hand_out_conf_changes, restore, serve_reads, take_reads};
use crate::budget::READY_ROUNDS_MAX;
use crate::checker::{Property, Violation};
use crate::kv::KvStore;
use crate::node::{call, ApplyJob, CrashPoint, PersistJob, Running, SimNode};
use crate::trace::TraceEvent;
use crate::world::World;

/// Sends envelopes from `running`: records granted votes, attaches the
/// snapshot image to snapshot messages.
pub(crate) fn send(world: &mut World, running: &Running, envelopes: Vec<Envelope>) -> Result<(), Violation> {
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

/// Charges the core the ticks the node's clock owes now: `tick()` for one
/// (a running process), one `tick_by` for more (the jump after a pause: the
/// core sees the pause at once, as a real monotonic clock would show it).
/// Returns the ticks charged.
pub(crate) fn charge_clock(node: &mut SimNode, world: &mut World) -> Result<u64, Violation> {
    let id = node.id;
    let shown = node.clock.ticks_at(world.now_microticks);
    let Some(running) = node.running_mut() else {
        return Ok(0);
    };
    let owed = shown.saturating_sub(running.ticks_charged);
    running.ticks_charged = running.ticks_charged.max(shown);
    match owed {
        0 => return Ok(0),
        1 => {
            call(id, running, RawNode::tick)?.ok();
        }
        _ => {
            call(id, running, |raw| raw.tick_by(owed))?.ok();
            world.hash(&[101, id.get(), owed]);
            world.trace_event(TraceEvent::Fault {
                detail: format!("node {id}: its clock jumps {owed} ticks (tick_by)"),
            });
        }
    }
    process_ready(node, world)?;
    Ok(owed)
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

pub(crate) fn trace_soft_state(world: &mut World, id: NodeId, running: &Running, ready: &Ready) {
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

/// A `Ready`'s snapshot to install, with its image; the core holds its
/// membership from now on.
fn take_snapshot(
    id: NodeId,
    running: &mut Running,
    ready: &Ready,
) -> Result<Option<(SnapshotMetadata, KvStore)>, Violation> {
    let Some(metadata) = ready.snapshot().cloned() else {
        return Ok(None);
    };
    running.core_snapshot_index = running.core_snapshot_index.max(metadata.last.index);
    let image = take_image(id, running, &metadata)?;
    Ok(Some((metadata, image)))
}

/// The snapshot image for a `Ready`'s snapshot, received with the message.
pub(crate) fn take_image(
    id: NodeId,
    running: &mut Running,
    metadata: &SnapshotMetadata,
) -> Result<KvStore, Violation> {
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

pub(crate) fn handle_ready_sync(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    mut ready: Ready,
) -> Result<(), Violation> {
    send(world, running, ready.take_messages())?;
    let snapshot = take_snapshot(id, running, &ready)?;
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
    let persisted_messages = ready.take_persisted_messages();
    maybe_plan_reboot_after_vote(world, id, running, &persisted_messages);
    send(world, running, persisted_messages)?;
    if !running.unapplied.is_empty() || !running.applier_runs() {
        // The applier is behind (stalled, or still working through queued
        // entries): the writes are durable now, the entries wait their turn.
        queue_apply(world, id, running, &mut ready, snapshot)?;
        take_reads(world, id, incarnation, running, &mut ready);
        if call(id, running, |raw| raw.on_persisted(ready.persist_marker()))?.is_ok() {
            running.persisted_ready = ready.number();
        }
        return Ok(());
    }
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

pub(crate) fn queue_ready(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    mut ready: Ready,
) -> Result<(), Violation> {
    send(world, running, ready.take_messages())?;
    let snapshot = take_snapshot(id, running, &ready)?;
    queue_apply(world, id, running, &mut ready, snapshot.clone())?;
    let persisted_messages = ready.take_persisted_messages();
    let has_writes = snapshot.is_some()
        || !ready.entries().is_empty()
        || ready.hard_state().is_some()
        || !persisted_messages.is_empty();
    if has_writes {
        maybe_plan_crash_before_persist(world, id, running, &ready);
        maybe_stall_new_leader_disk(world, id, running, &ready);
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

/// A leader or candidate just handed out the messages of a new term whose
/// hard state is not durable yet: sometimes its disk holds that write back
/// for a few steps and the process crashes before it lands. Whatever left
/// before the crash must not let the node reuse the term with another log
/// or vote (the runtime sends a new term's messages only once it is durable).
fn maybe_plan_crash_before_persist(world: &mut World, id: NodeId, running: &mut Running, ready: &Ready) {
    if ready.persist_marker().term.is_none() || running.planned_crash.is_some() {
        return;
    }
    let status = running.raw.status();
    if !matches!(status.role, Role::Leader | Role::Candidate) {
        return;
    }
    // A sole voter wins its term without a message: whatever it sends in
    // that term before the term is durable is the danger (issue 12), so
    // its term changes are always aimed at when crashes are on.
    let sole_voter = status.conf_state.voters().len() == 1 && status.conf_state.voters_outgoing().is_empty();
    let chance = if sole_voter && world.crash_before_persist_chance > 0 {
        crate::rng::CERTAIN
    } else {
        world.crash_before_persist_chance
    };
    if !world.rng.chance(chance) {
        return;
    }
    let at_step = world.step + world.rng.between(2, 60);
    running.planned_crash = Some(CrashPoint {
        held_ready: Some(ready.number()),
        at_step,
        crash: true,
    });
    world.hash(&[113, id.get(), ready.number(), at_step]);
    world.trace_event(TraceEvent::Fault {
        detail: format!(
            "node {id}: its disk holds back Ready {} (a new term); the process crashes at step {at_step}",
            ready.number()
        ),
    });
}

/// A node just became leader (of several voters): sometimes its disk is
/// slow for a few steps, from the `Ready` with its first entry on. Its
/// followers acknowledge meanwhile, but its own log counts toward the
/// commit index only once durable, so a quorum may stand on older entries
/// alone — which must not commit by counting (§5.4.2).
fn maybe_stall_new_leader_disk(world: &mut World, id: NodeId, running: &mut Running, ready: &Ready) {
    let became_leader = ready.soft_state().is_some_and(|soft| soft.role == Role::Leader);
    if !became_leader || running.planned_crash.is_some() || !world.rng.chance(world.leader_disk_stall_chance)
    {
        return;
    }
    let at_step = world.step + world.rng.between(10, 100);
    running.planned_crash = Some(CrashPoint {
        held_ready: Some(ready.number()),
        at_step,
        crash: false,
    });
    world.hash(&[131, id.get(), ready.number(), at_step]);
    world.trace_event(TraceEvent::Fault {
        detail: format!(
            "node {id}: a new leader; its disk stalls from Ready {} until step {at_step}",
            ready.number()
        ),
    });
}

/// Whether the disk may write the oldest queued `Ready` now: not one held
/// back before a planned crash.
fn next_persist_allowed(running: &Running) -> bool {
    let held = running.planned_crash.and_then(|point| point.held_ready);
    match (running.unpersisted.front(), held) {
        (Some(job), Some(held)) => job.number < held,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A node just sent a granted vote (after persisting it): sometimes the
/// process reboots a few steps later, so that a vote request of another
/// candidate of the same term may reach the new incarnation. The vote must
/// have survived.
fn maybe_plan_reboot_after_vote(world: &mut World, id: NodeId, running: &mut Running, sent: &[Envelope]) {
    let voted = sent.iter().any(|envelope| {
        matches!(&envelope.message, Message::VoteResponse(response)
            if response.kind == VoteKind::Vote && response.granted)
    });
    if !voted || running.planned_crash.is_some() || !world.rng.chance(world.reboot_after_vote_chance) {
        return;
    }
    let at_step = world.step + world.rng.between(0, 3);
    running.planned_crash = Some(CrashPoint {
        held_ready: None,
        at_step,
        crash: true,
    });
    world.hash(&[127, id.get(), at_step]);
    world.trace_event(TraceEvent::Fault {
        detail: format!("node {id} voted; the process reboots at step {at_step}"),
    });
}

/// Queues a `Ready`'s committed entries (and snapshot restore) for the
/// applier, handing their membership changes to the core now or, in a
/// runtime that does so when applying, later.
fn queue_apply(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    ready: &mut Ready,
    snapshot: Option<(SnapshotMetadata, KvStore)>,
) -> Result<(), Violation> {
    let applied_index = ready.last_committed_index().max(ready.persist_marker().snapshot);
    let committed = ready.take_committed_entries();
    let conf_changes_pending = running.conf_changes_when_applied;
    let memberships = if conf_changes_pending {
        Vec::new()
    } else {
        hand_out_conf_changes(world, id, running, &committed)?
    };
    if applied_index.is_some() {
        running.unapplied.push_back(ApplyJob {
            ready_number: ready.number(),
            snapshot,
            entries: committed,
            memberships,
            conf_changes_pending,
            applied_index,
        });
    }
    Ok(())
}

/// Writes a job's snapshot, entries and hard state, then syncs if asked.
/// Returns false if the disk failed (the process is now failing).
pub(crate) fn write_to_disk(
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
pub(crate) fn check_written(
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

/// The asynchronous disk completes the oldest write of the node.
pub(crate) fn persist_next(node: &mut SimNode, world: &mut World) -> Result<bool, Violation> {
    let id = node.id;
    let Some(running) = node.running_mut() else {
        return Ok(false);
    };
    if running.crash_at_tick.is_some() || running.stopped || !next_persist_allowed(running) {
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
    maybe_plan_reboot_after_vote(world, id, running, &job.persisted_messages);
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
    if running.crash_at_tick.is_some() || running.stopped || !running.applier_runs() {
        return Ok(false);
    }
    let Some(job) = running.unapplied.front() else {
        return Ok(false);
    };
    if job.snapshot.is_some() && job.ready_number > running.persisted_ready {
        return Ok(false);
    }
    let Some(mut job) = running.unapplied.pop_front() else {
        return Ok(false);
    };
    world.hash(&[17, id.get(), job.ready_number]);
    if let Some((metadata, image)) = job.snapshot {
        restore(world, id, running, &metadata, image)?;
    }
    if job.conf_changes_pending {
        job.memberships = hand_out_conf_changes(world, id, running, &job.entries)?;
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
            && (next_persist_allowed(running)
                || running.applier_runs()
                    && running.unapplied.front().is_some_and(|job| {
                        job.snapshot.is_none() || job.ready_number <= running.persisted_ready
                    }))
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
