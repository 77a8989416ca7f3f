//! Whole-run tests: clean seeds pass, seeds replay exactly, a failure
//! carries its replay command, and the regression seeds of core bugs.

use keel_sim::{check_determinism, run, FaultSet, Property, SimOptions};

fn options(seed: u64, faults: &str) -> SimOptions {
    let mut options = SimOptions::new(seed);
    options.faults = faults.parse().expect("valid fault list");
    options.trace_capacity = 0;
    options
}

/// The fault set CI uses: every fault.
const CI_FAULTS: &str = "all";

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
    let first = check_determinism(&options(8, "all")).expect("deterministic");
    let second = check_determinism(&options(9, "all")).expect("deterministic");
    assert_ne!(first, second);
    // With the trace ring on, the run is the same.
    let mut traced = options(8, "all");
    traced.trace_capacity = 500;
    assert_eq!(run(&traced).map(|report| report.trace_hash).ok(), Some(first));
}

#[test]
fn a_failure_names_its_seed_property_trace_and_replay() {
    // A run that breaks the runtime's snapshot contract (no snapshot
    // reports) stalls; its report must carry everything needed to replay it.
    let mut options = options(73, SNAPSHOT_FAULTS);
    options.trace_capacity = 50;
    options.report_snapshots = false;
    let failure = run(&options).expect_err("the seed fails without snapshot reports");
    assert_eq!(failure.seed, 73);
    assert_eq!(failure.property, Property::Liveness);
    assert!(!failure.trace.is_empty());
    assert!(
        failure.replay.contains("--seed 73")
            && failure.replay.contains(&format!("--faults {}", options.faults))
            && failure.replay.contains("--no-snapshot-reports"),
        "{}",
        failure.replay
    );
    assert!(failure.to_string().contains("replay: cargo run -p keel-sim"));
}

/// The faults the lost-snapshot seeds were found with (the random stream
/// depends on the fault set).
const SNAPSHOT_FAULTS: &str = "all,-churn";

/// Fixed core bug: a storage read failure was swallowed (`Raft::reset`
/// used `last_index().unwrap_or(Index::ZERO)`), so a node whose disk failed
/// went on instead of stopping. Seed 364 found it with the simulator of
/// that time; the seeds below stop on a failed fsync read by keel with the
/// current generator. (Seeds depend on the simulator's generator: re-find
/// them if it changes.)
#[test]
fn regression_storage_failure_stops_the_node() {
    let mut stopped_by_keel = 0;
    for seed in [364, 38, 94, 117] {
        let report = run(&options(seed, "all")).unwrap_or_else(|failure| panic!("{failure}"));
        stopped_by_keel += report.stats.keel_stopped;
    }
    assert!(stopped_by_keel > 0, "no seed had keel stop on a failed disk");
}

/// Fixed core bug: a leader kept a follower in the snapshot state forever
/// when the snapshot message or its acknowledgement was lost. The core now
/// has `report_snapshot`, and the simulated network reports how every
/// snapshot send ended. These seeds stall without the reports (liveness)
/// and pass with them. (Re-find them if the generator changes: run
/// `--no-snapshot-reports --keep-going` and take the liveness failures.)
#[test]
fn regression_lost_snapshot_does_not_stall_a_follower() {
    for seed in [73, 744] {
        let mut without = options(seed, SNAPSHOT_FAULTS);
        without.report_snapshots = false;
        let failure = run(&without).expect_err("the seed stalls without snapshot reports");
        assert_eq!(failure.property, Property::Liveness, "seed {seed}: {failure}");
        let report = run(&options(seed, SNAPSHOT_FAULTS)).unwrap_or_else(|failure| panic!("{failure}"));
        assert!(
            report.stats.snapshot_reports > 0,
            "seed {seed} reported no snapshot"
        );
    }
}

/// The seed (and faults) of the known core liveness issue below.
const REMOVAL_SEED: u64 = 1049;
const REMOVAL_FAULTS: &str = "loss,delay,reorder,crash,churn";

