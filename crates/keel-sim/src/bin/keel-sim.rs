//! `keel-sim`: runs seeds of the deterministic cluster simulation and
//! reports throughput, or the first failure with its replay command.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use keel_sim::{check_determinism, run, FaultSet, RunReport, SimOptions};

/// Deterministic simulation of keel clusters under faults.
#[derive(Debug, Parser)]
#[command(name = "keel-sim", version)]
struct Arguments {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (seeds run in order from it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps of the fault phase per seed.
    #[arg(long, default_value_t = 3_000)]
    steps: u64,
    /// Fault classes: all, none, a list (loss,crash), or all minus some (all,-pause).
    #[arg(long, default_value = "all")]
    faults: FaultSet,
    /// Trace events kept for a failure report.
    #[arg(long, default_value_t = 200)]
    trace: usize,
    /// Stop starting seeds after this many seconds (a time-boxed batch).
    #[arg(long)]
    time_limit_secs: Option<u64>,
    /// Run every seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Keep going after a failure (a soak that collects failing seeds).
    #[arg(long)]
    keep_going: bool,
    /// Print a line per seed: its cluster, outcomes and counters.
    #[arg(long)]
    verbose: bool,
    /// Print the last events (`--trace N`) of passing seeds too.
    #[arg(long)]
    print_trace: bool,
    /// Shut removed nodes down as soon as they apply their removal (shows a
    /// known core liveness issue; see the README).
    #[arg(long)]
    retire_at_once: bool,
    /// Let churn replace the voter of a sole-voter cluster (shows a known
    /// core liveness issue; see the README).
    #[arg(long)]
    replace_sole_voter: bool,
    /// Draw node clock rates within ±N/2 percent of nominal, beyond the
    /// drift the lease assumes (`max_clock_drift_percent`); shows what that
    /// assumption protects against.
    #[arg(long, value_name = "N")]
    clock_drift_percent: Option<u64>,
    /// Do not report snapshot outcomes to the core (shows what the
    /// `report_snapshot` contract prevents).
    #[arg(long)]
    no_snapshot_reports: bool,
    /// Plant a known protocol bug (needs `--features drill`): a name of
    /// `keel::PlantedBug`, e.g. ReadIndexWithoutHeartbeat, LeaseIgnoresPause,
    /// SendBeforeTermDurable (an unknown name lists them all).
    #[cfg(feature = "drill")]
    #[arg(long)]
    planted_bug: Option<String>,
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    steps: u64,
    ticks: u64,
    operations_checked: u64,
    operations_ok: u64,
    operations_unknown: u64,
    crashes: u64,
    sync_failures: u64,
    keel_stopped: u64,
    snapshots: u64,
    messages: u64,
    snapshot_failures_reported: u64,
    transfers: u64,
    transfers_started: u64,
    transfers_completed: u64,
    conf_changes_proposed: u64,
    nodes_added: u64,
    nodes_retired: u64,
    voters_min: u64,
    voters_max: u64,
    liveness_work_max: u64,
    quiet_tick_work_max: u64,
}

impl Totals {
    fn add(&mut self, report: &RunReport) {
        self.passed += 1;
        self.steps += report.steps;
        self.ticks += report.ticks;
        self.operations_checked += report.operations_checked as u64;
        self.operations_ok += report.outcomes.ok;
        self.operations_unknown += report.outcomes.unknown;
        self.crashes += report.stats.crashes;
        self.sync_failures += report.stats.sync_failures;
        self.keel_stopped += report.stats.keel_stopped;
        self.snapshots += report.stats.snapshots_taken;
        self.messages += report.stats.messages_delivered;
        self.snapshot_failures_reported += report.stats.snapshot_failures_reported;
        self.transfers += report.stats.transfers;
        self.transfers_started += report.stats.transfers_started;
        self.transfers_completed += report.stats.transfers_completed;
        self.conf_changes_proposed += report.stats.conf_changes_proposed;
        self.nodes_added += report.stats.nodes_added;
        self.nodes_retired += report.stats.nodes_retired;
        self.voters_min = if self.passed == 1 {
            report.stats.voters_min
        } else {
            self.voters_min.min(report.stats.voters_min)
        };
        self.voters_max = self.voters_max.max(report.stats.voters_max);
        self.liveness_work_max = self.liveness_work_max.max(report.stats.liveness_work);
        self.quiet_tick_work_max = self.quiet_tick_work_max.max(report.stats.quiet_tick_work_max);
    }

