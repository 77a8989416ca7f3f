//! The state machine side of a node: membership changes handed to the
//! core, committed entries applied to the key-value store (each checked
//! against the cluster's committed entries), snapshots restored, and
//! confirmed reads served once their index is applied.

use keel::{
    ConfChange, ConfState, Entry, EntryKind, Error, Index, NodeId, ReadState, Ready, SnapshotMetadata, Term,
};

use crate::checker::{Property, Violation};
use crate::history::Completion;
use crate::kv::{Applied, Command, KvStore, Output};
use crate::node::{call, Running};
use crate::trace::TraceEvent;
use crate::world::World;

pub(crate) fn restore(
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
pub(crate) fn set_applied_conf(id: NodeId, running: &mut Running, conf: ConfState) {
    if running.applied_conf.contains(id) && !conf.contains(id) {
        running.learnt_removal = Some(running.kv_applied);
    }
    running.applied_conf = conf;
}

/// Applies the membership changes among committed entries to the core and
/// returns the membership after each: when a `Ready` hands them out
/// (keel-node's order: the core switches membership as the entries leave
/// it, and the applier later records each membership at its index), or
/// when the applier applies them. A change the core refuses leaves the
/// membership as it was.
///
/// An applier that runs behind may apply a change the core has already
/// moved past: a snapshot beyond it was installed meanwhile, holding the
/// membership that includes it. The change is then not handed to the core
/// again; the applier computes the membership after it from its own.
pub(crate) fn hand_out_conf_changes(
    world: &mut World,
    id: NodeId,
    running: &mut Running,
    entries: &[Entry],
) -> Result<Vec<(Index, ConfState)>, Violation> {
    let mut memberships = Vec::new();
    let mut applier_conf = running.applied_conf.clone();
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
        if entry.index <= running.core_snapshot_index {
            applier_conf = keel::confchange::apply(&applier_conf, &change).unwrap_or(applier_conf);
            memberships.push((entry.index, applier_conf.clone()));
            continue;
        }
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
        world.hash(&[79, id.get(), entry.index.get(), conf.voters().len() as u64]);
        applier_conf = conf.clone();
        memberships.push((entry.index, conf));
    }
    Ok(memberships)
}

/// Applies committed entries to the state machine, checking each against
/// the committed entries seen so far, and completes client requests.
pub(crate) fn apply_entries(
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
            EntryKind::ConfChange => {
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
pub(crate) fn take_reads(
    world: &mut World,
    id: NodeId,
    incarnation: u32,
    running: &mut Running,
    ready: &mut Ready,
) {
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
