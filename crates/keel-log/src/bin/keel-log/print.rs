//! What `keel-log check` prints: the report, or the problem and what to do
//! about it.

use std::path::{Path, PathBuf};

use keel_log::{HealthReport, LogError};

use crate::inspect::{Outcome, Target, NODE_LOG_SUBDIRECTORY};

/// Prints `outcome` to standard output.
pub(crate) fn outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Healthy { target, report } => {
            print_target(target);
            print_report(report);
            println!("status: healthy");
        }
        Outcome::Damaged { target, error } => {
            print_target(target);
            match error {
                LogError::Corruption { path, offset, reason } => {
                    println!(
                        "problem: corrupt log at {}, offset {offset}: {reason}",
                        path.display()
                    );
                }
                other => println!("problem: {other}"),
            }
            println!("status: damaged (the store refuses to open)");
            print_restore_steps(target);
        }
        Outcome::Unreadable { target, error } => {
            print_target(target);
            println!("problem: {error}");
            println!("status: unreadable (fix the error above, then check again)");
        }
        Outcome::NoLog { directory } => {
            println!(
                "problem: no log in {}: no segment files (00000000000000000001.wal, ...) and no \
                 {NODE_LOG_SUBDIRECTORY}/ subdirectory holding them",
                directory.display()
            );
            println!(
                "status: no log (name a log directory, or a node's data directory, which keeps its log in \
                 {NODE_LOG_SUBDIRECTORY}/)"
            );
        }
    }
}

fn print_target(target: &Target) {
    if let Some(data_directory) = &target.data_directory {
        println!(
            "log directory: {} (in the node data directory {})",
            target.log_directory.display(),
            data_directory.display()
        );
    }
}

/// The short form of the README's "Restoring a damaged member".
fn print_restore_steps(target: &Target) {
    let data_directory = target
        .data_directory
        .clone()
        .or_else(|| data_directory_of(&target.log_directory))
        .map_or_else(
            || "the node's data directory".to_string(),
            |directory| directory.display().to_string(),
        );
    println!(
        "next: this member's data cannot be trusted; do not repair it in place. Restore it from its peers:"
    );
    println!("  1. stop the node (it will not start on this log)");
    println!("  2. move {data_directory} aside and keep it for diagnosis (do not delete it)");
    println!("  3. from a healthy member, remove this member from the cluster (keel-kv members remove ID)");
    println!("  4. start the node on an empty data directory with --join and add it back");
    println!("     (keel-kv members add ID --peer-addr ... --client-addr ...); it catches up from the leader's snapshot");
    println!(
        "  the steps in full, and what to do without a healthy majority: \"Restoring a damaged member\" in \
         keel-log's README (crates/keel-log/README.md)"
    );
}

/// The data directory a log directory belongs to, if it is laid out as
/// keel-node lays it out (`<data dir>/log`).
fn data_directory_of(log_directory: &Path) -> Option<PathBuf> {
    if log_directory.file_name()? != NODE_LOG_SUBDIRECTORY {
        return None;
    }
    log_directory
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

fn print_report(report: &HealthReport) {
    println!("segments: {}", report.segments().len());
    for segment in report.segments() {
        let range = match segment.entry_range() {
            Some((low, high)) => format!("entries written {}..={}", low.get(), high.get()),
            None => "no entries".to_string(),
        };
        println!(
            "  {}  {} bytes  {} records  {range}",
            segment.path().display(),
            segment.length_bytes(),
            segment.record_count()
        );
    }
    if report.first_index() > report.last_index() {
        println!("log: empty (next index {})", report.first_index().get());
    } else {
        println!(
            "log: entries {}..={}",
            report.first_index().get(),
            report.last_index().get()
        );
    }
    println!("compacted through: {}", report.compacted());
    let hard_state = report.hard_state();
    let vote = hard_state
        .vote
        .map_or_else(|| "none".to_string(), |vote| vote.to_string());
    println!(
        "hard state: term {} vote {vote} commit {}",
        hard_state.term.get(),
        hard_state.commit.get()
    );
    println!("membership: {:?}", report.conf_state());
    println!("snapshot: {}", report.snapshot().last);
    if let Some(torn_tail) = report.torn_tail() {
        println!(
            "torn tail: {} bytes at {} offset {} (a write a crash cut short before it was synced, so never \
             acknowledged; cut off on open)",
            torn_tail.length_bytes(),
            torn_tail.path().display(),
            torn_tail.offset()
        );
    }
    for name in report.other_files() {
        println!("note: ignored file {name}");
    }
}
