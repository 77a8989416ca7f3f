//! Reading a log directory back: replay every segment, cut a torn tail off
//! the last one (see [`crate::tail`] for what counts as torn), refuse
//! anything else that is damaged.

use std::path::{Path, PathBuf};

use keel::Index;

use crate::error::LogError;
use crate::fs::{child, read_whole_file, FileSystem};
use crate::record::{self, Parsed, Record};
use crate::state::{Location, LogState};
use crate::tail::{self, DamagedTail};

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_DIGITS: usize = 20;

/// The file name of segment `sequence`.
pub(crate) fn segment_file_name(sequence: u64) -> String {
    format!("{sequence:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_DIGITS)
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    sequence: u64,
    path: PathBuf,
    length_bytes: u64,
    valid_length_bytes: u64,
    record_count: u64,
    entry_range: Option<(Index, Index)>,
}

impl SegmentSummary {
    /// The segment's sequence number (its file name).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub fn length_bytes(&self) -> u64 {
        self.length_bytes
    }

    /// The length of its intact records (less than `length_bytes` only for a
    /// torn tail).
    pub fn valid_length_bytes(&self) -> u64 {
        self.valid_length_bytes
    }

    /// How many intact records it holds.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// The lowest and highest entry index written to it, if any (some may
    /// since have been truncated or compacted away).
    pub fn entry_range(&self) -> Option<(Index, Index)> {
        self.entry_range
    }
}

/// A partly written record at the end of the last segment: what a crash
/// during a write leaves (the record cut short, or some of its sectors
/// zeros). It was never synced, so never acknowledged, and is cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    path: PathBuf,
    offset: u64,
    length_bytes: u64,
}

impl TornTail {
    /// The last segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the torn record starts (the new end of the file).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes are cut off.
    pub fn length_bytes(&self) -> u64 {
        self.length_bytes
    }
}

/// Everything found by replaying a log directory.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) segments: Vec<SegmentSummary>,
    pub(crate) state: LogState,
    pub(crate) torn_tail: Option<TornTail>,
    pub(crate) other_files: Vec<String>,
}

/// Replays the log in `directory` without changing anything.
pub(crate) fn scan(file_system: &dyn FileSystem, directory: &Path) -> Result<Scan, LogError> {
    let names = file_system
        .list_directory(directory)
        .map_err(LogError::io("list directory", directory))?;
    let mut sequences = Vec::new();
    let mut other_files = Vec::new();
    for name in names {
        match parse_segment_file_name(&name) {
            Some(sequence) => sequences.push(sequence),
            None => other_files.push(name),
        }
    }
    sequences.sort_unstable();
    other_files.sort();
    for pair in sequences.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(LogError::Corruption {
                path: child(directory, &segment_file_name(pair[0] + 1)),
                offset: 0,
                reason: format!("segment missing: {} is followed by {}", pair[0], pair[1]),
            });
        }
    }
    let mut replay = Replay {
        state: None,
        segments: Vec::new(),
        torn_tail: None,
    };
    for (position, &sequence) in sequences.iter().enumerate() {
        let is_last = position + 1 == sequences.len();
        replay.segment(
            file_system,
            &child(directory, &segment_file_name(sequence)),
            sequence,
            is_last,
        )?;
    }
    let state = replay.state.unwrap_or_default();
    if let Err(reason) = state.finish_replay() {
        let first = replay
            .segments
            .first()
            .map(|segment| segment.path.clone())
            .unwrap_or_default();
        return Err(LogError::Corruption {
            path: first,
            offset: 0,
            reason,
        });
    }
    Ok(Scan {
        segments: replay.segments,
        state,
        torn_tail: replay.torn_tail,
        other_files,
    })
}

struct Replay {
    /// `None` until the first segment's checkpoint.
    state: Option<LogState>,
    segments: Vec<SegmentSummary>,
    torn_tail: Option<TornTail>,
}

