//! The settings of one Raft node.

use crate::types::{Index, NodeId};

/// The settings of one Raft node. Time is counted in *ticks*: the runtime calls
/// [`RawNode::tick`](crate::RawNode::tick) at a fixed interval (for example
/// every 100 ms), and every timeout here is a number of those ticks.
///
/// ```
/// use keel::{Config, NodeId};
/// let config = Config::new(NodeId::new(1));
/// config.validate().unwrap();
/// assert!(config.pre_vote && config.check_quorum);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be `>= 1`.
    pub id: NodeId,

    /// The shortest election timeout. A follower that hears nothing from a
    /// leader for a randomized time in
    /// `[election_timeout_ticks_min, election_timeout_ticks_max)` campaigns.
    /// It is also the period of check-quorum and the length of a leader
    /// lease. Shorter: faster failover; too short: needless elections when
    /// the network or a disk hiccups.
    pub election_timeout_ticks_min: u64,
    /// The end (exclusive) of the randomized election timeout range. A wider
    /// range makes split votes rarer (§5.2) at the cost of slower worst-case
    /// failover. Must exceed `election_timeout_ticks_min`.
    pub election_timeout_ticks_max: u64,
    /// How often a leader sends heartbeats. Must be well below
    /// `election_timeout_ticks_min` so one lost heartbeat does not start an
    /// election.
    pub heartbeat_interval_ticks: u64,

    /// The most entry bytes (see [`Entry::size_bytes`](crate::Entry::size_bytes))
    /// in one append message. Larger: fewer messages and better throughput;
    /// smaller: less head-of-line blocking for heartbeats on a slow link. A
    /// single entry larger than this is still sent, alone.
    pub max_message_bytes: u64,
    /// The most append messages in flight to one follower in replicate state
    /// (pipelining depth). With 256 and 1 ms round trips a follower can take
    /// up to 256 messages per millisecond; when they are all unacknowledged
    /// the leader pauses that follower until acknowledgements arrive.
    pub max_inflight_messages: usize,
    /// The most entry bytes in flight to one follower. Together with
    /// `max_inflight_messages` this bounds the leader's memory per slow
    /// follower: at most this many bytes are outstanding to it.
    pub max_inflight_bytes: u64,
    /// The most payload bytes of proposals the leader holds uncommitted.
    /// Proposals beyond it are refused with
    /// [`ProposalError::UncommittedLimit`](crate::ProposalError::UncommittedLimit),
    /// so a leader that lost its quorum does not grow its log without
    /// bound. A single proposal larger than the limit is accepted when
    /// nothing else is uncommitted, so it cannot be stuck forever.
    pub max_uncommitted_bytes: u64,
    /// The most payload bytes of committed entries handed out in one
    /// [`Ready`](crate::Ready), so applying happens in bounded batches.
    pub max_committed_bytes_per_ready: u64,

    /// Run a pre-vote round before a real election (thesis §9.6), so a node
    /// that was partitioned away cannot raise the cluster's term when it
    /// returns.
    pub pre_vote: bool,
    /// The leader steps down when it has not heard from a quorum within
    /// `election_timeout_ticks_min`, and followers that heard from a leader
    /// recently ignore vote requests (thesis §4.2.3, §6.2). Required for
    /// lease reads.
    pub check_quorum: bool,
    /// The most, in percent, by which two nodes' tick rates may differ:
    /// the clock assumption of lease reads (thesis §6.4.1). A leader
    /// serves [`ReadMode::Lease`](crate::ReadMode::Lease) reads for
    /// `(election_timeout_ticks_min - 1) * 100 / (100 + max_clock_drift_percent)`
    /// of its ticks after the start of a heartbeat round a quorum
    /// acknowledged: the followers of that quorum refuse other candidates
    /// for at least `election_timeout_ticks_min - 1` of *their* ticks, and
    /// this bound keeps the lease inside that window when the follower's
    /// clock runs faster. The runtime must also charge time that passed
    /// without ticks (a process pause) with
    /// [`RawNode::tick_by`](crate::RawNode::tick_by) before it asks for a
    /// lease read. If clocks can drift further than this, or a runtime cannot
    /// charge pauses, use `ReadMode::Safe`. Default 10; at most 100.
    pub max_clock_drift_percent: u64,
    /// Followers forward proposals to the leader. When off, a proposal on a
    /// follower fails with [`ProposalError::NotLeader`](crate::ProposalError::NotLeader).
    pub forward_proposals: bool,
    /// Asynchronous persistence: the runtime persists and applies on other
    /// threads and reports completion through
    /// [`RawNode::on_persisted`](crate::RawNode::on_persisted) and
    /// [`RawNode::on_applied`](crate::RawNode::on_applied); entries are
    /// handed out for applying only once they are durable locally.
    pub async_storage_writes: bool,

    /// The index the state machine has applied, when restarting.
    pub applied: Index,
    /// This node's election priority; a node does not grant its vote to a
    /// candidate of lower priority whose log is no longer than its own.
    pub priority: u64,
    /// Seeds the random number generator that spreads election timeouts.
    /// Give every node a different seed; the same seed replays exactly.
    pub rng_seed: u64,
    /// A deliberate bug for the simulator's drill (feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::PlantedBug>,
}

