//! The planted-bug drill: with each known protocol bug switched on in every
//! node, the simulator must catch it within 1,000 seeds. Shows that the
//! checks can fail. Needs `--features drill` (which turns on keel's
//! `planted-bugs`); CI runs `cargo test -p keel-sim --features drill`.
#![cfg(feature = "drill")]

use keel::PlantedBug;
use keel_sim::{run, FaultSet, Property, SimOptions};

/// The seed budget the issue sets.
const SEEDS_MAX: u64 = 1_000;

/// The fault set of the CI batch: every fault. (A planted bug can also
/// stall a run — a liveness failure does not count as a catch — so the
/// seed that catches each bug depends on the fault set and the generator.)
fn faults() -> FaultSet {
    FaultSet::all()
}

/// Runs seeds from 0 until one fails; returns the seed and property.
fn first_catch(bug: PlantedBug) -> Option<(u64, Property, String)> {
    (0..SEEDS_MAX).find_map(|seed| {
        let mut options = SimOptions::new(seed);
        options.faults = faults();
        options.trace_capacity = 0;
        options.planted_bug = Some(bug);
        run(&options)
            .err()
            .map(|failure| (seed, failure.property, failure.detail))
    })
}

fn assert_caught(bug: PlantedBug, acceptable: &[Property]) {
    let Some((seed, property, detail)) = first_catch(bug) else {
        panic!("{bug:?} was not caught within {SEEDS_MAX} seeds");
    };
    println!("{bug:?} caught by seed {seed}: {property}: {detail}");
    assert!(
        acceptable.contains(&property),
        "{bug:?} caught by seed {seed} as {property}, expected one of {acceptable:?}: {detail}"
    );
}

/// Properties that a real protocol bug may break. `Contract` (a simulator
/// or API-contract problem) and `Liveness` do not count as catching one.
const SAFETY: &[Property] = &[
    Property::ElectionSafety,
    Property::DoubleVote,
    Property::LogMatching,
    Property::LeaderCompleteness,
    Property::CommitRule,
    Property::StateMachineSafety,
    Property::CommittedEntryChanged,
    Property::Monotonicity,
    Property::NodeInvariant,
    Property::Linearizability,
    Property::Panic,
];

#[test]
fn commit_of_earlier_term_by_counting_is_caught() {
    assert_caught(PlantedBug::CommitEarlierTermByCounting, SAFETY);
}

#[test]
fn vote_without_log_check_is_caught() {
    assert_caught(PlantedBug::VoteWithoutLogCheck, SAFETY);
}

#[test]
fn forgetting_to_persist_the_vote_is_caught() {
    assert_caught(PlantedBug::ForgetToPersistVote, SAFETY);
}

#[test]
fn apply_before_commit_is_caught() {
    assert_caught(PlantedBug::ApplyBeforeCommit, SAFETY);
}

#[test]
fn read_index_without_heartbeat_is_caught() {
    assert_caught(PlantedBug::ReadIndexWithoutHeartbeat, SAFETY);
}

#[test]
fn every_planted_bug_has_a_drill() {
    // A new planted bug needs a drill test above.
    assert_eq!(PlantedBug::ALL.len(), 5);
}
