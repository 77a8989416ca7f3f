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
use std::fmt;

use keel::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Config, Error, NodeId,
    RawNode, ReadMode, Role, SnapshotOutcome, Status,
};

use crate::checker::{Property, SafetyChecker, Violation};
use crate::faults::{Fault, FaultSet};
use crate::history::{Completion, History, OutcomeCounts, Path, Record};
use crate::kv::{Command, Key, Operation, Value};
use crate::linearizability::{check_history, Verdict};
use crate::network::{Network, NetworkFaults, SnapshotReport};
use crate::node::{self, call, describe, message_word, read_context, Process, SimNode};
use crate::rng::SimRng;
use crate::storage::{CrashSurvivors, SimStorage};
use crate::trace::{TraceEvent, TraceHasher, TraceRing};
use crate::world::{Client, Outstanding, Stats, World};

/// The liveness bound for electing a leader once faults stop, in election
/// timeouts (`election_timeout_ticks_max` each).
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 10;
/// The bound for every node to converge once a leader is known, in
/// election timeouts.
pub const CONVERGENCE_ELECTION_TIMEOUTS: u64 = 30;
/// The most ticks a paused node catches up on when it resumes.
const CATCH_UP_TICKS_MAX: u64 = 200;
/// Step weights (see `step_once`).
const STEP_WEIGHT_DELIVER_EACH: u64 = 30;
/// Deliverable messages counted in the delivery weight (see `step_once`).
const DELIVERABLE_WEIGHTED_MAX: u64 = 200;
const STEP_WEIGHT_TICK: u64 = 100;
const STEP_WEIGHT_CLIENT: u64 = 80;
const STEP_WEIGHT_DISK: u64 = 150;
const STEP_WEIGHT_FAULT: u64 = 5;
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

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed: the same seed (with the same options) replays exactly.
    pub seed: u64,
    /// Steps of the fault phase.
    pub steps: u64,
    /// The fault classes that may happen.
    pub faults: FaultSet,
    /// How many trace events to keep for a failure report.
    pub trace_capacity: usize,
    /// A protocol bug to plant in every node (the drill).
    #[cfg(feature = "drill")]
    pub planted_bug: Option<keel::PlantedBug>,
    /// Shut a removed node down as soon as it applies its removal, instead
    /// of once the voters of its new membership have applied it too. Shows
    /// a known core liveness issue (see the README); off by default.
    pub retire_at_once: bool,
    /// Report how snapshot sends end (`RawNode::report_snapshot`), as the
    /// core's contract requires. Off only to show what breaks without it.
    pub report_snapshots: bool,
}

impl SimOptions {
    /// Every fault, 3,000 steps, the last 200 events kept.
    pub fn new(seed: u64) -> Self {
        SimOptions {
            seed,
            steps: 3_000,
            faults: FaultSet::all(),
            trace_capacity: 200,
            #[cfg(feature = "drill")]
            planted_bug: None,
            retire_at_once: false,
            report_snapshots: true,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        #[cfg(feature = "drill")]
        let (features, bug) = match self.planted_bug {
            Some(bug) => (" --features drill", format!(" --planted-bug {bug:?}")),
            None => ("", String::new()),
        };
        #[cfg(not(feature = "drill"))]
        let (features, bug) = ("", String::new());
        let mut extra = String::new();
        if self.retire_at_once {
            extra.push_str(" --retire-at-once");
        }
        if !self.report_snapshots {
            extra.push_str(" --no-snapshot-reports");
        }
        format!(
            "cargo run -p keel-sim --release{features} -- --seed {} --steps {} --faults {}{bug}{extra} --trace 2000",
            self.seed, self.steps, self.faults
        )
    }
}

/// The cluster and workload a seed draws (the FoundationDB habit of
/// randomizing configuration as well as faults).
#[derive(Clone, Debug)]
pub struct Shape {
    /// Voters.
    pub nodes: u64,
    /// Each node's configuration.
    pub configs: Vec<Config>,
    /// How the network misbehaves.
    pub network: NetworkFaults,
    /// Concurrent clients.
    pub clients: u32,
    /// Keys the clients use.
    pub keys: u8,
    /// Ticks a client waits before it gives up (outcome unknown).
    pub client_timeout_ticks: u64,
}

impl Shape {
    fn draw(rng: &mut SimRng, faults: &FaultSet) -> Shape {
        let nodes = *rng.pick(&[3, 3, 4, 5, 5]).unwrap_or(&3);
        let election_timeout_ticks_min = rng.between(5, 12);
        // etcd's habit: timeouts spread over [min, 2 min); a narrower range
        // makes split votes (and liveness failures) a matter of luck.
        let election_timeout_ticks_max = 2 * election_timeout_ticks_min + rng.between(0, 4);
        let heartbeat_interval_ticks = rng.between(1, 2);
        let pre_vote = rng.chance(800_000);
        let check_quorum = rng.chance(700_000);
        let async_storage_writes = rng.chance(500_000);
        let max_message_bytes = rng.between(128, 2048);
        let max_inflight_messages = rng.between(1, 16) as usize;
        let max_inflight_bytes = max_message_bytes * rng.between(1, 8);
        let max_uncommitted_bytes = rng.between(512, 16 * 1024);
        let max_committed_bytes_per_ready = rng.between(64, 4096);
        let forward_proposals = rng.chance(900_000);
        let priorities = rng.chance(200_000);
        let configs = (1..=nodes)
            .map(|id| {
                let mut config = Config::new(NodeId::new(id));
                config.election_timeout_ticks_min = election_timeout_ticks_min;
                config.election_timeout_ticks_max = election_timeout_ticks_max;
                config.heartbeat_interval_ticks = heartbeat_interval_ticks;
                config.pre_vote = pre_vote;
                config.check_quorum = check_quorum;
                config.async_storage_writes = async_storage_writes;
                config.max_message_bytes = max_message_bytes;
                config.max_inflight_messages = max_inflight_messages;
                config.max_inflight_bytes = max_inflight_bytes;
                config.max_uncommitted_bytes = max_uncommitted_bytes;
                config.max_committed_bytes_per_ready = max_committed_bytes_per_ready;
                config.forward_proposals = forward_proposals;
                config.priority = if priorities { rng.below(3) } else { 0 };
                config.rng_seed = rng.next_u64();
                config
            })
            .collect();
        let network = NetworkFaults {
            loss: if faults.contains(Fault::Loss) {
                rng.between(0, 50_000) as u32
            } else {
                0
            },
            duplicate: if faults.contains(Fault::Duplicate) {
                rng.between(0, 30_000) as u32
            } else {
                0
            },
            delay_ticks_max: if faults.contains(Fault::Delay) {
                rng.between(0, DELAY_TICKS_MAX_ANY)
            } else {
                0
            },
            reorder: faults.contains(Fault::Reorder) && rng.chance(700_000),
        };
        Shape {
            nodes,
            configs,
            network,
            clients: rng.between(2, 5) as u32,
            keys: rng.between(1, 3) as u8,
            client_timeout_ticks: 4 * election_timeout_ticks_max,
        }
    }

