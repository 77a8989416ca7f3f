//! The simulation: a cluster, its clients and the faults, driven step by
//! step from one seed, with every check after every step.
//!
//! A run has three phases:
//! 1. **Faults** (`steps` steps): each step is one event drawn by the RNG —
//!    deliver a message, advance the clock one tick, a client invokes an
//!    operation, the asynchronous disk completes a write or an apply, or a
//!    fault (crash, pause, partition, failed fsync, compaction, leadership
//!    transfer). After every step every check runs.
//! 2. **Liveness**: faults stop — links heal, crashed nodes restart, paused
//!    ones resume, the network stops losing messages. Within
//!    [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts (at most) a leader
//!    known to every node must appear, and within [`CONVERGENCE_ELECTION_TIMEOUTS`]
//!    more every node must have applied the same log, up to a final write
//!    made through that leader, and hold the same state machine.
//! 3. **History**: the client history must be linearizable.

use std::collections::BTreeSet;

use keel::{ConfState, NodeId, Role, Status};

use crate::budget::{Budget, LIVENESS_WORK_MAX};
use crate::checker::{Property, SafetyChecker, Violation};
use crate::faults::Fault;
use crate::history::{Completion, History};
use crate::kv::{Key, Value};
use crate::linearizability::{check_history, Verdict};
use crate::network::Network;
use crate::node::{Process, SimNode};
use crate::rng::SimRng;
use crate::runtime;
use crate::storage::{CrashSurvivors, SimStorage};
use crate::trace::{TraceEvent, TraceHasher, TraceRing};
use crate::world::{Client, Stats, World};

/// The liveness bound for electing a leader once faults stop, in election
/// timeouts (`election_timeout_ticks_max` each).
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 10;
/// The bound for every node to converge once a leader is known, in
/// election timeouts.
pub const CONVERGENCE_ELECTION_TIMEOUTS: u64 = 30;
/// Step weights (see `step_once`).
const STEP_WEIGHT_DELIVER_EACH: u64 = 60;
/// Deliverable messages counted in the delivery weight (see `step_once`).
const DELIVERABLE_WEIGHTED_MAX: u64 = 200;
const STEP_WEIGHT_TICK: u64 = 100;
const STEP_WEIGHT_CLIENT: u64 = 80;
const STEP_WEIGHT_DISK: u64 = 300;
const STEP_WEIGHT_FAULT: u64 = 6;
/// Clients beyond the drawn ones, for probes (see `clients`).
const PROBE_CLIENTS: u32 = 2;
/// The chance that a leader's or candidate's `Ready` with a new term has
/// its persist held back for a few steps and the process crashes first
/// (see `crash_before_persist`).
const CRASH_BEFORE_PERSIST_CHANCE: u32 = 200_000;
/// The chance that a new leader's disk stalls for a few steps.
const LEADER_DISK_STALL_CHANCE: u32 = 300_000;
/// The chance that a node that sent a granted vote reboots right after.
const REBOOT_AFTER_VOTE_CHANCE: u32 = 150_000;
/// The longest message delay any run draws, in ticks.
const DELAY_TICKS_MAX_ANY: u64 = 3;
/// The key of the final write of the liveness phase, outside the clients' keys.
const LIVENESS_KEY: Key = u8::MAX;
/// Membership churn keeps the voters between these bounds.
pub const VOTERS_MIN: usize = 3;
/// See [`VOTERS_MIN`].
pub const VOTERS_MAX: usize = 7;
/// The most nodes a run ever starts (founders and those added later; a
/// removed node's id is never reused).
const NODES_MAX: usize = 12;

mod checks;
mod churn;
mod clients;
mod delivery;
mod inject;
mod liveness;
mod options;
mod report;
mod shape;
mod time;

pub use options::SimOptions;
pub use report::{Failure, RunReport};
pub use shape::Shape;

/// Runs one seed through all three phases.
///
/// # Errors
/// The first violated property, with the trace and the replay command.
pub fn run(options: &SimOptions) -> Result<RunReport, Box<Failure>> {
    let mut simulation = Simulation::new(options);
    // A panic — a core assertion, or one in the simulator — is a failure of
    // the seed like any other: report it with the trace and the replay.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| simulation.run_phases()));
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(violation)) => Err(Box::new(simulation.failure(violation))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(Box::new(
                simulation.failure(Violation::new(Property::Panic, message)),
            ))
        }
    }
}

/// Runs a seed twice and compares the trace hashes.
///
/// # Errors
/// A description of the difference, or the run's failure.
pub fn check_determinism(options: &SimOptions) -> Result<u64, String> {
    let first = run(options).map_err(|failure| failure.to_string())?;
    let second = run(options).map_err(|failure| failure.to_string())?;
    if first.trace_hash != second.trace_hash || first.steps != second.steps || first.ticks != second.ticks {
        return Err(format!(
            "seed {} is not deterministic: trace hash {:016x} then {:016x}",
            options.seed, first.trace_hash, second.trace_hash
        ));
    }
    Ok(first.trace_hash)
}

