//! What a run reports: a passing run's counters, or a failure with its
//! replay.

use std::fmt;

use crate::checker::Property;
use crate::history::OutcomeCounts;
use crate::world::Stats;

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
    /// The last events of the run (as many as `trace_capacity` keeps).
    pub trace: String,
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