/// Regression (fixed in the core): a leader removed by a change stepped down
/// as soon as it applied it, without making sure the remaining members
/// learnt that the change committed; with apply-time membership they stayed
/// in the joint (or old) membership and needed the removed voters' votes,
/// and if those were shut down as soon as they applied their removal, the
/// cluster never elected a leader again. A removed leader now keeps leading
/// until it has handed over, so even removed nodes shut down at once (as
/// here) leave a working cluster.
#[test]
fn regression_removed_voters_shut_down_at_once_do_not_stall_the_new_membership() {
    let mut at_once = options(REMOVAL_SEED, REMOVAL_FAULTS);
    at_once.retire_at_once = true;
    run(&at_once).unwrap_or_else(|failure| panic!("{failure}"));
    run(&options(REMOVAL_SEED, REMOVAL_FAULTS)).unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn membership_churn_and_transfers_happen_and_converge() {
    let mut changes = 0;
    let mut added = 0;
    let mut retired = 0;
    let mut voters_max = 0;
    let mut transfers_completed = 0;
    for seed in 0..30 {
        let report = run(&options(seed, "churn,transfer")).unwrap_or_else(|failure| panic!("{failure}"));
        changes += report.stats.conf_changes_proposed;
        added += report.stats.nodes_added;
        retired += report.stats.nodes_retired;
        voters_max = voters_max.max(report.stats.voters_max);
        transfers_completed += report.stats.transfers_completed;
        // A sole-voter cluster keeps its one voter; the others 3 to 7.
        let sole_voter = report.shape.contains("(1 voters)");
        assert!(
            (report.stats.voters_min >= 3 || sole_voter) && report.stats.voters_max <= 7,
            "seed {seed}: {:?}",
            report.stats
        );
    }
    assert!(changes > 50, "only {changes} membership changes");
    assert!(
        added > 20 && retired > 5,
        "{added} nodes added, {retired} retired"
    );
    assert!(voters_max >= 6, "voters never grew past {voters_max}");
    assert!(
        transfers_completed > 10,
        "only {transfers_completed} transfers completed"
    );
}

#[test]
fn fault_sets_parse_as_the_cli_takes_them() {
    assert_eq!(
        CI_FAULTS
            .parse::<FaultSet>()
            .map(|set| set.to_string())
            .ok()
            .as_deref(),
        Some("all")
    );
    assert_eq!(
        SNAPSHOT_FAULTS
            .parse::<FaultSet>()
            .map(|set| set.to_string())
            .ok()
            .as_deref(),
        Some(
            "loss,delay,duplicate,reorder,partition,one-way,isolate-leader,crash,pause,torn-write,fsync-failure,\
             compaction,transfer,slow-apply,forge"
        )
    );
    assert_eq!(
        "all"
            .parse::<FaultSet>()
            .map(|set| set.to_string())
            .ok()
            .as_deref(),
        Some("all")
    );
}

/// Regression (fixed in the core: a removed leader now keeps leading, without
/// taking proposals, until it has handed over). It was: a leader removed by a
/// joint change stepped down at once
/// (`step_down_after_removal`) with an uncommitted tail (entries 24–25)
/// that only it and another removed node (n5) hold. The new voters {4, 6,
/// 7} have not applied the leave-joint entry, so they still need a
/// majority of the outgoing {1, 4, 5}; n1 and n5 refuse them (their logs
/// are longer) and, no longer voters in their own applied membership, never
/// campaign. No leader ever again.
#[test]
fn regression_a_removed_leader_does_not_stall_the_new_membership() {
    run(&options(905, "all")).unwrap_or_else(|failure| panic!("{failure}"));
}

/// Forged messages (terms and indexes at and beyond keel's limits, from
/// unknown ids and from members) are refused with a typed error and leave
/// the cluster able to elect and converge. Fixed core issues it found (issue
/// 12): a vote request at exactly `Term::LIMIT` moved a sole-voter cluster to
/// a term none could campaign from (seed 7 of its generator); an append whose
/// middle entry had a term beyond the limit was refused only after its
/// sender was taken as leader (seeds 21, 35).
#[test]
fn forged_messages_are_refused_and_the_cluster_recovers() {
    // Refusal (a typed error, no change) is checked by the simulator as
    // each forgery is handed over; recovery by the liveness phase.
    let mut forged = 0;
    for seed in 0..60 {
        let report =
            run(&options(seed, "forge,crash,partition")).unwrap_or_else(|failure| panic!("{failure}"));
        forged += report.stats.forged_messages;
    }
    assert!(forged > 100, "only {forged} forged messages");
}

/// Issue 12: named seeds that reach the states the outside-in suite found
/// keel-sim could not (with the current generator; re-find them if it
/// changes: `--verbose --print-trace` shows the counters and the events).
/// Each passes with the fixed core.
/// - 13, 27: a sole voter (with learners) crashes after winning a term
///   whose hard state its disk held back (`crashes_before_persist`).
/// - 109, 118: an applier stalls through a membership change, and the
///   nodes still in the membership before are cut off from the rest.
/// - 5, 69, 71: reboots right after a vote, reads probing leaders being
///   replaced, stalled appliers and forged messages.
#[test]
fn regression_issue_12_states_are_reached_and_pass() {
    let mut stats = Vec::new();
    for seed in [13, 27, 109, 118, 5, 69, 71] {
        let report = run(&options(seed, CI_FAULTS)).unwrap_or_else(|failure| panic!("{failure}"));
        stats.push((seed, report.stats));
    }
    let sum = |field: fn(&keel_sim::Stats) -> u64, seeds: &[u64]| -> u64 {
        stats
            .iter()
            .filter(|(seed, _)| seeds.contains(seed))
            .map(|(_, stats)| field(stats))
            .sum()
    };
    assert!(sum(|stats| stats.crashes_before_persist, &[13, 27]) > 0);
    assert!(sum(|stats| stats.applier_stalls, &[109, 118]) > 0);
    assert!(sum(|stats| stats.reboots_after_vote, &[5, 69, 71]) > 0);
    assert!(sum(|stats| stats.leader_probes, &[5, 69, 71]) > 0);
    assert!(sum(|stats| stats.forged_messages, &[5, 69, 71]) > 0);
}
