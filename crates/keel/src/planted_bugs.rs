//! Known bug classes that can be switched on in the core, for the simulator's
//! drill only (feature `planted-bugs`; absent from normal builds). A drill
//! plants one and checks the simulator catches it, which shows the checks
//! can fail.

/// A deliberate protocol bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// The leader commits entries of earlier terms by counting replicas,
    /// breaking §5.4.2 (Figure 8).
    CommitEarlierTermByCounting,
    /// Votes are granted without the log up-to-date check of §5.4.1.
    VoteWithoutLogCheck,
    /// The vote is never written to the hard state, so a restarted node can
    /// vote twice in one term.
    ForgetToPersistVote,
    /// Entries are handed out for applying before they are committed.
    ApplyBeforeCommit,
    /// Linearizable reads are answered without the heartbeat round that
    /// confirms leadership (thesis §6.4).
    ReadIndexWithoutHeartbeat,
    /// A node campaigns (timeout, `campaign`, `TimeoutNow`) while a
    /// committed membership change is not yet applied, so it counts votes
    /// in a configuration the cluster has left (thesis §4.1).
    CampaignWithUnappliedConfChange,
    /// Messages of a term leave before that term (and the vote) is durable:
    /// a sole voter that crashes before persisting can win the same term
    /// again with a different log.
    SendBeforeTermDurable,
    /// Ticks charged at once after a pause (`RawNode::tick_by`) count as one
    /// tick for the leader lease, so a paused leader keeps its lease.
    LeaseIgnoresPause,
    /// A leader lease, once confirmed, never expires.
    LeaseNeverExpires,
    /// A ReadIndex read is confirmed by a heartbeat round that started
    /// before the read arrived (thesis §6.4 needs a round after it).
    ReadConfirmedByEarlierRound,
    /// A follower answers a stale append (its `prev` below the follower's
    /// commit index) with its last index instead of its commit index.
    StaleAppendAcksLastIndex,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 11] = [
        PlantedBug::CommitEarlierTermByCounting,
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::ForgetToPersistVote,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ReadIndexWithoutHeartbeat,
        PlantedBug::CampaignWithUnappliedConfChange,
        PlantedBug::SendBeforeTermDurable,
        PlantedBug::LeaseIgnoresPause,
        PlantedBug::LeaseNeverExpires,
        PlantedBug::ReadConfirmedByEarlierRound,
        PlantedBug::StaleAppendAcksLastIndex,
    ];
}
