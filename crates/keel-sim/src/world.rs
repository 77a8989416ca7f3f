//! Everything a simulation holds besides its nodes: the clock, the RNG,
//! the network, the checkers, the clients and the trace. Kept apart from
//! the nodes so a node and the world can be borrowed mutably together.

use std::collections::BTreeMap;

use keel::NodeId;

use crate::checker::SafetyChecker;
use crate::checker::{Property, Violation};
use crate::history::{Completion, History, Path};
use crate::kv::parse_read_context;
use crate::kv::{ClientId, Command, Key, Output};
use crate::network::Network;
use crate::rng::{PartsPerMillion, SimRng};
use crate::trace::{TraceEvent, TraceHasher, TraceRing};

/// Counters of what happened in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered to a node.
    pub messages_delivered: u64,
    /// Messages dropped at delivery (cut link, recipient down).
    pub messages_dropped: u64,
    /// Messages a node refused (malformed or from a non-member).
    pub messages_refused: u64,
    /// Process crashes (including those after a failed sync).
    pub crashes: u64,
    /// Process pauses.
    pub pauses: u64,
    /// Partitions, one-way cuts and leader isolations.
    pub partitions: u64,
    /// Syncs that failed.
    pub sync_failures: u64,
    /// Failed syncs after which keel itself reported the storage failure
    /// and stopped (the rest crashed before keel read the failed disk).
    pub keel_stopped: u64,
    /// Snapshots taken by nodes.
    pub snapshots_taken: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Entries applied, over all nodes.
    pub entries_applied: u64,
    /// Crashes after which some unsynced writes survived.
    pub torn_crashes: u64,
    /// Snapshot outcomes reported to their senders (delivered or failed).
    pub snapshot_reports: u64,
    /// Of those, failures (lost, cut, crashed or absent recipient).
    pub snapshot_failures_reported: u64,
    /// Leadership transfers accepted to a voter other than the leader.
    pub transfers_started: u64,
    /// Leadership transfers after which the target became leader within an
    /// election timeout.
    pub transfers_completed: u64,
    /// Membership changes proposed (and accepted for the log).
    pub conf_changes_proposed: u64,
    /// Membership changes applied, over all nodes.
    pub conf_changes_applied: u64,
    /// Membership changes the core refused at apply time, over all nodes.
    pub conf_changes_refused: u64,
    /// Nodes started empty to join the cluster.
    pub nodes_added: u64,
    /// Removed nodes shut down after they learnt of their removal.
    pub nodes_retired: u64,
    /// The most voters any applied membership had, and the fewest.
    pub voters_max: u64,
    /// See `voters_max`.
    pub voters_min: u64,
    /// Deliveries and disk steps of the liveness phase (see `budget`).
    pub liveness_work: u64,
    /// The most deliveries and disk steps between two of its ticks.
    pub quiet_tick_work_max: u64,
    /// Appliers stalled (slow state machines).
    pub applier_stalls: u64,
    /// Reads aimed at a leader being replaced (see `probe_leader`).
    pub leader_probes: u64,
    /// Processes crashed after handing out a new term's messages and before
    /// its disk made that term durable.
    pub crashes_before_persist: u64,
    /// Processes rebooted right after they voted.
    pub reboots_after_vote: u64,
    /// Forged messages handed to nodes.
    pub forged_messages: u64,
    /// Of those, refused with a typed error.
    pub forged_messages_refused: u64,
}

/// A client's request in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outstanding {
    pub(crate) request: u64,
    pub(crate) record: usize,
    pub(crate) node: NodeId,
    pub(crate) incarnation: u32,
    pub(crate) path: Path,
    pub(crate) key: Key,
    pub(crate) deadline_tick: u64,
}

/// A client: one request at a time, as linearizability checking assumes.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) next_request: u64,
    pub(crate) outstanding: Option<Outstanding>,
}

/// The world around the nodes.
pub(crate) struct World {
    pub(crate) rng: SimRng,
    /// True time in world ticks: `now_microticks` rounded down.
    pub(crate) now: u64,
    /// True time, in micro-ticks (see `clock`).
    pub(crate) now_microticks: u64,
    /// The current step.
    pub(crate) step: u64,
    /// The last history event number (invocations and completions).
    pub(crate) event: u64,
    pub(crate) network: Network,
    pub(crate) checker: SafetyChecker,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: History,
    pub(crate) hasher: TraceHasher,
    pub(crate) trace: TraceRing,
    pub(crate) stats: Stats,
    /// Every request applied fresh (in the committed order every node
    /// shares), the output it produced and the event of its first apply.
    pub(crate) applied_requests: BTreeMap<(ClientId, u64), (Output, u64)>,
    /// A requested leadership transfer: its target and the tick by which
    /// it should have completed.
    pub(crate) transfer: Option<(NodeId, u64)>,
    /// A leadership just seen for the first time; the simulation takes it
    /// after the step (see `write_through_new_leader`).
    pub(crate) new_leader: Option<NodeId>,
    /// The key of the latest write a client saw succeed.
    pub(crate) last_written_key: Option<Key>,
    /// Set when a write succeeds; the simulation takes it after the step
    /// to probe leaders being replaced.
    pub(crate) fresh_write: Option<Key>,
    /// The chance that a leader or candidate whose new term is not yet
    /// durable has its persist held back and crashes first (the crash
    /// fault; zero once faults stop).
    pub(crate) crash_before_persist_chance: PartsPerMillion,
    /// The chance that a node that just sent a granted vote reboots a few
    /// steps later (the crash fault; zero once faults stop).
    pub(crate) reboot_after_vote_chance: PartsPerMillion,
    /// The chance that a new leader's disk stalls for a few steps (the
    /// slow-apply fault, which covers slow disks too; zero once faults
    /// stop).
    pub(crate) leader_disk_stall_chance: PartsPerMillion,
}