    fn print(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let seeds = self.passed + self.failed;
        println!(
            "{seeds} seeds in {seconds:.1} s: {:.0} seeds/min, {:.0} steps/s, {} operations checked ({} ok, {} unknown), \
             {} messages, {} crashes, {} fsync failures ({} stopped by keel), {} snapshots ({} sends failed), \
             {} transfers ({} started, {} completed), {} membership changes, {} nodes added, {} retired, voters {}..={}, \
             liveness work <= {} per seed and <= {} per tick",
            seeds as f64 * 60.0 / seconds,
            self.steps as f64 / seconds,
            self.operations_checked,
            self.operations_ok,
            self.operations_unknown,
            self.messages,
            self.crashes,
            self.sync_failures,
            self.keel_stopped,
            self.snapshots,
            self.snapshot_failures_reported,
            self.transfers,
            self.transfers_started,
            self.transfers_completed,
            self.conf_changes_proposed,
            self.nodes_added,
            self.nodes_retired,
            self.voters_min,
            self.voters_max,
            self.liveness_work_max,
            self.quiet_tick_work_max
        );
    }
}

#[cfg(feature = "drill")]
fn planted_bug(name: Option<&str>) -> Result<Option<keel::PlantedBug>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    keel::PlantedBug::ALL
        .into_iter()
        .find(|bug| format!("{bug:?}").eq_ignore_ascii_case(name))
        .map(Some)
        .ok_or_else(|| format!("unknown planted bug {name}; one of {:?}", keel::PlantedBug::ALL))
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let mut options = SimOptions::new(arguments.seed);
    options.steps = arguments.steps;
    options.faults = arguments.faults.clone();
    options.trace_capacity = arguments.trace;
    options.retire_at_once = arguments.retire_at_once;
    options.report_snapshots = !arguments.no_snapshot_reports;
    options.clock_drift_percent = arguments.clock_drift_percent;
    options.replace_sole_voter = arguments.replace_sole_voter;
    #[cfg(feature = "drill")]
    match planted_bug(arguments.planted_bug.as_deref()) {
        Ok(bug) => options.planted_bug = bug,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "keel-sim: seeds {}..{}, {} steps each, faults {}{}",
        arguments.seed,
        arguments.seed.saturating_add(arguments.seeds),
        arguments.steps,
        arguments.faults,
        if arguments.check_determinism {
            ", determinism checked"
        } else {
            ""
        }
    );
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut totals = Totals::default();
    let mut failing_seeds = Vec::new();
    for seed in arguments.seed..arguments.seed.saturating_add(arguments.seeds) {
        if arguments
            .time_limit_secs
            .is_some_and(|limit| start.elapsed() >= Duration::from_secs(limit))
        {
            println!("time limit reached");
            break;
        }
        options.seed = seed;
        if arguments.check_determinism {
            if let Err(message) = check_determinism(&options) {
                println!("{message}");
                totals.failed += 1;
                failing_seeds.push(seed);
                if !arguments.keep_going {
                    break;
                }
                continue;
            }
        }
        match run(&options) {
            Ok(report) => {
                if arguments.verbose {
                    println!(
                        "seed {seed}: {} steps, {} ticks, hash {:016x}, {} checked {:?}, liveness {}+{} ticks\n  {}\n  {:?}",
                        report.steps,
                        report.ticks,
                        report.trace_hash,
                        report.operations_checked,
                        report.outcomes,
                        report.liveness_leader_ticks,
                        report.liveness_converge_ticks,
                        report.shape,
                        report.stats
                    );
                }
                if arguments.print_trace {
                    print!("{}", report.trace);
                }
                totals.add(&report);
            }
            Err(failure) => {
                println!("{failure}");
                totals.failed += 1;
                failing_seeds.push(seed);
                if !arguments.keep_going {
                    break;
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            totals.print(start.elapsed());
        }
    }
    totals.print(start.elapsed());
    if !failing_seeds.is_empty() {
        println!("failing seeds: {failing_seeds:?}");
    }
    println!("keel-sim: {} passed, {} failed", totals.passed, totals.failed);
    if totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
