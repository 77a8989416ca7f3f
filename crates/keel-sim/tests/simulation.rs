//! Whole-run tests: clean seeds pass, seeds replay exactly, a failure
//! carries its replay command, and the regression seeds of core bugs.

use keel_sim::{check_determinism, run, FaultSet, Property, SimOptions};

fn options(seed: u64, faults: &str) -> SimOptions {
    let mut options = SimOptions::new(seed);
    options.faults = faults.parse().expect("valid fault list");
    options.trace_capacity = 0;
    options
}

/// The fault set CI uses until the known core issues are fixed.
const CI_FAULTS: &str = "all,-compaction,-fsync-failure";

#[test]
fn a_batch_of_clean_seeds_passes_with_operations_checked() {
    let mut checked = 0;
    for seed in 0..40 {
        let report = run(&options(seed, CI_FAULTS)).unwrap_or_else(|failure| panic!("{failure}"));
        checked += report.operations_checked;
    }
    assert!(checked > 200, "only {checked} operations checked in 40 seeds");
}

#[test]
fn no_faults_means_no_unknown_outcomes_lost_and_quick_liveness() {
    for seed in 0..10 {
        let report = run(&options(seed, "none")).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.stats.crashes, 0);
        assert_eq!(report.stats.messages_dropped, 0);
        assert!(report.outcomes.ok > 0, "seed {seed}: no operation completed");
    }
}

#[test]
fn the_same_seed_replays_exactly_and_seeds_differ() {
    let first = check_determinism(&options(7, "all")).expect("deterministic");
    let second = check_determinism(&options(8, "all")).expect("deterministic");
    assert_ne!(first, second);
    // With the trace ring on, the run is the same.
    let mut traced = options(7, "all");
    traced.trace_capacity = 500;
    assert_eq!(run(&traced).map(|report| report.trace_hash).ok(), Some(first));
}

#[test]
fn a_failure_names_its_seed_property_trace_and_replay() {
    // Seed 364 with every fault hits the known core issue that a storage
    // failure is swallowed (see the regression test below); its report
    // must carry everything needed to replay it.
    let mut options = options(364, "all");
    options.trace_capacity = 50;
    let failure = match run(&options) {
        Err(failure) => failure,
        // Once the core is fixed this seed passes: nothing to look at.
        Ok(_) => return,
    };
    assert_eq!(failure.seed, 364);
    assert_eq!(failure.property, Property::StopOnStorageFailure);
    assert!(!failure.trace.is_empty());
    assert!(failure.replay.contains("--seed 364") && failure.replay.contains("--faults all"));
    assert!(failure.to_string().contains("replay: cargo run -p keel-sim"));
}

/// Core bug: a storage read failure is swallowed (`Raft::reset` uses
/// `last_index().unwrap_or(Index::ZERO)`), so a node whose disk failed goes
/// on instead of stopping. Un-ignore when the core stops on it. (Seeds
/// depend on the simulator's generator: re-find them if it changes.)
#[test]
#[ignore = "core bug: storage failure swallowed in Raft::reset (keel-sim report)"]
fn regression_storage_failure_stops_the_node() {
    run(&options(364, "all")).unwrap_or_else(|failure| panic!("{failure}"));
}

/// Core bug: a leader keeps a follower in the snapshot state forever when
/// the snapshot message or its acknowledgement is lost (no
/// `report_snapshot`, no retry). Un-ignore when the core retries.
#[test]
#[ignore = "core bug: lost snapshot leaves the follower stuck (keel-sim report)"]
fn regression_lost_snapshot_does_not_stall_a_follower() {
    for (seed, faults) in [(378, "all"), (444, "all"), (457, "all,-fsync-failure")] {
        run(&options(seed, faults)).unwrap_or_else(|failure| panic!("{failure}"));
    }
}

#[test]
fn fault_sets_parse_as_the_cli_takes_them() {
    assert_eq!(
        CI_FAULTS
            .parse::<FaultSet>()
            .map(|set| set.to_string())
            .ok()
            .as_deref(),
        Some("loss,delay,duplicate,reorder,partition,one-way,isolate-leader,crash,pause,torn-write,transfer")
    );
}