impl World {
    /// A node applied a request for the first time in the log: record its
    /// output (which every node must compute alike) and when it was first
    /// applied (it was committed, so took effect, no later than that).
    pub(crate) fn record_applied(
        &mut self,
        node: NodeId,
        command: &Command,
        output: Output,
    ) -> Result<(), Violation> {
        let key = (command.client, command.request);
        match self.applied_requests.get(&key) {
            Some((earlier, _)) if *earlier != output => Err(Violation::new(
                Property::StateMachineSafety,
                format!(
                    "node {node} computed {output:?} for client {} request {} where another node computed {earlier:?}",
                    command.client, command.request
                ),
            )),
            Some(_) => Ok(()),
            None => {
                let at = self.next_event();
                self.applied_requests.insert(key, (output, at));
                Ok(())
            }
        }
    }

    /// Mixes words into the trace hash.
    pub(crate) fn hash(&mut self, words: &[u64]) {
        for word in words {
            self.hasher.write_u64(*word);
        }
    }

    /// Records a trace event at the current step.
    pub(crate) fn trace_event(&mut self, event: TraceEvent) {
        self.trace.push(self.step, event);
    }

    /// The next history event number.
    pub(crate) fn next_event(&mut self) -> u64 {
        self.event += 1;
        self.event
    }

    fn complete(&mut self, client: ClientId, completion: Completion) {
        let Some(outstanding) = self.clients[client as usize].outstanding.take() else {
            return;
        };
        let at = self.next_event();
        self.history.complete(outstanding.record, at, completion);
        let wrote = matches!(
            completion,
            Completion::Ok(Output::Written) | Completion::Ok(Output::CasSucceeded(true))
        );
        if wrote {
            self.last_written_key = Some(outstanding.key);
            self.fresh_write = Some(outstanding.key);
        }
        let code = match completion {
            Completion::Ok(Output::Written) => 1,
            Completion::Ok(Output::Value(value)) => 2 + value.unwrap_or(0).wrapping_mul(3),
            Completion::Ok(Output::CasSucceeded(succeeded)) => 3 + u64::from(succeeded) * 5,
            Completion::Fail(_) => 4,
            Completion::Unknown(_) => 5,
        };
        self.hash(&[23, u64::from(client), outstanding.request, code]);
        if self.trace.is_enabled() {
            let detail = format!("{} -> {completion:?}", self.history.record(outstanding.record));
            self.trace_event(TraceEvent::Client { detail });
        }
    }

    /// A node applied a logged command: complete the request if its client
    /// is waiting for it from that node incarnation.
    pub(crate) fn complete_log_request(
        &mut self,
        node: NodeId,
        incarnation: u32,
        command: &Command,
        output: Output,
    ) {
        let matches = self
            .clients
            .get(command.client as usize)
            .and_then(|client| client.outstanding)
            .is_some_and(|outstanding| {
                outstanding.request == command.request
                    && outstanding.node == node
                    && outstanding.incarnation == incarnation
                    && outstanding.path == Path::Log
            });
        if matches {
            self.complete(command.client, Completion::Ok(output));
        }
    }

    /// The outstanding read a context names, if it is still waiting on
    /// that node incarnation.
    fn outstanding_read(
        &self,
        node: NodeId,
        incarnation: u32,
        context: &[u8],
    ) -> Option<(ClientId, Outstanding)> {
        let (client, request) = parse_read_context(context)?;
        let outstanding = self.clients.get(client as usize)?.outstanding?;
        let matches = outstanding.request == request
            && outstanding.node == node
            && outstanding.incarnation == incarnation
            && matches!(outstanding.path, Path::ReadIndex(_));
        matches.then_some((client, outstanding))
    }

    /// The key of the read a context names.
    pub(crate) fn read_key(&self, node: NodeId, incarnation: u32, context: &[u8]) -> Option<Key> {
        self.outstanding_read(node, incarnation, context)
            .map(|(_, outstanding)| outstanding.key)
    }

    /// Completes the read a context names.
    pub(crate) fn complete_read(
        &mut self,
        node: NodeId,
        incarnation: u32,
        context: &[u8],
        completion: Completion,
    ) {
        if let Some((client, _)) = self.outstanding_read(node, incarnation, context) {
            self.complete(client, completion);
        }
    }

    /// Completes a client's request with `completion` (refusals, timeouts).
    pub(crate) fn complete_client(&mut self, client: ClientId, completion: Completion) {
        self.complete(client, completion);
    }

    /// Requests past their deadline end with an unknown outcome.
    pub(crate) fn expire_requests(&mut self) {
        for client in 0..self.clients.len() {
            let expired = self.clients[client]
                .outstanding
                .is_some_and(|outstanding| outstanding.deadline_tick <= self.now);
            if expired {
                self.complete(client as ClientId, Completion::Unknown("timed out"));
            }
        }
    }

    /// A node crashed: its clients learn nothing more from it.
    pub(crate) fn abandon_requests_on(&mut self, node: NodeId) {
        for client in 0..self.clients.len() {
            let waiting = self.clients[client]
                .outstanding
                .is_some_and(|outstanding| outstanding.node == node);
            if waiting {
                self.complete(client as ClientId, Completion::Unknown("node crashed"));
            }
        }
    }
}