struct Simulation {
    options: SimOptions,
    shape: Shape,
    nodes: Vec<SimNode>,
    world: World,
    faults_on: bool,
    heal_at_tick: Option<u64>,
    /// When to cut a stale membership off from the rest (see
    /// `fault_slow_apply`).
    stale_split_at_tick: Option<u64>,
    next_value: Value,
    last_written: Vec<Option<Value>>,
    /// The work the liveness phase may do (see `budget`).
    liveness_budget: Budget,
}

impl Simulation {
    fn new(options: &SimOptions) -> Self {
        let mut rng = SimRng::new(options.seed);
        let shape = Shape::draw(&mut rng, options);
        let voters = shape.founding_conf();
        let world = World {
            rng,
            now: 0,
            now_microticks: 0,
            step: 0,
            event: 0,
            network: Network::new(shape.network),
            checker: SafetyChecker::new(),
            // The drawn clients, and two more that only probe leaders being
            // replaced (so that a probe does not wait for an idle client):
            // one writes through the new leader, one reads from the old.
            clients: (0..shape.clients + PROBE_CLIENTS)
                .map(|_| Client {
                    next_request: 1,
                    outstanding: None,
                })
                .collect(),
            history: History::default(),
            hasher: TraceHasher::new(),
            trace: TraceRing::new(options.trace_capacity),
            stats: Stats::default(),
            applied_requests: std::collections::BTreeMap::new(),
            transfer: None,
            new_leader: None,
            last_written_key: None,
            fresh_write: None,
            crash_before_persist_chance: if options.faults.contains(Fault::Crash) {
                CRASH_BEFORE_PERSIST_CHANCE
            } else {
                0
            },
            reboot_after_vote_chance: if options.faults.contains(Fault::Crash) {
                REBOOT_AFTER_VOTE_CHANCE
            } else {
                0
            },
            leader_disk_stall_chance: if options.faults.contains(Fault::SlowApply) {
                LEADER_DISK_STALL_CHANCE
            } else {
                0
            },
        };
        let mut world = world;
        world.checker.observe_bootstrap(
            keel::SnapshotMetadata::bootstrap(voters.clone()).last.index,
            voters.clone(),
        );
        world.stats.voters_min = shape.voters;
        world.stats.voters_max = shape.voters;
        let nodes = shape
            .configs
            .iter()
            .zip(&shape.clocks)
            .map(|(config, clock)| {
                #[allow(unused_mut)]
                let mut config = config.clone();
                #[cfg(feature = "drill")]
                {
                    config.planted_bug = options.planted_bug;
                }
                SimNode {
                    id: config.id,
                    config,
                    incarnation: 0,
                    process: Process::Down {
                        storage: Box::new(SimStorage::bootstrapped(voters.clone())),
                        restart_at_tick: 0,
                    },
                    retired: false,
                    lingering: false,
                    removal_decided: false,
                    clock: *clock,
                    conf_changes_when_applied: shape.conf_changes_when_applied,
                }
            })
            .collect();
        Simulation {
            options: options.clone(),
            last_written: vec![None; usize::from(shape.keys)],
            shape,
            nodes,
            world,
            faults_on: true,
            heal_at_tick: None,
            stale_split_at_tick: None,
            next_value: 1,
            liveness_budget: Budget::new(
                "deliveries and disk steps of the liveness phase",
                LIVENESS_WORK_MAX,
            ),
        }
    }

    fn failure(&self, violation: Violation) -> Failure {
        Failure {
            seed: self.options.seed,
            step: self.world.step,
            tick: self.world.now,
            property: violation.property,
            detail: violation.detail,
            trace: self.world.trace.render(),
            replay: self.options.replay_command(),
            shape: self.shape.to_string(),
        }
    }

    fn election_timeout_ticks(&self) -> u64 {
        self.shape.template().election_timeout_ticks_max
    }

