//! `keel-log check DIR`: reports the health of a log directory.
//!
//! Exit status: 0 if the log would open (a torn tail, which opening cuts
//! off, is reported but is not a problem), 1 if it is damaged or unreadable,
//! 2 for a usage error.

use std::path::Path;
use std::process::ExitCode;

use keel_log::fs::RealFileSystem;
use keel_log::{check, HealthReport};

const USAGE: &str = "usage: keel-log check DIR";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [command, directory] = arguments.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command != "check" {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let directory = Path::new(directory);
    if !directory.is_dir() {
        eprintln!("problem: {} is not a directory", directory.display());
        return ExitCode::from(1);
    }
    match check(&RealFileSystem, directory) {
        Ok(report) => {
            print_report(&report);
            println!("status: healthy");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("problem: {error}");
            println!("status: damaged (the store refuses to open)");
            ExitCode::from(1)
        }
    }
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
            "torn tail: {} bytes at {} offset {} (an unacknowledged write; cut off on open)",
            torn_tail.length_bytes(),
            torn_tail.path().display(),
            torn_tail.offset()
        );
    }
    for name in report.other_files() {
        println!("note: ignored file {name}");
    }
}
