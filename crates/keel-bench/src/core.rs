//! Workloads 1 and 2: the Raft core alone, no IO.
//!
//! A cluster of `nodes` lives in one thread; messages are passed in memory.
//! keel and raft-rs are driven by loops of the same shape, each written the
//! way the library's own documentation drives it:
//!
//! 1. the leader gets a batch of proposals (keel: `propose_batch`; raft-rs:
//!    one `MsgPropose` with every entry, see [`RaftRsPropose`]), each a freshly allocated buffer
//!    of `entry_bytes` (as if it had just arrived from a client: both
//!    libraries pay for one allocation and one copy per proposal);
//! 2. every node with a `Ready` persists its entries and hard state to the
//!    library's own in-memory storage, queues its messages, "applies" its
//!    committed entries (sums their lengths) and advances;
//! 3. every queued message is delivered (stepped) to its recipient.
//!
//! The round repeats until `duration` has passed; the figure is entries
//! applied by the leader per second of wall time, and process CPU time per
//! entry. Every node compacts its storage to the cluster's lowest applied
//! index every so often so that memory stays flat.
//!
//! Both libraries get the same flow-control settings: 4096 messages in
//! flight per follower, 1 MiB per message, no cap on uncommitted or
//! committed-per-ready bytes. raft-rs also gets `batch_append`, its option
//! to merge appends to the same follower (keel always does).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Envelope, StorageWrite};

use crate::machine::cpu_time;

/// What one core run does.
#[derive(Clone, Copy, Debug)]
pub struct CoreParams {
    /// Voters in the cluster (3, 5, 7).
    pub nodes: u64,
    /// Payload of each proposal, in bytes.
    pub entry_bytes: usize,
    /// Proposals handed to the leader per round.
    pub batch: usize,
    /// How long to keep proposing.
    pub duration: Duration,
}

/// What one core run measured.
#[derive(Clone, Copy, Debug)]
pub struct CoreResult {
    /// Entries applied by the leader.
    pub entries: u64,
    /// Wall time of the measured loop.
    pub elapsed: Duration,
    /// Process CPU time (user + system) of the measured loop.
    pub cpu: Duration,
}

impl CoreResult {
    /// Entries committed and applied per second of wall time.
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU time per entry, in nanoseconds.
    pub fn cpu_nanos_per_entry(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e9 / self.entries.max(1) as f64
    }
}

/// Flow-control settings shared by both libraries.
const MAX_INFLIGHT_MESSAGES: usize = 4096;
const MAX_MESSAGE_BYTES: u64 = 1 << 20;
/// Compact when the cluster has applied this many bytes of payload since the
/// last compaction (at most every 100 000 entries).
const COMPACT_EVERY_BYTES: u64 = 32 << 20;
const COMPACT_EVERY_ENTRIES_MAX: u64 = 100_000;

fn compact_every(entry_bytes: usize) -> u64 {
    (COMPACT_EVERY_BYTES / entry_bytes.max(1) as u64).clamp(1024, COMPACT_EVERY_ENTRIES_MAX)
}

// ---------------------------------------------------------------- keel

struct KeelCluster {
    nodes: Vec<keel::RawNode<keel::MemStorage>>,
    applied: Vec<u64>,
    network: Vec<Envelope>,
}

impl KeelCluster {
    fn new(size: u64) -> Self {
        let voters = keel::ConfState::with_voters((1..=size).map(keel::NodeId::new));
        let nodes = (1..=size)
            .map(|id| {
                let mut config = keel::Config::new(keel::NodeId::new(id));
                config.max_inflight_messages = MAX_INFLIGHT_MESSAGES;
                config.max_message_bytes = MAX_MESSAGE_BYTES;
                config.max_inflight_bytes = u64::MAX / 2;
                config.max_uncommitted_bytes = u64::MAX / 2;
                config.max_committed_bytes_per_ready = u64::MAX / 2;
                let storage = keel::MemStorage::new_with_conf_state(voters.clone());
                keel::RawNode::new(&config, storage).expect("valid keel config")
            })
            .collect();
        let mut cluster = KeelCluster {
            nodes,
            applied: vec![0; size as usize],
            network: Vec::new(),
        };
        cluster.nodes[0].campaign().expect("campaign");
        for _ in 0..20 {
            cluster.round();
        }
        assert_eq!(cluster.nodes[0].status().role, keel::Role::Leader);
        cluster
    }

    /// One round: every node handles its ready, then every message is
    /// delivered. Returns the entries the leader applied.
    fn round(&mut self) -> u64 {
        let mut leader_applied = 0;
        for (position, node) in self.nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            let mut ready = node.ready().expect("ready");
            self.network.append(&mut ready.take_messages());
            let storage = node.storage_mut();
            // The entries are moved into storage (raft-rs's `MemStorage`
            // can only copy them: its `append` takes a slice).
            storage.append_owned(ready.take_entries()).expect("append");
            if let Some(hard_state) = ready.hard_state() {
                storage.set_hard_state(hard_state).expect("hard state");
            }
            self.network.append(&mut ready.take_persisted_messages());
            let committed = ready.committed_entries();
            if let Some(last) = committed.last() {
                let payload: u64 = committed.iter().map(|entry| entry.data.len() as u64).sum();
                black_box(payload);
                self.applied[position] = last.index.get();
                if position == 0 {
                    leader_applied += committed.len() as u64;
                }
            }
            node.advance(ready).expect("advance");
        }
        for envelope in self.network.drain(..) {
            let to = envelope.to.get() as usize - 1;
            self.nodes[to].step(envelope).expect("step");
        }
        leader_applied
    }

    fn compact(&mut self) {
        let through = self.applied.iter().copied().min().unwrap_or(0);
        for node in &mut self.nodes {
            node.storage_mut()
                .compact(keel::Index::new(through))
                .expect("compact");
        }
    }
}