    fn run_phases(&mut self) -> Result<RunReport, Violation> {
        for position in 0..self.nodes.len() {
            self.restart(position)?;
        }
        self.world.trace_event(TraceEvent::Phase { name: "faults" });
        for _ in 0..self.options.steps {
            self.world.step += 1;
            self.crash_at_planned_points()?;
            self.step_once()?;
            if let Some(leader) = self.world.new_leader.take() {
                self.write_through_new_leader(leader)?;
            }
            if let Some(key) = self.world.fresh_write.take() {
                self.probe_stale_leaders(key)?;
            }
            self.check_all()?;
        }
        let (leader_ticks, converge_ticks) = self.liveness()?;
        // The run converged with nothing in flight: a request whose command
        // never applied can no longer take effect, and one that applied has
        // the output the state machine computed.
        let settled = self.world.network.in_flight_count() == 0;
        let operations = self
            .world
            .history
            .checked_operations(&self.world.applied_requests, settled);
        match check_history(&operations) {
            Verdict::Linearizable => {}
            Verdict::Violation {
                key,
                linearized_max,
                operations: count,
                blocked,
            } => {
                let records: Vec<String> = self
                    .world
                    .history
                    .records_for_key(key)
                    .filter(|record| !matches!(record.completion, Some((_, Completion::Fail(_)))))
                    .map(|record| format!("  {record}"))
                    .collect();
                let shown = records.len().min(60);
                return Err(Violation::new(
                    Property::Linearizability,
                    format!(
                        "key {key}: no linearization of its {count} operations; at most {linearized_max} linearize, \
                         blocked at {blocked:?}\nlast {shown} operations on the key:\n{}",
                        records[records.len() - shown..].join("\n")
                    ),
                ));
            }
            Verdict::Inconclusive { key } => {
                let of_key: Vec<_> = operations
                    .iter()
                    .filter(|operation| operation.operation.key() == key)
                    .collect();
                let unknown = of_key
                    .iter()
                    .filter(|operation| operation.completed_at.is_none())
                    .count();
                return Err(Violation::new(
                    Property::LinearizabilityInconclusive,
                    format!(
                        "key {key}: the search ran out of its budget on {} operations, {unknown} with unknown outcome \
                         (settled: {settled})",
                        of_key.len()
                    ),
                ));
            }
        }
        let digests: Vec<u64> = self
            .nodes
            .iter()
            .filter_map(|node| node.running().map(|r| r.kv.digest()))
            .collect();
        self.world.hash(&digests);
        self.world.hash(&[self.world.now, self.world.step]);
        Ok(RunReport {
            seed: self.options.seed,
            steps: self.world.step,
            ticks: self.world.now,
            trace_hash: self.world.hasher.finish(),
            shape: self.shape.to_string(),
            outcomes: self.world.history.counts(),
            operations_checked: operations.len(),
            stats: self.world.stats,
            liveness_leader_ticks: leader_ticks,
            liveness_converge_ticks: converge_ticks,
            trace: self.world.trace.render(),
        })
    }