    fn template(&self) -> &Config {
        &self.configs[0]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.template();
        write!(
            formatter,
            "{} nodes, election {}..{} ticks, heartbeat {}, pre-vote {}, check-quorum {}, async writes {}, \
             inflight {}, message {} B, priorities {:?}, {} clients on {} keys, loss {} ppm, duplicate {} ppm, delay <= {} ticks, reorder {}",
            self.nodes,
            config.election_timeout_ticks_min,
            config.election_timeout_ticks_max,
            config.heartbeat_interval_ticks,
            config.pre_vote,
            config.check_quorum,
            config.async_storage_writes,
            config.max_inflight_messages,
            config.max_message_bytes,
            self.configs.iter().map(|config| config.priority).collect::<Vec<_>>(),
            self.clients,
            self.keys,
            self.network.loss,
            self.network.duplicate,
            self.network.delay_ticks_max,
            self.network.reorder
        )
    }
}

/// What a passing run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken, all phases.
    pub steps: u64,
    /// Ticks the clock advanced.
    pub ticks: u64,
    /// The hash of the whole trace (the determinism self-check compares it).
    pub trace_hash: u64,
    /// The drawn cluster and workload.
    pub shape: String,
    /// Client operation outcomes.
    pub outcomes: OutcomeCounts,
    /// Operations given to the linearizability checker.
    pub operations_checked: usize,
    /// Counters.
    pub stats: Stats,
    /// Ticks from the end of faults to a leader known to all.
    pub liveness_leader_ticks: u64,
    /// Ticks from then to convergence.
    pub liveness_converge_ticks: u64,
}

/// A failing run: what broke, where, and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step at which the check failed.
    pub step: u64,
    /// The tick at which it failed.
    pub tick: u64,
    /// The broken property.
    pub property: Property,
    /// What broke it.
    pub detail: String,
    /// The last events before the failure.
    pub trace: String,
    /// The command that replays the run.
    pub replay: String,
    /// The drawn cluster.
    pub shape: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "seed {} FAILED at step {} (tick {}): {}",
            self.seed, self.step, self.tick, self.property
        )?;
        writeln!(formatter, "  {}", self.detail.replace('\n', "\n  "))?;
        writeln!(formatter, "cluster: {}", self.shape)?;
        writeln!(formatter, "last events:")?;
        write!(formatter, "{}", self.trace)?;
        writeln!(formatter, "replay: {}", self.replay)
    }
}

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
    next_value: Value,
    last_written: Vec<Option<Value>>,
}

