//! Finding the log to check — the directory named, or the log inside a
//! node's data directory — and checking it.

use std::path::{Path, PathBuf};

use keel_log::fs::RealFileSystem;
use keel_log::{check, HealthReport, LogError};

/// Where keel-node keeps a node's log inside its data directory: `<data
/// dir>/log`, next to `snapshots/`, `LOCK` and `NODE_ID` (keel-node's
/// `recover`, in crates/keel-node/src/node.rs).
pub(crate) const NODE_LOG_SUBDIRECTORY: &str = "log";

/// Which log was checked.
#[derive(Debug)]
pub(crate) struct Target {
    /// The directory holding the segments.
    pub(crate) log_directory: PathBuf,
    /// The node data directory it was found in, if the one named was that.
    pub(crate) data_directory: Option<PathBuf>,
}

/// What `keel-log check` found.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The log opens (perhaps after cutting off a torn tail).
    Healthy {
        target: Target,
        // Boxed: the report is several times the size of the other variants.
        report: Box<HealthReport>,
    },
    /// The log refuses to open: its data is damaged or inconsistent.
    Damaged { target: Target, error: LogError },
    /// The log could not be read (permissions, a failing disk).
    Unreadable { target: Target, error: LogError },
    /// Neither the directory named nor its `log/` subdirectory holds a
    /// segment. An empty report here would read as "healthy" for a
    /// directory that holds no log at all, such as a mistyped path.
    NoLog { directory: PathBuf },
}

/// Checks the log in `directory`, or, if it holds no segment but has a
/// `log/` subdirectory (a node's data directory), the log in there.
pub(crate) fn inspect(directory: &Path) -> Outcome {
    let named = Target {
        log_directory: directory.to_path_buf(),
        data_directory: None,
    };
    match check(&RealFileSystem, directory) {
        Ok(report) if report.segments().is_empty() => {}
        result => return outcome(named, result),
    }
    let inner = directory.join(NODE_LOG_SUBDIRECTORY);
    if !inner.is_dir() {
        return Outcome::NoLog {
            directory: directory.to_path_buf(),
        };
    }
    let target = Target {
        log_directory: inner.clone(),
        data_directory: Some(directory.to_path_buf()),
    };
    match check(&RealFileSystem, &inner) {
        Ok(report) if report.segments().is_empty() => Outcome::NoLog { directory: inner },
        result => outcome(target, result),
    }
}

fn outcome(target: Target, result: Result<HealthReport, LogError>) -> Outcome {
    match result {
        Ok(report) => Outcome::Healthy {
            target,
            report: Box::new(report),
        },
        Err(error @ LogError::Corruption { .. }) => Outcome::Damaged { target, error },
        Err(error) => Outcome::Unreadable { target, error },
    }
}