    /// Paused nodes: their messages wait in the network.
    fn held(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|node| node.running().is_some_and(|running| !running.is_responsive()))
            .map(|node| node.id)
            .collect()
    }

    fn step_once(&mut self) -> Result<(), Violation> {
        let held = self.held();
        let deliverable = self.world.network.deliverable_count(self.world.now, &held) as u64;
        let idle_clients = !self.idle_clients().is_empty();
        // Each node's disk and applier work on their own: the more nodes
        // have work, the more of it gets done per tick.
        let disks_with_work = self
            .nodes
            .iter()
            .filter(|node| runtime::has_disk_work(node))
            .count() as u64;
        // Relative rates: per tick, about one client invocation per idle
        // client and one fault per twenty ticks; messages and disk work are
        // drained far faster than the clock advances.
        let weights = [
            STEP_WEIGHT_DELIVER_EACH * deliverable.min(DELIVERABLE_WEIGHTED_MAX),
            // One clock step moves time by about a world tick divided by
            // the number of clocks.
            STEP_WEIGHT_TICK * self.clock_count().max(1),
            if idle_clients && self.faults_on {
                STEP_WEIGHT_CLIENT
            } else {
                0
            },
            STEP_WEIGHT_DISK * disks_with_work,
            if self.faults_on { STEP_WEIGHT_FAULT } else { 0 },
        ];
        match self.world.rng.weighted(&weights) {
            Some(0) => self.deliver_one(&held),
            Some(2) => self.invoke(),
            Some(3) => self.disk_step(),
            Some(4) => self.inject_fault(),
            _ => self.clock_step(),
        }
    }

    fn restart(&mut self, position: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[position];
        let Process::Down { storage, .. } = &node.process else {
            return Ok(());
        };
        let storage = (**storage).clone();
        node.start(storage, self.world.now_microticks)?;
        let id = node.id;
        if let Some(running) = node.running() {
            // Writes that survived the crash unsynced are durable now.
            runtime::observe_durable_vote(&mut self.world, id, running)?;
        }
        self.world.hash(&[37, id.get(), u64::from(node.incarnation)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id} starts (incarnation {})", node.incarnation),
        });
        runtime::process_ready(&mut self.nodes[position], &mut self.world)
    }

    fn crash(&mut self, position: usize) {
        let election = self.election_timeout_ticks();
        let torn = self.options.faults.contains(Fault::TornWrite);
        let node = &mut self.nodes[position];
        let id = node.id;
        let Process::Running(running) = &node.process else {
            return;
        };
        let storage = running.raw.storage();
        let pending = storage.pending_writes();
        let survivors = if torn && pending > 0 && self.world.rng.chance(500_000) {
            self.world.stats.torn_crashes += 1;
            CrashSurvivors {
                writes: self.world.rng.between(1, pending as u64) as usize,
                torn_entries: self
                    .world
                    .rng
                    .chance(500_000)
                    .then(|| self.world.rng.below(8) as usize),
            }
        } else {
            CrashSurvivors {
                writes: 0,
                torn_entries: None,
            }
        };
        if running.stopped {
            self.world.stats.keel_stopped += 1;
        }
        let storage = storage.after_crash(survivors);
        self.world
            .network
            .crashed(&mut self.world.rng, self.world.now, id);
        let long_outage = self.world.rng.chance(200_000);
        let downtime = if !self.faults_on {
            0 // the liveness phase restarts at once
        } else if long_outage {
            self.world.rng.between(8 * election, 16 * election)
        } else {
            self.world.rng.between(1, 3 * election)
        };
        let restart_at_tick = self.world.now + downtime;
        node.process = Process::Down {
            storage: Box::new(storage),
            restart_at_tick,
        };
        self.world.stats.crashes += 1;
        self.world
            .hash(&[41, id.get(), restart_at_tick, survivors.writes as u64]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!(
                "node {id} crashes ({} of {pending} unsynced writes survive, torn {:?}); restarts at tick {restart_at_tick}",
                survivors.writes, survivors.torn_entries
            ),
        });
        self.world.abandon_requests_on(id);
    }

    fn resume(&mut self, position: usize) -> Result<(), Violation> {
        let now = self.world.now;
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let Some(since) = running.paused_since_tick.take() else {
            return Ok(());
        };
        // The process takes input again; its runtime charges the ticks it
        // owes for the pause at once, or (sometimes) only at its next tick,
        // after handling whatever messages arrive first — a lease read is
        // charged for them in any case (see `invoke`).
        let charge_now = self.world.rng.chance(500_000);
        self.world
            .hash(&[43, id.get(), now - since, u64::from(charge_now)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!(
                "node {id} resumes after {} ticks; its clock is charged {}",
                now - since,
                if charge_now { "at once" } else { "at its next tick" }
            ),
        });
        // A read may arrive before anything else: the runtime charges the
        // clock first only for a lease read.
        self.probe_if_leader(position)?;
        if charge_now {
            runtime::charge_clock(&mut self.nodes[position], &mut self.world)?;
        }
        Ok(())
    }

    fn disk_step(&mut self) -> Result<(), Violation> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|position| runtime::has_disk_work(&self.nodes[*position]))
            .collect();
        let Some(&position) = self.world.rng.pick(&candidates) else {
            return Ok(());
        };
        let persist_first = self.world.rng.chance(600_000);
        let node = &mut self.nodes[position];
        // The disk and the applier run concurrently in a real runtime: either
        // may finish first.
        type DiskWork = fn(&mut SimNode, &mut World) -> Result<bool, Violation>;
        let order: [DiskWork; 2] = if persist_first {
            [runtime::persist_next, runtime::apply_next]
        } else {
            [runtime::apply_next, runtime::persist_next]
        };
        let mut did = false;
        for work in order {
            if work(node, &mut self.world)? {
                did = true;
                break;
            }
        }
        if did {
            runtime::process_ready(node, &mut self.world)?;
        }
        Ok(())
    }

    /// Nodes that take input and whose outputs count.
    fn available(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|position| {
                self.nodes[*position]
                    .running()
                    .is_some_and(|running| running.is_healthy() && running.is_responsive())
            })
            .collect()
    }

    /// The membership as of the furthest applied state machine: the
    /// voters whose loss the faults ration.
    fn latest_conf(&self) -> ConfState {
        self.nodes
            .iter()
            .filter_map(SimNode::running)
            .max_by_key(|running| running.kv_applied)
            .map(|running| running.applied_conf.clone())
            .unwrap_or_default()
    }

    /// Whether one more voter may go down: fewer than half of the voters
    /// (both halves of a joint membership counted together) are down.
    fn may_lose_a_voter(&self) -> bool {
        let conf = self.latest_conf();
        let mut voters = conf.voters().clone();
        voters.extend(conf.voters_outgoing().iter().copied());
        let available = self.available();
        let unavailable = voters
            .iter()
            .filter(|id| !available.contains(&((id.get() - 1) as usize)))
            .count();
        unavailable < voters.len().div_ceil(2)
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| {
                node.running()
                    .filter(|running| running.is_healthy())
                    .map(|running| running.raw.status())
            })
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.hard_state.term)
            .map(|status| status.id)
    }

    fn statuses(&self) -> Vec<Option<Status>> {
        self.nodes
            .iter()
            .map(|node| node.running().map(|running| running.raw.status()))
            .collect()
    }
}
