//! The cluster and workload a seed draws.

use std::fmt;

use keel::{Config, NodeId};

use crate::faults::{Fault, FaultSet};
use crate::network::NetworkFaults;
use crate::rng::SimRng;

use super::DELAY_TICKS_MAX_ANY;

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
    pub(super) fn draw(rng: &mut SimRng, faults: &FaultSet) -> Shape {
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

    pub(super) fn template(&self) -> &Config {
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