/// A cluster the measuring loop drives, whichever library it runs.
trait Driven {
    /// Proposes one batch of `batch` copies of `payload` on the leader,
    /// runs one round and returns the entries the leader applied.
    fn propose_and_round(&mut self, payload: &[u8], batch: usize) -> u64;

    /// Compacts every node's storage to the cluster's lowest applied index.
    fn compact(&mut self);
}

/// The measuring loop, the same for both libraries: propose, run a round,
/// compact every so often, until `params.duration` has passed.
fn drive(cluster: &mut impl Driven, params: CoreParams) -> CoreResult {
    let payload = vec![0x5Au8; params.entry_bytes];
    let compact_every = compact_every(params.entry_bytes);
    let mut compacted_at = 0;
    let mut entries = 0u64;
    let cpu_started = cpu_time();
    let started = Instant::now();
    while started.elapsed() < params.duration {
        entries += cluster.propose_and_round(&payload, params.batch);
        if entries >= compacted_at + compact_every {
            compacted_at = entries;
            cluster.compact();
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_started);
    CoreResult {
        entries,
        elapsed,
        cpu,
    }
}

impl Driven for KeelCluster {
    fn propose_and_round(&mut self, payload: &[u8], batch: usize) -> u64 {
        // Each payload is allocated and copied once here and moved into
        // the library, as on the raft-rs side.
        self.nodes[0]
            .propose_batch((0..batch).map(|_| Bytes::copy_from_slice(payload)))
            .expect("propose");
        self.round()
    }

    fn compact(&mut self) {
        KeelCluster::compact(self);
    }
}

/// Runs the keel side of a core benchmark.
pub fn run_keel(params: CoreParams) -> CoreResult {
    drive(&mut KeelCluster::new(params.nodes), params)
}

// ---------------------------------------------------------------- raft-rs

struct RaftRsCluster {
    nodes: Vec<raft::RawNode<raft::storage::MemStorage>>,
    applied: Vec<u64>,
    network: Vec<raft::eraftpb::Message>,
}

impl RaftRsCluster {
    fn new(size: u64) -> Self {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let voters: Vec<u64> = (1..=size).collect();
        let nodes = (1..=size)
            .map(|id| {
                let config = raft::Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 1,
                    max_inflight_msgs: MAX_INFLIGHT_MESSAGES,
                    max_size_per_msg: MAX_MESSAGE_BYTES,
                    max_uncommitted_size: raft::NO_LIMIT,
                    max_committed_size_per_ready: raft::NO_LIMIT,
                    pre_vote: true,
                    check_quorum: true,
                    batch_append: true,
                    ..Default::default()
                };
                let storage = raft::storage::MemStorage::new_with_conf_state((voters.clone(), vec![]));
                raft::RawNode::new(&config, storage, &logger).expect("valid raft-rs config")
            })
            .collect();
        let mut cluster = RaftRsCluster {
            nodes,
            applied: vec![0; size as usize],
            network: Vec::new(),
        };
        cluster.nodes[0].campaign().expect("campaign");
        for _ in 0..20 {
            cluster.round();
        }
        assert_eq!(cluster.nodes[0].raft.state, raft::StateRole::Leader);
        cluster
    }

    /// One round, shaped as [`KeelCluster::round`], in raft-rs's documented
    /// synchronous form (`ready`, persist, `advance`, then the `LightReady`
    /// and `advance_apply`).
    fn round(&mut self) -> u64 {
        let mut leader_applied = 0;
        for (position, node) in self.nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            let mut ready = node.ready();
            self.network.append(&mut ready.take_messages());
            let committed = ready.take_committed_entries();
            leader_applied += apply_raft_rs(&committed, &mut self.applied[position], position);
            let storage = node.store().clone();
            storage.wl().append(ready.entries()).expect("append");
            if let Some(hard_state) = ready.hs() {
                storage.wl().set_hardstate(hard_state.clone());
            }
            self.network.append(&mut ready.take_persisted_messages());
            let mut light = node.advance(ready);
            if let Some(commit) = light.commit_index() {
                storage.wl().mut_hard_state().set_commit(commit);
            }
            self.network.append(&mut light.take_messages());
            let committed = light.take_committed_entries();
            leader_applied += apply_raft_rs(&committed, &mut self.applied[position], position);
            node.advance_apply();
        }
        for message in self.network.drain(..) {
            let to = message.to as usize - 1;
            self.nodes[to].step(message).expect("step");
        }
        leader_applied
    }

    fn compact(&mut self) {
        let through = self.applied.iter().copied().min().unwrap_or(0);
        for node in &mut self.nodes {
            node.store().wl().compact(through).expect("compact");
        }
    }
}