impl Simulation {
    fn new(options: &SimOptions) -> Self {
        let mut rng = SimRng::new(options.seed);
        let shape = Shape::draw(&mut rng, &options.faults);
        let voters = ConfState::with_voters((1..=shape.nodes).map(NodeId::new));
        let world = World {
            rng,
            now: 0,
            step: 0,
            event: 0,
            network: Network::new(shape.network),
            checker: SafetyChecker::new(),
            clients: (0..shape.clients)
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
        };
        let mut world = world;
        world.checker.observe_bootstrap(
            keel::SnapshotMetadata::bootstrap(voters.clone()).last.index,
            voters.clone(),
        );
        world.stats.voters_min = shape.nodes;
        world.stats.voters_max = shape.nodes;
        let nodes = shape
            .configs
            .iter()
            .map(|config| {
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
            next_value: 1,
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
            self.step_once()?;
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
        let idle_clients = self
            .world
            .clients
            .iter()
            .any(|client| client.outstanding.is_none());
        let disk_work = self.nodes.iter().any(node::has_disk_work);
        // Relative rates: per tick, about one client invocation per idle
        // client and one fault per twenty ticks; messages and disk work are
        // drained far faster than the clock advances.
        let weights = [
            STEP_WEIGHT_DELIVER_EACH * deliverable.min(DELIVERABLE_WEIGHTED_MAX),
            STEP_WEIGHT_TICK,
            if idle_clients && self.faults_on {
                STEP_WEIGHT_CLIENT
            } else {
                0
            },
            if disk_work { STEP_WEIGHT_DISK } else { 0 },
            if self.faults_on { STEP_WEIGHT_FAULT } else { 0 },
        ];
        match self.world.rng.weighted(&weights) {
            Some(0) => self.deliver_one(&held),
            Some(2) => self.invoke(),
            Some(3) => self.disk_step(),
            Some(4) => self.inject_fault(),
            _ => self.tick(),
        }
    }

    fn deliver_one(&mut self, held: &BTreeSet<NodeId>) -> Result<(), Violation> {
        let Some(message) = self
            .world
            .network
            .take_next(&mut self.world.rng, self.world.now, held)
        else {
            return Ok(());
        };
        let envelope = message.envelope;
        let (from, to) = (envelope.from, envelope.to);
        self.world
            .hash(&[3, from.get(), to.get(), message_word(&envelope)]);
        let position = (to.get() - 1) as usize;
        let reason = if self.world.network.is_cut(from, to) {
            Some("link cut")
        } else if self.nodes.get(position).and_then(SimNode::running).is_none() {
            Some("recipient down")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.world.stats.messages_dropped += 1;
            if message.reports_outcome {
                self.world
                    .network
                    .snapshot_failed(&mut self.world.rng, self.world.now, from, to);
            }
            self.world.trace_event(TraceEvent::Drop {
                from,
                to,
                kind: envelope.message.kind_name(),
                reason,
            });
            self.maybe_report_unreachable(from, to);
            return Ok(());
        }
        if self.world.trace.is_enabled() {
            self.world.trace_event(TraceEvent::Deliver {
                from,
                to,
                term: envelope.term,
                kind: envelope.message.kind_name(),
                detail: describe(&envelope.message),
            });
        }
        self.world.stats.messages_delivered += 1;
        let node = &mut self.nodes[position];
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        node::receive_image(running, &envelope, message.image);
        match call(to, running, |raw| raw.step(envelope))? {
            Err(error) if !error.is_fatal() => {
                self.world.stats.messages_refused += 1;
                self.world.hash(&[29, to.get()]);
            }
            _ => {}
        }
        node::process_ready(node, &mut self.world)?;
        if message.reports_outcome {
            // The stream ended well: the sender's transport says so at once
            // (or when the sender resumes, if it is paused).
            let report = SnapshotReport {
                from,
                to,
                outcome: SnapshotOutcome::Delivered,
                due_tick: self.world.now,
            };
            let sender = self
                .nodes
                .get((from.get() - 1) as usize)
                .and_then(SimNode::running);
            match sender {
                Some(running) if running.is_healthy() && running.is_responsive() => {
                    self.report_snapshot(report)?
                }
                Some(running) if running.is_healthy() => self.world.network.queue_report(report),
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands a snapshot outcome to its sender's `report_snapshot`, if the
    /// sender is still the healthy process that sent it.
    fn report_snapshot(&mut self, report: SnapshotReport) -> Result<(), Violation> {
        let position = (report.from.get() - 1) as usize;
        let Some(node) = self.nodes.get_mut(position) else {
            return Ok(());
        };
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        if !self.options.report_snapshots {
            return Ok(());
        }
        running.raw.report_snapshot(report.to, report.outcome);
        self.world.stats.snapshot_reports += 1;
        if report.outcome == SnapshotOutcome::Failed {
            self.world.stats.snapshot_failures_reported += 1;
        }
        let delivered = report.outcome == SnapshotOutcome::Delivered;
        self.world
            .hash(&[73, report.from.get(), report.to.get(), u64::from(delivered)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!(
                "node {}: snapshot to {} reported {:?}",
                report.from, report.to, report.outcome
            ),
        });
        node::process_ready(node, &mut self.world)
    }

    /// Reports the snapshot outcomes that are due to senders that take
    /// input (a paused sender's wait).
    fn deliver_snapshot_reports(&mut self) -> Result<(), Violation> {
        let nodes = &self.nodes;
        let due = self.world.network.take_due_reports(self.world.now, |from| {
            let sender = nodes.get((from.get() - 1) as usize).and_then(SimNode::running);
            !matches!(sender, Some(running) if !running.is_responsive())
        });
        for report in due {
            self.report_snapshot(report)?;
        }
        Ok(())
    }

    /// The transport of `from` notices it cannot reach `to` (sometimes).
    fn maybe_report_unreachable(&mut self, from: NodeId, to: NodeId) {
        let position = (from.get() - 1) as usize;
        if !self.world.rng.chance(500_000) {
            return;
        }
        if let Some(running) = self.nodes.get_mut(position).and_then(SimNode::running_mut) {
            if running.is_healthy() && running.is_responsive() {
                running.raw.report_unreachable(to);
            }
        }
    }

    fn tick(&mut self) -> Result<(), Violation> {
        self.world.now += 1;
        let now = self.world.now;
        self.world.hash(&[1, now]);
        self.world.trace_event(TraceEvent::Tick { tick: now });
        if self.heal_at_tick.is_some_and(|tick| tick <= now) {
            self.heal();
        }
        for position in 0..self.nodes.len() {
            self.run_timers(position)?;
        }
        self.deliver_snapshot_reports()?;
        for position in 0..self.nodes.len() {
            let node = &mut self.nodes[position];
            let id = node.id;
            let Some(running) = node.running_mut() else {
                continue;
            };
            if !running.is_responsive() {
                continue;
            }
            call(id, running, RawNode::tick)?.ok();
            node::process_ready(node, &mut self.world)?;
        }
        self.world.expire_requests();
        Ok(())
    }

    /// Restarts, resumes and crashes that are due.
    fn run_timers(&mut self, position: usize) -> Result<(), Violation> {
        let now = self.world.now;
        match &self.nodes[position].process {
            Process::Down { restart_at_tick, .. } if *restart_at_tick <= now => self.restart(position),
            Process::Running(running) if running.crash_at_tick.is_some_and(|tick| tick <= now) => {
                self.crash(position);
                Ok(())
            }
            Process::Running(running)
                if running.paused_since_tick.is_some() && running.resume_at_tick <= now =>
            {
                self.resume(position)
            }
            _ => Ok(()),
        }
    }

    fn heal(&mut self) {
        if self.world.network.has_cuts() {
            self.world.network.heal();
            self.world.hash(&[31]);
            self.world.trace_event(TraceEvent::Fault {
                detail: "every link healed".to_string(),
            });
        }
        self.heal_at_tick = None;
    }

    fn restart(&mut self, position: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[position];
        let Process::Down { storage, .. } = &node.process else {
            return Ok(());
        };
        let storage = (**storage).clone();
        node.start(storage)?;
        let id = node.id;
        self.world.hash(&[37, id.get(), u64::from(node.incarnation)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id} starts (incarnation {})", node.incarnation),
        });
        node::process_ready(&mut self.nodes[position], &mut self.world)
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
        let missed = (now - since).min(CATCH_UP_TICKS_MAX);
        self.world.hash(&[43, id.get(), missed]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id} resumes and catches up {missed} ticks"),
        });
        for _ in 0..missed {
            let Some(running) = node.running_mut() else {
                break;
            };
            call(id, running, RawNode::tick)?.ok();
            node::process_ready(node, &mut self.world)?;
        }
        Ok(())
    }

    fn disk_step(&mut self) -> Result<(), Violation> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|position| node::has_disk_work(&self.nodes[*position]))
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
            [node::persist_next, node::apply_next]
        } else {
            [node::apply_next, node::persist_next]
        };
        let mut did = false;
        for work in order {
            if work(node, &mut self.world)? {
                did = true;
                break;
            }
        }
        if did {
            node::process_ready(node, &mut self.world)?;
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

    fn invoke(&mut self) -> Result<(), Violation> {
        let idle: Vec<u32> = (0..self.shape.clients)
            .filter(|client| self.world.clients[*client as usize].outstanding.is_none())
            .collect();
        let Some(&client) = self.world.rng.pick(&idle) else {
            return Ok(());
        };
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let key = self.world.rng.below(u64::from(self.shape.keys)) as Key;
        let (operation, path) = self.draw_operation(key);
        let request = self.world.clients[client as usize].next_request;
        self.world.clients[client as usize].next_request += 1;
        let node = &mut self.nodes[position];
        let id = node.id;
        let invoked_at = self.world.next_event();
        let record = self.world.history.invoke(Record {
            client,
            request,
            operation,
            path,
            node: id,
            invoked_at,
            completion: None,
        });
        self.world.clients[client as usize].outstanding = Some(Outstanding {
            request,
            record,
            node: id,
            incarnation: node.incarnation,
            path,
            key,
            deadline_tick: self.world.now + self.shape.client_timeout_ticks,
        });
        self.world
            .hash(&[47, u64::from(client), request, id.get(), u64::from(key)]);
        if self.world.trace.is_enabled() {
            let detail = format!("{}", self.world.history.record(record));
            self.world.trace_event(TraceEvent::Client { detail });
        }
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let result = match path {
            Path::Log => {
                let command = Command {
                    client,
                    request,
                    operation,
                };
                call(id, running, |raw| raw.propose(command.encode()))?
            }
            Path::ReadIndex(mode) => call(id, running, |raw| {
                raw.read_index(read_context(client, request), mode)
            })?,
        };
        match result {
            Ok(()) => {}
            Err(error) if error.is_fatal() => self
                .world
                .complete_client(client, Completion::Unknown("node stopped")),
            Err(Error::Proposal(_)) => self
                .world
                .complete_client(client, Completion::Fail("proposal refused")),
            Err(Error::Read(_)) => self
                .world
                .complete_client(client, Completion::Fail("read refused")),
            Err(other) => {
                return Err(Violation::new(
                    Property::Contract,
                    format!("node {id} answered a client request with {other}"),
                ))
            }
        }
        node::process_ready(node, &mut self.world)
    }

    fn draw_operation(&mut self, key: Key) -> (Operation, Path) {
        let rng = &mut self.world.rng;
        match rng.weighted(&[4, 4, 2]) {
            Some(0) => {
                let value = self.next_value;
                self.next_value += 1;
                self.last_written[usize::from(key)] = Some(value);
                (Operation::Put { key, value }, Path::Log)
            }
            Some(1) => {
                let check_quorum = self.shape.template().check_quorum;
                let path = match rng.weighted(&[35, 45, if check_quorum { 20 } else { 0 }]) {
                    Some(0) => Path::Log,
                    Some(1) => Path::ReadIndex(ReadMode::Safe),
                    _ => Path::ReadIndex(ReadMode::Lease),
                };
                (Operation::Get { key }, path)
            }
            _ => {
                let expected = if rng.chance(700_000) {
                    self.last_written[usize::from(key)]
                } else {
                    None
                };
                let new = self.next_value;
                self.next_value += 1;
                self.last_written[usize::from(key)] = Some(new);
                (Operation::Cas { key, expected, new }, Path::Log)
            }
        }
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
        let mut voters = conf.voters.clone();
        voters.extend(conf.voters_outgoing.iter().copied());
        let available = self.available();
        let unavailable = voters
            .iter()
            .filter(|id| !available.contains(&((id.get() - 1) as usize)))
            .count();
        unavailable < voters.len().div_ceil(2)
    }

    fn inject_fault(&mut self) -> Result<(), Violation> {
        let minority_left = self.may_lose_a_voter();
        let faults = &self.options.faults;
        let choices = [
            (Fault::Crash, 3, minority_left),
            (Fault::Pause, 2, minority_left),
            (Fault::Partition, 2, !self.world.network.has_cuts()),
            (Fault::OneWay, 1, !self.world.network.has_cuts()),
            (Fault::IsolateLeader, 2, !self.world.network.has_cuts()),
            (Fault::FsyncFailure, 1, minority_left),
            (Fault::Compaction, 4, true),
            (Fault::Transfer, 2, true),
            (Fault::Churn, 3, true),
        ];
        let weights: Vec<u64> = choices
            .iter()
            .map(|(fault, weight, possible)| {
                if *possible && faults.contains(*fault) {
                    *weight
                } else {
                    0
                }
            })
            .collect();
        let Some(choice) = self.world.rng.weighted(&weights) else {
            return Ok(());
        };
        let fault = choices[choice].0;
        self.world.hash(&[53, choice as u64]);
        match fault {
            Fault::Crash => self.fault_crash(),
            Fault::Pause => self.fault_pause(),
            Fault::Partition | Fault::OneWay | Fault::IsolateLeader => self.fault_partition(fault),
            Fault::FsyncFailure => self.fault_fsync(),
            Fault::Compaction => self.fault_compaction()?,
            Fault::Transfer => self.fault_transfer()?,
            Fault::Churn => self.fault_churn()?,
            _ => {}
        }
        Ok(())
    }

    fn fault_crash(&mut self) {
        // Half the time the leader: leader crashes right after elections
        // are where commit-rule bugs (Figure 8) show.
        let leader = self.leader().map(|leader| (leader.get() - 1) as usize);
        let available = self.available();
        let target = match leader {
            Some(leader) if self.world.rng.chance(500_000) => Some(leader),
            _ => self.world.rng.pick(&available).copied(),
        };
        if let Some(position) = target {
            self.crash(position);
        }
    }

    fn fault_pause(&mut self) {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return;
        };
        let election = self.election_timeout_ticks();
        let now = self.world.now;
        let resume_at_tick = now + self.world.rng.between(1, 2 * election);
        let node = &mut self.nodes[position];
        let id = node.id;
        if let Some(running) = node.running_mut() {
            running.paused_since_tick = Some(now);
            running.resume_at_tick = resume_at_tick;
        }
        self.world.stats.pauses += 1;
        self.world.hash(&[59, id.get(), resume_at_tick]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id} pauses until tick {resume_at_tick}"),
        });
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

    fn fault_partition(&mut self, fault: Fault) {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|node| node.id).collect();
        let detail = match fault {
            Fault::IsolateLeader => {
                let Some(leader) = self.leader() else {
                    return;
                };
                ids.retain(|id| *id != leader);
                self.world.network.partition(&[leader], &ids);
                format!("leader {leader} isolated")
            }
            Fault::OneWay => {
                let count = self.world.rng.between(1, ids.len() as u64);
                let mut cuts = Vec::new();
                for _ in 0..count {
                    let from = ids[self.world.rng.below(ids.len() as u64) as usize];
                    let to = ids[self.world.rng.below(ids.len() as u64) as usize];
                    if from != to {
                        self.world.network.cut(from, to);
                        cuts.push(format!("{from}->{to}"));
                    }
                }
                format!("one-way cuts {}", cuts.join(" "))
            }
            _ => {
                // A random split into two non-empty groups.
                for position in (1..ids.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    ids.swap(position, other);
                }
                let split = self.world.rng.between(1, ids.len() as u64 - 1) as usize;
                let (left, right) = ids.split_at(split);
                self.world.network.partition(left, right);
                format!("partition {left:?} | {right:?}")
            }
        };
        let election = self.election_timeout_ticks();
        let heal_at = self.world.now + self.world.rng.between(election / 2, 4 * election);
        self.heal_at_tick = Some(heal_at);
        self.world.stats.partitions += 1;
        self.world.hash(&[61, heal_at]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("{detail}; heals at tick {heal_at}"),
        });
    }

    fn fault_fsync(&mut self) {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return;
        };
        let node = &mut self.nodes[position];
        let id = node.id;
        if let Some(running) = node.running_mut() {
            running.raw.storage_mut().fail_next_sync();
        }
        self.world.hash(&[67, id.get()]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: its next fsync will fail"),
        });
    }

    fn fault_compaction(&mut self) -> Result<(), Violation> {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let keep = self.world.rng.below(6);
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        node::compact(&mut self.world, id, running, keep)?;
        Ok(())
    }

    fn fault_transfer(&mut self) -> Result<(), Violation> {
        let available = self.available();
        let leader = self.leader();
        // Mostly ask the leader; sometimes a follower, which forwards.
        let position = match leader {
            Some(leader) if self.world.rng.chance(700_000) => (leader.get() - 1) as usize,
            _ => match self.world.rng.pick(&available) {
                Some(position) => *position,
                None => return Ok(()),
            },
        };
        // A voter of the current membership; now and then any node (a
        // learner or a removed node must be refused).
        let voters: Vec<NodeId> = self.latest_conf().voters.into_iter().collect();
        let target = match self.world.rng.pick(&voters) {
            Some(voter) if self.world.rng.chance(900_000) => *voter,
            _ => NodeId::new(self.world.rng.between(1, self.nodes.len() as u64)),
        };
        let transfer_by_tick = self.world.now + self.election_timeout_ticks();
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        let result = call(id, running, |raw| raw.transfer_leader(target))?;
        self.world.stats.transfers += 1;
        if result.is_ok() && leader != Some(target) {
            self.world.transfer = Some((target, transfer_by_tick));
            self.world.stats.transfers_started += 1;
        }
        self.world
            .hash(&[71, id.get(), target.get(), u64::from(result.is_ok())]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: transfer leadership to {target}: {result:?}"),
        });
        node::process_ready(node, &mut self.world)
    }

    /// Nodes that learnt they were removed shut down once every voter of
    /// the membership that removed them has applied it too (or, now and
    /// then, are left running: they must not disrupt the cluster).
    ///
    /// The wait matters: a leader removed by a change steps down as soon as
    /// it applies it, and the new members learn that the change committed
    /// only from a later leader. Until they apply it they are still in the
    /// old (or joint) membership and need the removed voters' votes, so
    /// shutting those down at once can leave the rest without a quorum for
    /// good (`SimOptions::retire_at_once` shows it).
    fn retire_removed(&mut self) {
        for position in 0..self.nodes.len() {
            let node = &self.nodes[position];
            let id = node.id;
            let Some(running) = node.running() else {
                continue;
            };
            let Some(removed_at) = running.learnt_removal else {
                continue;
            };
            if node.lingering {
                continue;
            }
            if !node.removal_decided {
                let lingering = self.world.rng.chance(250_000);
                let node = &mut self.nodes[position];
                node.removal_decided = true;
                node.lingering = lingering;
                if lingering {
                    self.world.hash(&[83, id.get()]);
                    self.world.trace_event(TraceEvent::Fault {
                        detail: format!("node {id} learnt it was removed and is left running"),
                    });
                    continue;
                }
            }
            let conf = self.nodes[position]
                .running()
                .map(|running| &running.applied_conf);
            let everyone_applied = self.options.retire_at_once
                || conf.is_some_and(|conf| {
                    conf.voters.iter().chain(&conf.voters_outgoing).all(|voter| {
                        self.nodes
                            .get((voter.get() - 1) as usize)
                            .and_then(SimNode::running)
                            .is_some_and(|other| other.kv_applied >= removed_at)
                    })
                });
            if !everyone_applied {
                continue;
            }
            let node = &mut self.nodes[position];
            node.retired = true;
            node.process = Process::Down {
                storage: Box::new(SimStorage::default()),
                restart_at_tick: u64::MAX,
            };
            self.world
                .network
                .crashed(&mut self.world.rng, self.world.now, id);
            self.world.stats.nodes_retired += 1;
            self.world.hash(&[89, id.get()]);
            self.world.trace_event(TraceEvent::Fault {
                detail: format!("node {id} learnt it was removed and shuts down"),
            });
            self.world.abandon_requests_on(id);
        }
    }

    /// Starts a new, empty node (it learns the membership from a snapshot
    /// once it is added). `None` once [`NODES_MAX`] nodes have been started.
    fn spawn_node(&mut self) -> Result<Option<NodeId>, Violation> {
        if self.nodes.len() >= NODES_MAX {
            return Ok(None);
        }
        let id = NodeId::new(self.nodes.len() as u64 + 1);
        #[allow(unused_mut)]
        let mut config = self.shape.template().clone();
        config.id = id;
        config.rng_seed = self.world.rng.next_u64();
        if self.shape.configs.iter().any(|config| config.priority > 0) {
            config.priority = self.world.rng.below(3);
        }
        #[cfg(feature = "drill")]
        {
            config.planted_bug = self.options.planted_bug;
        }
        self.nodes.push(SimNode {
            id,
            config,
            incarnation: 0,
            process: Process::Down {
                storage: Box::new(SimStorage::default()),
                restart_at_tick: self.world.now,
            },
            retired: false,
            lingering: false,
            removal_decided: false,
        });
        self.world.stats.nodes_added += 1;
        self.restart(self.nodes.len() - 1)?;
        Ok(Some(id))
    }

    /// A membership change, proposed (mostly) on the leader: add a learner,
    /// promote, demote, remove (the leader too), add a voter, replace one or
    /// two voters at once through a joint configuration, or leave an
    /// explicit joint configuration. Keeps 3–7 voters.
    fn fault_churn(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let Some(status) = self.nodes[(leader.get() - 1) as usize]
            .running()
            .filter(|running| running.is_healthy() && running.is_responsive())
            .map(|running| running.raw.status())
        else {
            return Ok(());
        };
        if status.pending_conf_index > status.applied {
            return Ok(()); // one change at a time: it would be refused
        }
        let conf = status.conf_state;
        let change = if conf.is_joint() {
            if conf.auto_leave {
                return Ok(()); // the leader leaves it by itself
            }
            ConfChange::leave_joint()
        } else {
            match self.draw_change(&conf, leader)? {
                Some(change) => change,
                None => return Ok(()),
            }
        };
        // Mostly on the leader; sometimes a follower, which forwards it.
        let available = self.available();
        let position = match self.world.rng.pick(&available) {
            Some(position) if self.world.rng.chance(200_000) => *position,
            _ => (leader.get() - 1) as usize,
        };
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        let result = call(id, running, |raw| raw.propose_conf_change(&change))?;
        if result.is_ok() {
            self.world.stats.conf_changes_proposed += 1;
        }
        self.world.hash(&[
            97,
            id.get(),
            change.changes.len() as u64,
            u64::from(result.is_ok()),
        ]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: membership change {change:?}: {result:?}"),
        });
        node::process_ready(node, &mut self.world)
    }

    /// Draws a change to a simple membership `conf` led by `leader`.
    fn draw_change(&mut self, conf: &ConfState, leader: NodeId) -> Result<Option<ConfChange>, Violation> {
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let can_grow = voters.len() < VOTERS_MAX;
        let can_shrink = voters.len() > VOTERS_MIN;
        let can_spawn = self.nodes.len() < NODES_MAX;
        let weights = [
            if can_spawn { 3 } else { 0 },                         // add a learner
            if can_grow && !learners.is_empty() { 3 } else { 0 },  // promote
            if can_shrink { 1 } else { 0 },                        // demote
            if learners.is_empty() { 0 } else { 1 },               // remove a learner
            if can_shrink { 2 } else { 0 },                        // remove a voter
            if can_grow && can_spawn { 1 } else { 0 },             // add a voter
            if can_spawn || !learners.is_empty() { 3 } else { 0 }, // replace voters
        ];
        let single = |kind, node_id| ConfChangeSingle { kind, node_id };
        let change = match self.world.rng.weighted(&weights) {
            Some(0) => match self.spawn_node()? {
                Some(new) => ConfChange::add_learner(new),
                None => return Ok(None),
            },
            Some(1) => match self.world.rng.pick(&learners) {
                Some(learner) => ConfChange::add_voter(*learner),
                None => return Ok(None),
            },
            Some(2) => match self.world.rng.pick(&voters) {
                Some(voter) => ConfChange::add_learner(*voter),
                None => return Ok(None),
            },
            Some(3) => match self.world.rng.pick(&learners) {
                Some(learner) => ConfChange::remove_node(*learner),
                None => return Ok(None),
            },
            Some(4) => {
                // The leader a third of the time.
                let target = match self.world.rng.pick(&voters) {
                    _ if self.world.rng.chance(333_333) => leader,
                    Some(voter) => *voter,
                    None => return Ok(None),
                };
                ConfChange::remove_node(target)
            }
            Some(5) => match self.spawn_node()? {
                Some(new) => ConfChange::add_voter(new),
                None => return Ok(None),
            },
            Some(6) => {
                // One or two voters out, as many in (learners or new nodes);
                // the leader may be among those leaving.
                let count = self.world.rng.between(1, 2) as usize;
                let mut outgoing = voters.clone();
                for position in (1..outgoing.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    outgoing.swap(position, other);
                }
                outgoing.truncate(count);
                let mut incoming = learners.clone();
                for position in (1..incoming.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    incoming.swap(position, other);
                }
                incoming.truncate(count);
                while incoming.len() < count {
                    match self.spawn_node()? {
                        Some(new) => incoming.push(new),
                        None => break,
                    }
                }
                let mut changes = Vec::new();
                for (old, new) in outgoing.iter().zip(&incoming) {
                    changes.push(single(ConfChangeKind::AddVoter, *new));
                    let kind = if self.world.rng.chance(300_000) {
                        ConfChangeKind::AddLearner
                    } else {
                        ConfChangeKind::RemoveNode
                    };
                    changes.push(single(kind, *old));
                }
                if changes.is_empty() {
                    return Ok(None);
                }
                let transition = match self.world.rng.weighted(&[2, 1, 1]) {
                    Some(0) => ConfChangeTransition::Auto,
                    Some(1) => ConfChangeTransition::JointImplicit,
                    _ => ConfChangeTransition::JointExplicit,
                };
                ConfChange {
                    transition,
                    changes,
                    context: bytes::Bytes::new(),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(change))
    }

    /// Every per-step check on every node that is up and healthy.
    fn check_all(&mut self) -> Result<(), Violation> {
        self.retire_removed();
        for node in &mut self.nodes {
            let id = node.id;
            let Some(running) = node.running_mut() else {
                continue;
            };
            if !running.is_healthy() {
                continue;
            }
            running
                .raw
                .check_invariants()
                .map_err(|broken| Violation::new(Property::NodeInvariant, format!("node {id}: {broken}")))?;
            let status = running.raw.status();
            check_monotonic(id, running, &status)?;
            if status.role == Role::Leader && self.world.checker.observe_leader(status.hard_state.term, id)? {
                running.leader_check_pending = true;
                if let Some((target, by_tick)) = self.world.transfer.take() {
                    if target == id && self.world.now <= by_tick {
                        self.world.stats.transfers_completed += 1;
                    }
                }
            }
            let voters = running.applied_conf.voters.len() as u64;
            if voters > 0 {
                self.world.stats.voters_max = self.world.stats.voters_max.max(voters);
                self.world.stats.voters_min = self.world.stats.voters_min.min(voters);
            }
            let disk_caught_up = running.unpersisted.is_empty();
            if running.leader_check_pending && disk_caught_up {
                running.leader_check_pending = false;
                if status.role == Role::Leader {
                    check_leader_completeness(&self.world.checker, running, &status)?;
                }
            }
            if disk_caught_up {
                check_commit_rule(id, running, &status)?;
                track_commit(&mut self.world.checker, id, running, &status)?;
            }
            running.observed.hard_state = status.hard_state;
            running.observed.applied = status.applied;
            running.observed.role = Some(status.role);
            running.observed.leader = status.leader;
        }
        Ok(())
    }

    /// Faults stop; a leader must appear and every node converge.
    fn liveness(&mut self) -> Result<(u64, u64), Violation> {
        self.world.trace_event(TraceEvent::Phase { name: "liveness" });
        self.faults_on = false;
        self.heal();
        self.world.network.set_faults(NetworkFaults::default());
        for position in 0..self.nodes.len() {
            if let Some(running) = self.nodes[position].running_mut() {
                running.raw.storage_mut().disarm_sync_failure();
            }
            match &self.nodes[position].process {
                Process::Down { .. } if self.nodes[position].retired => {}
                Process::Down { .. } => self.restart(position)?,
                Process::Running(running) if !running.is_healthy() => {
                    self.crash(position);
                    self.restart(position)?;
                }
                Process::Running(running) if !running.is_responsive() => self.resume(position)?,
                Process::Running(_) => {}
            }
        }
        let election = self.election_timeout_ticks();
        let start = self.world.now;
        let leader = loop {
            if let Some(leader) = self.stable_leader() {
                break leader;
            }
            if self.world.now - start > LIVENESS_ELECTION_TIMEOUTS * election {
                return Err(Violation::new(
                    Property::Liveness,
                    format!(
                        "no leader known to every node {} ticks after faults stopped:\n{}",
                        self.world.now - start,
                        self.describe_nodes()
                    ),
                ));
            }
            self.quiet_round()?;
        };
        let leader_ticks = self.world.now - start;
        let marker = self.next_value;
        self.next_value += 1;
        self.propose_marker(leader, marker)?;
        self.leave_explicit_joint(leader)?;
        let converge_start = self.world.now;
        let mut proposed_at = self.world.now;
        loop {
            if self.converged(marker) {
                break;
            }
            // Leadership may still move (a transfer requested during the
            // faults completes): the write is retried through whoever leads,
            // as a client would; the session makes a retry apply once. An
            // explicit joint membership left by the faults is left, as its
            // operator would.
            if self.world.now - proposed_at >= election {
                if let Some(leader) = self.stable_leader() {
                    self.propose_marker(leader, marker)?;
                    self.leave_explicit_joint(leader)?;
                    proposed_at = self.world.now;
                }
            }
            if self.world.now - converge_start > CONVERGENCE_ELECTION_TIMEOUTS * election {
                return Err(Violation::new(
                    Property::Liveness,
                    format!(
                        "nodes did not converge {} ticks after leader {leader} was known (final write {marker:?}):\n{}",
                        self.world.now - converge_start,
                        self.describe_nodes()
                    ),
                ));
            }
            self.quiet_round()?;
        }
        // Let messages delayed during the faults arrive, then settle.
        for _ in 0..=DELAY_TICKS_MAX_ANY {
            if self.world.network.in_flight_count() == 0 {
                break;
            }
            self.quiet_round()?;
        }
        self.drain()?;
        // Nothing more will complete: what is left has an unknown outcome.
        for client in 0..self.shape.clients {
            self.world
                .complete_client(client, Completion::Unknown("run ended"));
        }
        Ok((leader_ticks, self.world.now - converge_start))
    }

    /// One round of the fault-free phase: deliver everything deliverable,
    /// drain the disks, then tick.
    fn quiet_round(&mut self) -> Result<(), Violation> {
        self.drain()?;
        self.world.step += 1;
        self.tick()?;
        self.check_all()
    }

    /// Delivers messages and completes disk work until none is left
    /// (without advancing the clock), or a bound is hit.
    fn drain(&mut self) -> Result<(), Violation> {
        for _ in 0..100 {
            self.drain_once()?;
            let quiet = self
                .world
                .network
                .deliverable_count(self.world.now, &BTreeSet::new())
                == 0
                && !self.nodes.iter().any(node::has_disk_work);
            if quiet {
                break;
            }
        }
        Ok(())
    }

    fn drain_once(&mut self) -> Result<(), Violation> {
        let held = BTreeSet::new();
        for _ in 0..10_000 {
            if self.world.network.deliverable_count(self.world.now, &held) == 0 {
                break;
            }
            self.world.step += 1;
            self.deliver_one(&held)?;
            self.check_all()?;
        }
        for position in 0..self.nodes.len() {
            while node::has_disk_work(&self.nodes[position]) {
                self.world.step += 1;
                let node = &mut self.nodes[position];
                let _ =
                    node::persist_next(node, &mut self.world)? || node::apply_next(node, &mut self.world)?;
                node::process_ready(node, &mut self.world)?;
                self.check_all()?;
            }
        }
        Ok(())
    }

    fn statuses(&self) -> Vec<Option<Status>> {
        self.nodes
            .iter()
            .map(|node| node.running().map(|running| running.raw.status()))
            .collect()
    }

    /// A leader every member of its membership runs under. Nodes outside it
    /// (removed ones left running, added ones whose change never committed)
    /// do not count, but they must not keep the members from agreeing.
    fn stable_leader(&self) -> Option<NodeId> {
        let statuses = self.statuses();
        let leader = statuses
            .iter()
            .flatten()
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.hard_state.term)?;
        let all_agree = leader.conf_state.members().iter().all(|member| {
            statuses
                .get((member.get() - 1) as usize)
                .and_then(Option::as_ref)
                .is_some_and(|status| {
                    status.hard_state.term == leader.hard_state.term && status.leader == Some(leader.id)
                })
        });
        all_agree.then_some(leader.id)
    }

    /// Proposes leaving an explicit joint membership, if the leader is in one.
    fn leave_explicit_joint(&mut self, leader: NodeId) -> Result<(), Violation> {
        let position = (leader.get() - 1) as usize;
        let node = &mut self.nodes[position];
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let status = running.raw.status();
        if !status.conf_state.is_joint()
            || status.conf_state.auto_leave
            || status.pending_conf_index > status.applied
        {
            return Ok(());
        }
        let result = call(leader, running, |raw| {
            raw.propose_conf_change(&ConfChange::leave_joint())
        })?;
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("leader {leader}: leave the joint membership: {result:?}"),
        });
        node::process_ready(node, &mut self.world)
    }

    /// A write through the leader that every node must apply.
    fn propose_marker(&mut self, leader: NodeId, value: Value) -> Result<(), Violation> {
        let command = Command {
            client: u32::MAX,
            request: value,
            operation: Operation::Put {
                key: LIVENESS_KEY,
                value,
            },
        };
        let position = (leader.get() - 1) as usize;
        let node = &mut self.nodes[position];
        if let Some(running) = node.running_mut() {
            if let Err(error) = call(leader, running, |raw| raw.propose(command.encode()))? {
                // A refusal (a transfer still in progress, the uncommitted
                // cap) is not a liveness failure by itself: the convergence
                // bound decides.
                self.world.trace_event(TraceEvent::Fault {
                    detail: format!("final write refused by leader {leader}: {error}"),
                });
            }
        }
        node::process_ready(&mut self.nodes[position], &mut self.world)
    }

    fn converged(&self, marker: Value) -> bool {
        let statuses = self.statuses();
        let Some(leader) = statuses
            .iter()
            .flatten()
            .find(|status| status.role == Role::Leader)
        else {
            return false;
        };
        let target = leader.hard_state.commit;
        let conf = &leader.conf_state;
        if target != leader.last_index || conf.is_joint() {
            return false;
        }
        // Every member of the final membership has applied everything, holds
        // the same state and the same membership.
        let mut digests = conf.members().into_iter().map(|member| {
            let running = self.nodes.get((member.get() - 1) as usize)?.running()?;
            let status = running.raw.status();
            let caught_up = running.kv_applied == target
                && status.applied == target
                && status.last_index == target
                && running.applied_conf == *conf
                && status.conf_state == *conf;
            (caught_up && running.kv.get(LIVENESS_KEY) == Some(marker)).then(|| running.kv.digest())
        });
        let Some(Some(first)) = digests.next() else {
            return false;
        };
        digests.all(|digest| digest == Some(first))
    }

    fn describe_nodes(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            match &node.process {
                Process::Down { restart_at_tick, .. } => {
                    text.push_str(&format!(
                        "  node {}: down until tick {restart_at_tick}\n",
                        node.id
                    ));
                }
                Process::Running(running) => {
                    let status = running.raw.status();
                    text.push_str(&format!(
                        "  node {}: {:?} term {} vote {:?} leader {:?} commit {} applied {} (kv {}) last {} stopped {} conf {:?} applied conf {:?} peers {:?}\n",
                        node.id,
                        status.role,
                        status.hard_state.term,
                        status.hard_state.vote.map(NodeId::get),
                        status.leader.map(NodeId::get),
                        status.hard_state.commit,
                        status.applied,
                        running.kv_applied,
                        status.last_index,
                        running.stopped,
                        status.conf_state,
                        running.applied_conf,
                        status
                            .peers
                            .iter()
                            .map(|peer| format!("{}:{}/{}/{}", peer.id, peer.matched, peer.next, peer.state))
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
        text
    }
}

/// Term, vote, commit and applied never go back within one incarnation;
/// the state machine never runs ahead of the commit index.
///
/// Across a crash, term and vote come back from the durable hard state
/// (which only grows: the vote check below and the double-vote check cover
/// it), while commit and applied may legitimately restart lower: commit is
/// persisted lazily (no fsync of its own) and clipped to the durable log,
/// and the state machine restarts from its durable snapshot and replays.
fn check_monotonic(id: NodeId, running: &node::Running, status: &Status) -> Result<(), Violation> {
    let before = running.observed.hard_state;
    let now = status.hard_state;
    let mut broken = Vec::new();
    if now.term < before.term {
        broken.push(format!("term {} -> {}", before.term, now.term));
    }
    if now.term == before.term && before.vote.is_some() && now.vote != before.vote {
        broken.push(format!(
            "vote in term {} {:?} -> {:?}",
            now.term, before.vote, now.vote
        ));
    }
    if now.commit < before.commit {
        broken.push(format!("commit {} -> {}", before.commit, now.commit));
    }
    if status.applied < running.observed.applied {
        broken.push(format!(
            "applied {} -> {}",
            running.observed.applied, status.applied
        ));
    }
    if !broken.is_empty() {
        return Err(Violation::new(
            Property::Monotonicity,
            format!("node {id} went back: {}", broken.join(", ")),
        ));
    }
    if running.kv_applied > now.commit {
        return Err(Violation::new(
            Property::StateMachineSafety,
            format!(
                "node {id} applied through {} but its commit index is {}",
                running.kv_applied, now.commit
            ),
        ));
    }
    Ok(())
}

/// A leader advances its commit index only to an entry of its own term
/// (§5.4.2, Figure 8): earlier terms' entries commit only underneath one.
fn check_commit_rule(id: NodeId, running: &node::Running, status: &Status) -> Result<(), Violation> {
    let before = running.observed;
    let stayed_leader = before.role == Some(Role::Leader)
        && status.role == Role::Leader
        && before.hard_state.term == status.hard_state.term;
    let commit = status.hard_state.commit;
    if !stayed_leader || commit <= before.hard_state.commit {
        return Ok(());
    }
    match running.raw.storage().entry(commit) {
        Some(entry) if entry.term != status.hard_state.term => Err(Violation::new(
            Property::CommitRule,
            format!(
                "leader {id} of term {} advanced its commit index from {} to {} whose entry is of term {}",
                status.hard_state.term, before.hard_state.commit, commit, entry.term
            ),
        )),
        _ => Ok(()),
    }
}

/// Records the node's newly committed entries (those on its disk).
fn track_commit(
    checker: &mut SafetyChecker,
    id: NodeId,
    running: &mut node::Running,
    status: &Status,
) -> Result<(), Violation> {
    let storage = running.raw.storage();
    let limit = status.hard_state.commit.min(storage.last_index_unchecked());
    let mut index = running.commit_checked.next().max(storage.first_index_unchecked());
    while index <= limit {
        if let Some(entry) = storage.entry(index) {
            checker.observe_committed(id, status.hard_state.term, entry, "commit index")?;
        }
        index = index.next();
    }
    running.commit_checked = running.commit_checked.max(limit);
    Ok(())
}

/// A leader holds every entry committed before its term (§5.4).
fn check_leader_completeness(
    checker: &SafetyChecker,
    running: &node::Running,
    status: &Status,
) -> Result<(), Violation> {
    let storage = running.raw.storage();
    let term = status.hard_state.term;
    for (index, entry_term) in checker.committed_before_term(storage.first_index_unchecked(), term) {
        if index > status.last_index {
            return Err(Violation::new(
                Property::LeaderCompleteness,
                format!(
                    "node {} became leader of term {term} with last index {} but {index} (term {entry_term}) was committed before",
                    status.id, status.last_index
                ),
            ));
        }
        if let Some(entry) = storage.entry(index) {
            if entry.term != entry_term {
                return Err(Violation::new(
                    Property::LeaderCompleteness,
                    format!(
                        "node {} became leader of term {term} holding {} where {} was committed before",
                        status.id,
                        entry.log_id(),
                        keel::LogId::new(entry_term, index)
                    ),
                ));
            }
        }
    }
    Ok(())
}