impl Replay {
    fn segment(
        &mut self,
        file_system: &dyn FileSystem,
        path: &Path,
        sequence: u64,
        is_last: bool,
    ) -> Result<(), LogError> {
        let contents = read_whole_file(file_system, path).map_err(LogError::io("read", path))?;
        let corruption = |offset: usize, reason: String| LogError::Corruption {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        if contents.is_empty() && !is_last {
            return Err(corruption(0, "empty segment that is not the last one".into()));
        }
        let mut summary = SegmentSummary {
            sequence,
            path: path.to_path_buf(),
            length_bytes: contents.len() as u64,
            valid_length_bytes: 0,
            record_count: 0,
            entry_range: None,
        };
        let mut offset = 0;
        while offset < contents.len() {
            let (record_type, payload, total_bytes) = match record::parse(&contents[offset..]) {
                Parsed::Valid {
                    record_type,
                    payload,
                    total_bytes,
                } => (record_type, payload, total_bytes),
                Parsed::Incomplete | Parsed::Invalid(_)
                    if is_last && !any_valid_record_after(&contents, offset) =>
                {
                    match tail::classify(&contents, offset) {
                        DamagedTail::Torn => break,
                        DamagedTail::Corrupt(reason) => return Err(corruption(offset, reason)),
                    }
                }
                Parsed::Incomplete => {
                    return Err(corruption(
                        offset,
                        "record extends past the end of its data".into(),
                    ))
                }
                Parsed::Invalid(reason) => return Err(corruption(offset, reason.into())),
            };
            let record =
                record::decode(record_type, payload).map_err(|reason| corruption(offset, reason.into()))?;
            let location = Location {
                term: match &record {
                    Record::Entry(header) => header.term,
                    _ => keel::Term::ZERO,
                },
                segment_sequence: sequence,
                offset: offset as u64,
                length_bytes: total_bytes as u32,
            };
            self.apply(record, location, summary.record_count == 0, &mut summary)
                .map_err(|reason| corruption(offset, reason))?;
            summary.record_count += 1;
            offset += total_bytes;
        }
        summary.valid_length_bytes = offset as u64;
        if offset < contents.len() {
            self.torn_tail = Some(TornTail {
                path: path.to_path_buf(),
                offset: offset as u64,
                length_bytes: (contents.len() - offset) as u64,
            });
        }
        self.segments.push(summary);
        Ok(())
    }

    fn apply(
        &mut self,
        record: Record,
        location: Location,
        is_first_in_segment: bool,
        summary: &mut SegmentSummary,
    ) -> Result<(), String> {
        if is_first_in_segment {
            let Record::Checkpoint(checkpoint) = record else {
                return Err("a segment must start with a checkpoint record".into());
            };
            if checkpoint.segment_sequence != location.segment_sequence {
                return Err(format!(
                    "checkpoint names segment {}, but the file is segment {}",
                    checkpoint.segment_sequence, location.segment_sequence
                ));
            }
            match &self.state {
                None => self.state = Some(LogState::start_from(checkpoint)?),
                Some(state) => state.verify_checkpoint(&checkpoint)?,
            }
            return Ok(());
        }
        let state = self.state.as_mut().ok_or("records before any checkpoint")?;
        match record {
            Record::Entry(header) => {
                state.apply_entry(header, location)?;
                let low = summary
                    .entry_range
                    .map_or(header.index, |(low, _)| low.min(header.index));
                let high = summary
                    .entry_range
                    .map_or(header.index, |(_, high)| high.max(header.index));
                summary.entry_range = Some((low, high));
            }
            Record::Truncate(from) => state.apply_truncate(from)?,
            Record::HardState(hard_state) => state.apply_hard_state(hard_state),
            Record::ConfState(conf_state) => state.apply_conf_state(conf_state),
            Record::Snapshot(metadata) => state.apply_snapshot(&metadata)?,
            Record::Compact(through) => state.apply_compact(through)?,
            Record::InstallSnapshot(metadata) => state.apply_install_snapshot(&metadata)?,
            Record::Checkpoint(_) => return Err("a checkpoint record in the middle of a segment".into()),
        }
        Ok(())
    }
}

/// Whether an intact record starts anywhere after `offset`. A damaged record
/// followed by intact ones is corruption, not a torn write: a crash tears
/// only the end of what was being written.
fn any_valid_record_after(contents: &[u8], offset: usize) -> bool {
    (offset + 1..contents.len()).any(|start| match record::parse(&contents[start..]) {
        Parsed::Valid {
            record_type, payload, ..
        } => record::decode(record_type, payload).is_ok(),
        _ => false,
    })
}