impl Config {
    /// Defaults suited to a 100 ms tick on a LAN: elections after 1–2 s, a
    /// heartbeat every tick.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 1,
            max_message_bytes: 1024 * 1024,
            max_inflight_messages: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_committed_bytes_per_ready: 16 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            max_clock_drift_percent: 10,
            forward_proposals: true,
            async_storage_writes: false,
            applied: Index::ZERO,
            priority: 0,
            rng_seed: id.get(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks every field and the relations between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NodeId::ZERO {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeatInterval);
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_timeout_ticks_min: self.election_timeout_ticks_min,
                heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            });
        }
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return Err(ConfigError::EmptyElectionRange {
                election_timeout_ticks_min: self.election_timeout_ticks_min,
                election_timeout_ticks_max: self.election_timeout_ticks_max,
            });
        }
        if self.max_inflight_messages == 0 {
            return Err(ConfigError::ZeroLimit("max_inflight_messages"));
        }
        for (name, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            (
                "max_committed_bytes_per_ready",
                self.max_committed_bytes_per_ready,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        if self.max_clock_drift_percent > 100 {
            return Err(ConfigError::ClockDriftTooLarge {
                max_clock_drift_percent: self.max_clock_drift_percent,
            });
        }
        if self.max_inflight_bytes < self.max_message_bytes {
            return Err(ConfigError::InflightBytesBelowMessageBytes {
                max_inflight_bytes: self.max_inflight_bytes,
                max_message_bytes: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

/// Why a [`Config`] is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 is reserved for "no node".
    #[error("id must be >= 1 (0 means \"no node\")")]
    ZeroId,
    /// The clock drift bound is above 100 %.
    #[error("max_clock_drift_percent is {max_clock_drift_percent}, at most 100")]
    ClockDriftTooLarge {
        /// The configured bound.
        max_clock_drift_percent: u64,
    },
    /// The heartbeat interval is zero.
    #[error("heartbeat_interval_ticks must be >= 1")]
    ZeroHeartbeatInterval,
    /// Elections would fire before heartbeats.
    #[error(
        "election_timeout_ticks_min ({election_timeout_ticks_min}) must be greater than \
         heartbeat_interval_ticks ({heartbeat_interval_ticks})"
    )]
    ElectionNotAboveHeartbeat {
        /// The configured minimum election timeout.
        election_timeout_ticks_min: u64,
        /// The configured heartbeat interval.
        heartbeat_interval_ticks: u64,
    },
    /// The randomized election range is empty.
    #[error(
        "election_timeout_ticks_max ({election_timeout_ticks_max}) must be greater than \
         election_timeout_ticks_min ({election_timeout_ticks_min})"
    )]
    EmptyElectionRange {
        /// The configured minimum.
        election_timeout_ticks_min: u64,
        /// The configured maximum.
        election_timeout_ticks_max: u64,
    },
    /// A limit that must be positive is zero.
    #[error("{0} must be >= 1")]
    ZeroLimit(&'static str),
    /// One message could never be in flight.
    #[error(
        "max_inflight_bytes ({max_inflight_bytes}) must be at least max_message_bytes \
         ({max_message_bytes})"
    )]
    InflightBytesBelowMessageBytes {
        /// The configured inflight byte limit.
        max_inflight_bytes: u64,
        /// The configured message size limit.
        max_message_bytes: u64,
    },
}
