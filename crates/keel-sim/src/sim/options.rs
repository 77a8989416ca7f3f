//! What to run.

use crate::faults::FaultSet;

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
    /// Let churn replace the voter of a sole-voter cluster (through a joint
    /// membership). Shows a known core liveness issue (see the README): if
    /// the new voter forgets that the change committed (its commit index is
    /// not durable) while the old one has applied its removal, holds a
    /// longer log and so refuses its vote, no one can win the joint
    /// membership again. Off by default.
    pub replace_sole_voter: bool,
    /// Draw clock rates within ±`p`/2 percent of nominal instead of within
    /// the drawn `max_clock_drift_percent` bound: drift beyond what the
    /// lease assumes (`--clock-drift-percent`). `None` keeps clocks within
    /// the bound.
    pub clock_drift_percent: Option<u64>,
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
            replace_sole_voter: false,
            clock_drift_percent: None,
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
        if self.replace_sole_voter {
            extra.push_str(" --replace-sole-voter");
        }
        if let Some(percent) = self.clock_drift_percent {
            extra.push_str(&format!(" --clock-drift-percent {percent}"));
        }
        format!(
            "cargo run -p keel-sim --release{features} -- --seed {} --steps {} --faults {}{bug}{extra} --trace 2000",
            self.seed, self.steps, self.faults
        )
    }
}
