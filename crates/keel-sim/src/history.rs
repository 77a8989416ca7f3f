//! The client history: every operation's invocation and completion, in
//! the global order of simulation events.

use std::collections::BTreeMap;
use std::fmt;

use keel::{NodeId, ReadMode};

use crate::kv::{ClientId, Operation, Output};
use crate::linearizability::CheckedOperation;

/// How an operation reached the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Proposed as a log entry (writes, and reads through the log).
    Log,
    /// A read answered by ReadIndex (`Safe`) or a lease (`Lease`).
    ReadIndex(ReadMode),
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// It took effect (or read) with this output.
    Ok(Output),
    /// It certainly did not take effect (refused before reaching the log).
    Fail(&'static str),
    /// It may or may not have taken effect (timeout, crash).
    Unknown(&'static str),
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The client.
    pub client: ClientId,
    /// The client's request number.
    pub request: u64,
    /// What was asked.
    pub operation: Operation,
    /// How.
    pub path: Path,
    /// The node the client talked to.
    pub node: NodeId,
    /// The event number of the invocation.
    pub invoked_at: u64,
    /// The event number and kind of the completion, once known.
    pub completion: Option<(u64, Completion)>,
}

impl fmt::Display for Record {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "client {} request {} {:?} via {:?} on node {} invoked@{}",
            self.client, self.request, self.operation, self.path, self.node, self.invoked_at
        )?;
        match self.completion {
            Some((at, completion)) => write!(formatter, " completed@{at} {completion:?}"),
            None => write!(formatter, " (outstanding)"),
        }
    }
}

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Completed with an output.
    pub ok: u64,
    /// Certainly failed.
    pub fail: u64,
    /// Unknown outcome.
    pub unknown: u64,
}

/// The whole history of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    records: Vec<Record>,
}

impl History {
    /// Records an invocation; returns its position for the completion.
    pub fn invoke(&mut self, record: Record) -> usize {
        debug_assert!(record.completion.is_none());
        self.records.push(record);
        self.records.len() - 1
    }

    /// Records the completion of the operation at `position`.
    ///
    /// # Panics
    /// If it already completed: a simulator bug.
    pub fn complete(&mut self, position: usize, at: u64, completion: Completion) {
        let record = &mut self.records[position];
        assert!(record.completion.is_none(), "operation completed twice: {record}");
        assert!(at > record.invoked_at);
        record.completion = Some((at, completion));
    }

    /// The record at `position`.
    pub fn record(&self, position: usize) -> &Record {
        &self.records[position]
    }

    /// Counts outcomes (outstanding operations count as unknown).
    pub fn counts(&self) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for record in &self.records {
            match record.completion {
                Some((_, Completion::Ok(_))) => counts.ok += 1,
                Some((_, Completion::Fail(_))) => counts.fail += 1,
                Some((_, Completion::Unknown(_))) | None => counts.unknown += 1,
            }
        }
        counts
    }

    /// The operations for the linearizability checker: failed ones left
    /// out, unknown and outstanding ones with no return time, except as
    /// resolved with what the simulator saw applied: `applied` maps every
    /// logged request that took effect to its output and the event of its
    /// first apply. Such a request was committed — took effect — by then,
    /// so that event bounds its linearization point like a return would.
    /// With `settled` (nothing can still commit), an unknown request that
    /// never applied never took effect and is left out.
    pub fn checked_operations(
        &self,
        applied: &BTreeMap<(ClientId, u64), (Output, u64)>,
        settled: bool,
    ) -> Vec<CheckedOperation> {
        self.records
            .iter()
            .filter_map(|record| {
                let (completed_at, output) = match record.completion {
                    Some((_, Completion::Fail(_))) => return None,
                    Some((at, Completion::Ok(output))) => (Some(at), Some(output)),
                    Some((_, Completion::Unknown(_))) | None => {
                        match (applied.get(&(record.client, record.request)), record.path) {
                            (Some((output, at)), Path::Log) if *at > record.invoked_at => {
                                (Some(*at), Some(*output))
                            }
                            (None, Path::Log) if settled => return None,
                            _ => (None, None),
                        }
                    }
                };
                Some(CheckedOperation {
                    operation: record.operation,
                    invoked_at: record.invoked_at,
                    completed_at,
                    output,
                })
            })
            .collect()
    }

    /// The records touching `key`, for a failure report.
    pub fn records_for_key(&self, key: crate::kv::Key) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |record| record.operation.key() == key)
    }
}
