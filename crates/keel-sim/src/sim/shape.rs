//! The cluster and workload a seed draws.

use std::fmt;

use keel::{ConfState, Config, NodeId};

use crate::clock::{ClockSpread, NodeClock};
use crate::faults::Fault;
use crate::network::NetworkFaults;
use crate::rng::SimRng;

use super::{SimOptions, DELAY_TICKS_MAX_ANY, VOTERS_MAX, VOTERS_MIN};

/// The cluster and workload a seed draws (the FoundationDB habit of
/// randomizing configuration as well as faults).
#[derive(Clone, Debug)]
pub struct Shape {
    /// Founding nodes: voters, then learners.
    pub nodes: u64,
    /// Founding voters (nodes `1..=voters`); churn keeps 3–7 voters, or a
    /// sole voter's one.
    pub voters: u64,
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
    /// How node clock rates are drawn (nodes added later draw theirs the
    /// same way).
    pub clock_spread: ClockSpread,
    /// The founders' clocks.
    pub clocks: Vec<NodeClock>,
    /// Whether the nodes' runtimes hand membership changes to the core
    /// when they apply them rather than when a `Ready` hands them out.
    pub conf_changes_when_applied: bool,
}

impl Shape {
    pub(super) fn draw(rng: &mut SimRng, options: &SimOptions) -> Shape {
        let faults = &options.faults;
        // Mostly 3-5 voters; one seed in eight a sole voter with one or two
        // learners, where an election needs no message at all (what the
        // new term's durability must cover).
        let (voters, learners) = if rng.chance(125_000) {
            (1, rng.between(1, 2))
        } else {
            (*rng.pick(&[3, 3, 4, 5, 5]).unwrap_or(&3), 0)
        };
        let nodes = voters + learners;
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
        let max_clock_drift_percent = if rng.chance(600_000) {
            Config::new(NodeId::new(1)).max_clock_drift_percent
        } else {
            rng.between(2, 30)
        };
        let configs: Vec<Config> = (1..=nodes)
            .map(|id| {
                let mut config = Config::new(NodeId::new(id));
                config.election_timeout_ticks_min = election_timeout_ticks_min;
                config.election_timeout_ticks_max = election_timeout_ticks_max;
                config.heartbeat_interval_ticks = heartbeat_interval_ticks;
                config.pre_vote = pre_vote;
                config.check_quorum = check_quorum;
                config.max_clock_drift_percent = max_clock_drift_percent;
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
                rng.between(0, 60_000) as u32
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
        let clients = rng.between(2, 5) as u32;
        let keys = rng.between(1, 3) as u8;
        let clock_spread = ClockSpread {
            rate_ppm: clock_rate_spread_ppm(max_clock_drift_percent, options.clock_drift_percent),
            // Drift beyond the bound is asked for to show what the bound
            // protects against: its worst case, every clock at an end.
            extremes: options.clock_drift_percent.is_some(),
        };
        let clocks = (0..nodes).map(|_| NodeClock::draw(rng, clock_spread)).collect();
        let conf_changes_when_applied = rng.chance(500_000);
        Shape {
            nodes,
            voters,
            configs,
            network,
            clients,
            keys,
            client_timeout_ticks: 4 * election_timeout_ticks_max,
            clock_spread,
            clocks,
            conf_changes_when_applied,
        }
    }

    pub(super) fn template(&self) -> &Config {
        &self.configs[0]
    }

    /// The founders' membership.
    pub(super) fn founding_conf(&self) -> ConfState {
        ConfState::new(
            (1..=self.voters).map(NodeId::new),
            (self.voters + 1..=self.nodes).map(NodeId::new),
        )
        .expect("voters and learners are disjoint ranges")
    }

    /// The fewest and most voters membership churn keeps: 3-7, or exactly
    /// one for a sole-voter cluster (churn then adds and removes learners
    /// and replaces the voter).
    pub(super) fn voters_range(&self) -> (usize, usize) {
        if self.voters == 1 {
            (1, 1)
        } else {
            (VOTERS_MIN, VOTERS_MAX)
        }
    }
}

/// How far clock rates spread around nominal, in parts per million. Within
/// the configured bound: rates in ±2/5 of it, so that the fastest clock
/// over the slowest, `(1 + 2b/5) / (1 - 2b/5)`, stays below `1 + b` (for
/// any bound `b` up to 50 %, and the drawn ones are at most 30 %). With
/// `--clock-drift-percent p`: rates in ±p/2, as far beyond the bound as
/// asked, to show what the lease's clock assumption protects against.
fn clock_rate_spread_ppm(max_clock_drift_percent: u64, forced_percent: Option<u64>) -> u64 {
    const PPM_PER_PERCENT: u64 = 10_000;
    match forced_percent {
        Some(percent) => percent * PPM_PER_PERCENT / 2,
        None => max_clock_drift_percent * PPM_PER_PERCENT * 2 / 5,
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.template();
        write!(
            formatter,
            "{} nodes ({} voters), election {}..{} ticks, heartbeat {}, pre-vote {}, check-quorum {}, async writes {}, \
             inflight {}, message {} B, priorities {:?}, {} clients on {} keys, loss {} ppm, duplicate {} ppm, delay <= {} ticks, reorder {}, \
             clock drift bound {}%, clock rates {:?} ppm, membership changes handed to the core {}",
            self.nodes,
            self.voters,
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
            self.network.reorder,
            config.max_clock_drift_percent,
            self.clocks.iter().map(NodeClock::rate_ppm).collect::<Vec<_>>(),
            if self.conf_changes_when_applied {
                "when applied"
            } else {
                "when handed out"
            }
        )
    }
}
