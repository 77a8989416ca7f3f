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
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 5] = [
        PlantedBug::CommitEarlierTermByCounting,
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::ForgetToPersistVote,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ReadIndexWithoutHeartbeat,
    ];
}
