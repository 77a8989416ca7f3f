//! `keel-log check DIR`: reports the health of a log directory, or of the
//! log inside a node's data directory, and what to do if it is damaged.
//!
//! Exit status: 0 if the log would open (a torn tail, which opening cuts
//! off, is reported but is not a problem); 1 if it is damaged, unreadable,
//! or there is no log in DIR; 2 for a usage error.

mod inspect;
mod print;

use std::path::Path;
use std::process::ExitCode;

use inspect::{inspect, Outcome};

const USAGE: &str = "usage: keel-log check DIR   (a log directory, or a node's data directory)";

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
    let outcome = inspect(directory);
    print::outcome(&outcome);
    match outcome {
        Outcome::Healthy { .. } => ExitCode::SUCCESS,
        Outcome::Damaged { .. } | Outcome::Unreadable { .. } | Outcome::NoLog { .. } => ExitCode::from(1),
    }
}
