//! The disk thread: makes each `Ready`'s writes durable with keel-log
//! (whatever is queued goes out in one write and one fsync), mirrors them
//! into the in-memory log the core reads, and only then releases the
//! messages that promise durability and reports back to the raft loop.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keel::{Entry, Envelope, HardState, Index, MemStorage, PersistMarker, SnapshotMetadata, StorageWrite};
use keel_log::{LogStore, SnapshotStore, WriteBatch};
use tokio::sync::mpsc;

use crate::apply::ApplyJob;
use crate::metrics::Metrics;
use crate::state_machine::StateMachine;
use crate::transport::Transport;

/// One `Ready`'s writes.
pub(crate) struct PersistJob {
    /// A snapshot received from the leader, and where its data is.
    pub(crate) snapshot: Option<(SnapshotMetadata, PathBuf)>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    /// Sent once the writes are durable.
    pub(crate) messages: Vec<Envelope>,
    pub(crate) marker: PersistMarker,
}

/// Work for the disk thread, in order.
pub(crate) enum DiskJob {
    Persist(PersistJob),
    /// The applier stored a snapshot: record it and discard the log
    /// through `through`.
    Compact {
        snapshot: SnapshotMetadata,
        through: Index,
    },
    Shutdown,
}

/// What the disk thread tells the raft loop.
#[derive(Debug)]
pub(crate) enum DiskEvent {
    Persisted(PersistMarker),
    Fatal(String),
}

pub(crate) struct DiskWriter<M: StateMachine> {
    pub(crate) log: LogStore,
    pub(crate) memory: MemStorage,
    pub(crate) snapshots: Arc<Mutex<SnapshotStore>>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) applier: mpsc::UnboundedSender<ApplyJob<M>>,
    pub(crate) events: mpsc::UnboundedSender<DiskEvent>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<M: StateMachine> DiskWriter<M> {
    pub(crate) fn run(mut self, mut jobs: mpsc::UnboundedReceiver<DiskJob>) {
        let mut queue = VecDeque::new();
        while let Some(first) = jobs.blocking_recv() {
            // Group commit: take everything already waiting.
            queue.push_back(first);
            while let Ok(job) = jobs.try_recv() {
                queue.push_back(job);
            }
            while let Some(job) = queue.pop_front() {
                let outcome = match job {
                    DiskJob::Shutdown => return,
                    DiskJob::Compact { snapshot, through } => self.compact(snapshot, through),
                    DiskJob::Persist(job) => {
                        let mut group = vec![job];
                        // Later writes without a snapshot join this fsync.
                        while let Some(DiskJob::Persist(next)) = queue.front() {
                            if next.snapshot.is_some() || group[0].snapshot.is_some() {
                                break;
                            }
                            if let Some(DiskJob::Persist(next)) = queue.pop_front() {
                                group.push(next);
                            }
                        }
                        self.persist_group(group)
                    }
                };
                if let Err(reason) = outcome {
                    tracing::error!(%reason, "disk write failed; the node stops");
                    let _ = self.events.send(DiskEvent::Fatal(reason));
                    return;
                }
            }
        }
    }

    /// Writes a group of `Ready`s' writes with one fsync, then releases
    /// their messages and reports each in order.
    fn persist_group(&mut self, group: Vec<PersistJob>) -> Result<(), String> {
        let started = Instant::now();
        if let Some((metadata, data_path)) = &group[0].snapshot {
            self.install_snapshot(metadata, data_path)?;
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut hard_state = None;
        for job in &group {
            if let Some(first) = job.entries.first() {
                // A later Ready may overwrite a suffix of an earlier one.
                let keep = entries
                    .iter()
                    .take_while(|entry| entry.index < first.index)
                    .count();
                entries.truncate(keep);
                entries.extend(job.entries.iter().cloned());
            }
            hard_state = job.hard_state.or(hard_state);
        }
        let mut batch = WriteBatch::new().with_entries(&entries);
        if let Some(hard_state) = hard_state {
            batch = batch.with_hard_state(hard_state);
        }
        if !batch.is_empty() {
            let writing = Instant::now();
            self.log
                .write(&batch)
                .map_err(|error| format!("log write failed: {error}"))?;
            self.metrics.record_log_write(writing.elapsed());
            if let Some(sync) = self.log.last_sync_duration() {
                self.metrics.record_fsync(sync);
            }
        }
        self.memory
            .append(&entries)
            .map_err(|error| format!("in-memory log append failed: {error}"))?;
        if let Some(hard_state) = hard_state {
            self.memory
                .set_hard_state(hard_state)
                .map_err(|error| format!("in-memory hard state failed: {error}"))?;
        }
        self.metrics.record_append(started.elapsed());
        for job in group {
            if !job.messages.is_empty() {
                self.metrics.count_messages_sent(job.messages.len() as u64);
            }
            for envelope in job.messages {
                self.transport.send(envelope);
            }
            let _ = self.events.send(DiskEvent::Persisted(job.marker));
        }
        Ok(())
    }

    fn install_snapshot(&mut self, metadata: &SnapshotMetadata, data_path: &PathBuf) -> Result<(), String> {
        let mut file = std::fs::File::open(data_path)
            .map_err(|error| format!("opening received snapshot {}: {error}", data_path.display()))?;
        self.snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .write(metadata.clone(), &mut file)
            .map_err(|error| format!("storing received snapshot {}: {error}", metadata.last))?;
        let _ = std::fs::remove_file(data_path);
        self.log
            .write(&WriteBatch::new().with_installed_snapshot(metadata.clone()))
            .map_err(|error| format!("recording snapshot {}: {error}", metadata.last))?;
        self.memory
            .apply_snapshot(metadata.clone())
            .map_err(|error| format!("in-memory snapshot install failed: {error}"))?;
        self.metrics.count_snapshot_installed();
        tracing::info!(snapshot = %metadata.last, "snapshot from the leader installed");
        // The applier restores before it applies anything the core hands
        // out after this snapshot.
        let _ = self.applier.send(ApplyJob::Restore {
            metadata: metadata.clone(),
        });
        Ok(())
    }

    fn compact(&mut self, snapshot: SnapshotMetadata, through: Index) -> Result<(), String> {
        let through = through.min(snapshot.last.index);
        self.log
            .write(
                &WriteBatch::new()
                    .with_snapshot(snapshot.clone())
                    .with_compaction_through(through),
            )
            .map_err(|error| format!("log compaction failed: {error}"))?;
        // The in-memory log may already be past the snapshot (newer
        // snapshot installed meanwhile): that is not an error.
        if self.memory.create_snapshot(snapshot).is_ok() {
            let _ = self.memory.compact(through);
        }
        Ok(())
    }
}
