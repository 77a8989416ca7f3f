//! The fault classes a run may inject, chosen on the command line with
//! `--faults`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One class of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Messages are dropped at random (a per-run rate of up to 5%).
    Loss,
    /// Messages are delayed by up to a few ticks.
    Delay,
    /// Messages are delivered twice.
    Duplicate,
    /// Deliverable messages are delivered in random order, not in order sent.
    Reorder,
    /// The nodes split into two groups that cannot talk (symmetric).
    Partition,
    /// Some directed links are cut: `a` hears `b` but not the reverse.
    OneWay,
    /// The current leader is cut off from every other node.
    IsolateLeader,
    /// A process crashes, losing everything not synced, and restarts later
    /// (sometimes after a long outage that forces a snapshot install).
    Crash,
    /// A process stops for a while (a GC pause, a stalled VM); its clock
    /// keeps running, so it catches up on the ticks it missed.
    Pause,
    /// On a crash, some unsynced writes reach the disk anyway (a prefix, in
    /// order) and the last surviving append may be torn.
    TornWrite,
    /// An fsync fails: the node must stop, and is restarted from its
    /// durable state.
    FsyncFailure,
    /// Nodes take snapshots and compact their logs, so lagging followers
    /// need snapshot installs.
    Compaction,
    /// Leadership is handed to another voter.
    Transfer,
    /// Membership changes: learners added, promoted, demoted and removed,
    /// voters removed (the leader too) and replaced through joint
    /// configurations, between 3 and 7 voters.
    Churn,
    /// A node's applier stalls for several election timeouts (a slow state
    /// machine) while its commit index runs ahead.
    SlowApply,
    /// A node is handed a forged message: a term or index at or beyond
    /// keel's limits, from an unknown id or from a member.
    Forge,
}

impl Fault {
    /// Every fault class.
    pub const ALL: [Fault; 16] = [
        Fault::Loss,
        Fault::Delay,
        Fault::Duplicate,
        Fault::Reorder,
        Fault::Partition,
        Fault::OneWay,
        Fault::IsolateLeader,
        Fault::Crash,
        Fault::Pause,
        Fault::TornWrite,
        Fault::FsyncFailure,
        Fault::Compaction,
        Fault::Transfer,
        Fault::Churn,
        Fault::SlowApply,
        Fault::Forge,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Loss => "loss",
            Fault::Delay => "delay",
            Fault::Duplicate => "duplicate",
            Fault::Reorder => "reorder",
            Fault::Partition => "partition",
            Fault::OneWay => "one-way",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Crash => "crash",
            Fault::Pause => "pause",
            Fault::TornWrite => "torn-write",
            Fault::FsyncFailure => "fsync-failure",
            Fault::Compaction => "compaction",
            Fault::Transfer => "transfer",
            Fault::Churn => "churn",
            Fault::SlowApply => "slow-apply",
            Fault::Forge => "forge",
        }
    }
}

/// A set of fault classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSet(BTreeSet<Fault>);

impl FaultSet {
    /// Every fault class.
    pub fn all() -> Self {
        FaultSet(Fault::ALL.into_iter().collect())
    }

    /// No faults at all: a clean network and perfect processes.
    pub fn none() -> Self {
        FaultSet(BTreeSet::new())
    }

    /// Whether `fault` is enabled.
    pub fn contains(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }

    /// Removes `fault`.
    pub fn without(mut self, fault: Fault) -> Self {
        self.0.remove(&fault);
        self
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return formatter.write_str("none");
        }
        if self.0.len() == Fault::ALL.len() {
            return formatter.write_str("all");
        }
        let names: Vec<&str> = self.0.iter().map(|fault| fault.name()).collect();
        formatter.write_str(&names.join(","))
    }
}

/// Why a `--faults` value is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault '{0}' (expected all, none, or a comma-separated list of: {names})", names = Fault::ALL.map(Fault::name).join(", "))]
pub struct UnknownFault(pub String);

impl FromStr for FaultSet {
    type Err = UnknownFault;

    /// `all`, `none`, a comma-separated list (`loss,crash`), or `all` minus
    /// some (`all,-pause`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = FaultSet::none();
        for word in text.split(',').map(str::trim).filter(|word| !word.is_empty()) {
            match word {
                "all" => set = FaultSet::all(),
                "none" => set = FaultSet::none(),
                _ => {
                    let (remove, name) = match word.strip_prefix('-') {
                        Some(name) => (true, name),
                        None => (false, word),
                    };
                    let fault = Fault::ALL
                        .into_iter()
                        .find(|fault| fault.name() == name)
                        .ok_or_else(|| UnknownFault(name.to_string()))?;
                    if remove {
                        set.0.remove(&fault);
                    } else {
                        set.0.insert(fault);
                    }
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_round_trips() {
        assert_eq!("all".parse::<FaultSet>().unwrap(), FaultSet::all());
        assert_eq!("none".parse::<FaultSet>().unwrap(), FaultSet::none());
        let set: FaultSet = "loss, crash".parse().unwrap();
        assert!(set.contains(Fault::Loss) && set.contains(Fault::Crash) && !set.contains(Fault::Pause));
        assert_eq!(set.to_string(), "loss,crash");
        let most: FaultSet = "all,-pause".parse().unwrap();
        assert_eq!(most, FaultSet::all().without(Fault::Pause));
        assert_eq!(most.to_string().parse::<FaultSet>().unwrap(), most);
        assert_eq!(FaultSet::all().to_string(), "all");
        assert!(matches!("loss,bogus".parse::<FaultSet>(), Err(UnknownFault(name)) if name == "bogus"));
    }
}
