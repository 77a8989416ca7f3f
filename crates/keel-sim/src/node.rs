//! One simulated node: a `RawNode` over a [`SimStorage`], its state machine,
//! and the runtime loop that handles its `Ready`s (synchronously, or with
//! a simulated asynchronous disk).

use std::collections::{BTreeMap, VecDeque};

use keel::{
    ConfState, Config, Entry, Envelope, Error, HardState, Index, NodeId, PersistMarker, RawNode, ReadState,
    Role, SnapshotMetadata,
};

use crate::checker::{Property, Violation};
use crate::clock::NodeClock;
use crate::kv::KvStore;
use crate::storage::SimStorage;

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
    pub(crate) number: u64,
    pub(crate) snapshot: Option<(SnapshotMetadata, KvStore)>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) must_sync: bool,
    pub(crate) marker: PersistMarker,
    pub(crate) persisted_messages: Vec<Envelope>,
}

/// Committed entries of one `Ready` waiting to be applied.
#[derive(Debug)]
pub(crate) struct ApplyJob {
    pub(crate) ready_number: u64,
    pub(crate) snapshot: Option<(SnapshotMetadata, KvStore)>,
    pub(crate) entries: Vec<Entry>,
    /// The membership after each membership change among `entries` (the
    /// core switched to it when the entries were handed out).
    pub(crate) memberships: Vec<(Index, ConfState)>,
    /// The membership changes among `entries` are handed to the core only
    /// when the applier applies them (`memberships` is filled then).
    pub(crate) conf_changes_pending: bool,
    pub(crate) applied_index: Option<Index>,
}

/// A crash (or a disk stall) planned at a moment that matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CrashPoint {
    /// The `Ready` whose write the disk holds back until the crash (a new
    /// term not yet durable), or `None` for a reboot after a vote (nothing
    /// held back: the vote is durable, or should be).
    pub(crate) held_ready: Option<u64>,
    /// The step at which the process crashes (or, without `crash`, its
    /// disk catches up).
    pub(crate) at_step: u64,
    /// Whether the process crashes then; if not, the disk was only slow.
    pub(crate) crash: bool,
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
    /// A planned crash: before a new term is durable (its disk holds the
    /// write back), or a reboot right after a vote.
    pub(crate) planned_crash: Option<CrashPoint>,
    /// The applier is stalled until this tick (a slow state machine): it
    /// applies nothing while the commit index runs ahead.
    pub(crate) apply_stalled_until_tick: Option<u64>,
    /// See [`SimNode::conf_changes_when_applied`].
    pub(crate) conf_changes_when_applied: bool,
    /// The index of the latest snapshot the core holds (started from, or
    /// handed out in a `Ready` to install): its membership covers every
    /// change up to there.
    pub(crate) core_snapshot_index: Index,
    /// The clock's reading up to which ticks were charged to the core; the
    /// rest are owed (a paused process owes every tick of its pause).
    pub(crate) ticks_charged: u64,
    /// A sync failed: the process crashes at this tick. Until then its
    /// outputs are discarded (the runtime stopped writing and sending).
    pub(crate) crash_at_tick: Option<u64>,
    /// Keel returned a fatal error: every later call must say `Stopped`.
    pub(crate) stopped: bool,
    pub(crate) unpersisted: VecDeque<PersistJob>,
    pub(crate) unapplied: VecDeque<ApplyJob>,
    pub(crate) persisted_ready: u64,
    /// Snapshot images received with snapshot messages, by index.
    pub(crate) received_images: BTreeMap<Index, KvStore>,
    /// Confirmed reads waiting for `kv_applied` to reach their index.
    pub(crate) confirmed_reads: Vec<ReadState>,
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

    /// Whether the applier makes progress now.
    pub(crate) fn applier_runs(&self) -> bool {
        self.apply_stalled_until_tick.is_none()
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
    /// The machine's clock (it outlives the process).
    pub(crate) clock: NodeClock,
    /// The runtime hands membership changes to the core when its applier
    /// applies them (etcd's raftexample), not when a `Ready` hands them out
    /// (keel-node): a slow applier then leaves the core in a membership the
    /// cluster has left.
    pub(crate) conf_changes_when_applied: bool,
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

    /// Starts a process from `storage` at true time `now_microticks`,
    /// restoring the state machine from its durable snapshot. The new
    /// process owes its core no ticks yet.
    pub(crate) fn start(&mut self, storage: SimStorage, now_microticks: u64) -> Result<(), Violation> {
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
            apply_stalled_until_tick: None,
            planned_crash: None,
            conf_changes_when_applied: self.conf_changes_when_applied,
            core_snapshot_index: snapshot.last.index,
            ticks_charged: self.clock.ticks_at(now_microticks),
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