fn apply_raft_rs(committed: &[raft::eraftpb::Entry], applied: &mut u64, position: usize) -> u64 {
    let Some(last) = committed.last() else {
        return 0;
    };
    let payload: u64 = committed.iter().map(|entry| entry.data.len() as u64).sum();
    black_box(payload);
    *applied = last.index;
    if position == 0 {
        committed.len() as u64
    } else {
        0
    }
}

/// How the raft-rs leader is handed a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRsPropose {
    /// One `MsgPropose` carrying the whole batch (its fastest way; the
    /// figure keel is compared with).
    OneMessage,
    /// `RawNode::propose` once per entry (the documented `RawNode` API).
    EachEntry,
}

/// Proposes `batch` copies of `payload` on a raft-rs leader in the fastest
/// way its public API allows: `RawNode::propose` for one, and for more one
/// `MsgPropose` carrying every entry, stepped into the public `raft` field
/// (exactly what `RawNode::propose` does with a single entry). raft-rs's
/// `RawNode` has no batch-propose method; N calls of `propose` would be
/// slower, and measuring that would flatter keel.
fn propose_raft_rs(
    node: &mut raft::RawNode<raft::storage::MemStorage>,
    payload: &[u8],
    batch: usize,
    mode: RaftRsPropose,
) {
    if batch == 1 || mode == RaftRsPropose::EachEntry {
        for _ in 0..batch {
            node.propose(Vec::new(), payload.to_vec()).expect("propose");
        }
        return;
    }
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgPropose);
    message.from = node.raft.id;
    let entries: Vec<raft::eraftpb::Entry> = (0..batch)
        .map(|_| raft::eraftpb::Entry {
            data: payload.to_vec().into(),
            ..Default::default()
        })
        .collect();
    message.set_entries(entries.into());
    node.raft.step(message).expect("propose");
}

/// A raft-rs cluster with the way its leader is handed batches.
struct RaftRsDriven {
    cluster: RaftRsCluster,
    mode: RaftRsPropose,
}

impl Driven for RaftRsDriven {
    fn propose_and_round(&mut self, payload: &[u8], batch: usize) -> u64 {
        propose_raft_rs(&mut self.cluster.nodes[0], payload, batch, self.mode);
        self.cluster.round()
    }

    fn compact(&mut self) {
        self.cluster.compact();
    }
}

/// Runs the raft-rs side of a core benchmark.
pub fn run_raft_rs(params: CoreParams, mode: RaftRsPropose) -> CoreResult {
    let cluster = RaftRsCluster::new(params.nodes);
    drive(&mut RaftRsDriven { cluster, mode }, params)
}

/// Which library a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    /// This project.
    Keel,
    /// tikv's raft-rs.
    RaftRs,
}

/// Both libraries measured on one configuration.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// raft-rs's median run (by entries per second).
    pub raft_rs: CoreResult,
    /// keel's median run (by entries per second).
    pub keel: CoreResult,
    /// The median over pairs of back-to-back runs of keel's entries/s over
    /// raft-rs's: robust to noise that lasts longer than one pair.
    pub throughput_ratio: f64,
    /// The same for raft-rs's CPU time per entry over keel's.
    pub cpu_ratio: f64,
    /// raft-rs's median run with one `propose` call per entry (batches
    /// above 1 only).
    pub raft_rs_each_entry: Option<CoreResult>,
}

/// Runs `params` on both libraries `repeats` times, alternating them so that
/// noise from the rest of the machine falls on both alike.
pub fn compare(params: CoreParams, repeats: usize) -> Comparison {
    let mut keel_runs = Vec::new();
    let mut raft_runs = Vec::new();
    let mut throughput_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut each_entry_runs = Vec::new();
    for _ in 0..repeats.max(1) {
        if params.batch > 1 {
            each_entry_runs.push(run_raft_rs(params, RaftRsPropose::EachEntry));
        }
        let raft_rs = run_raft_rs(params, RaftRsPropose::OneMessage);
        let keel = run_keel(params);
        throughput_ratios.push(keel.entries_per_second() / raft_rs.entries_per_second().max(1e-9));
        cpu_ratios.push(raft_rs.cpu_nanos_per_entry() / keel.cpu_nanos_per_entry().max(1e-9));
        raft_runs.push(raft_rs);
        keel_runs.push(keel);
    }
    Comparison {
        raft_rs: median(raft_runs),
        raft_rs_each_entry: (!each_entry_runs.is_empty()).then(|| median(each_entry_runs)),
        keel: median(keel_runs),
        throughput_ratio: median_of(throughput_ratios),
        cpu_ratio: median_of(cpu_ratios),
    }
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median(mut runs: Vec<CoreResult>) -> CoreResult {
    runs.sort_by(|a, b| a.entries_per_second().total_cmp(&b.entries_per_second()));
    runs[runs.len() / 2]
}
