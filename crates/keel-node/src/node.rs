//! Starting a node: recover (or bootstrap) its state from the data
//! directory, then start the raft loop, the disk thread and the applier.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keel::{ConfState, Index, LogId, MemStorage, NodeId, RawNode, SnapshotMetadata, Storage, StorageWrite};
use keel_log::{LogConfig, LogStore, SnapshotStore, WriteBatch};
use tokio::sync::mpsc;

use crate::actor::{Actor, ActorInputs};
use crate::apply::{Applier, ApplierStart};
use crate::clock::TickClock;
use crate::config::NodeConfig;
use crate::data_dir::{self, DataDirectory};
use crate::disk::DiskWriter;
use crate::halt::{self, Halt};
use crate::handle::NodeHandle;
use crate::members::{read_snapshot_prefix, snapshot_prefix, AddressBook};
use crate::metrics::Metrics;
use crate::removal::RefusalWatch;
use crate::request::{Incarnation, RequestIds};
use crate::state_machine::StateMachine;
use crate::transport::{Inbound, Transport};

/// How a node with an empty data directory starts. Ignored when the data
/// directory already holds a node's state: the node recovers it.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// A founding member of a new cluster: every founder is started with
    /// the same address book (itself included).
    Founders(AddressBook),
    /// A node that waits to be added by a membership change.
    Join,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be used.
    #[error("data directory {path}: {reason}")]
    DataDirectory {
        /// The directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Another process holds the data directory (a node runs on it): two
    /// processes on one directory would be two voters with one identity.
    #[error(
        "data directory {} is in use by another process{}: only one node may run on a data directory; stop that process first, or give this node a directory of its own",
        path.display(),
        holder_process_id.map_or_else(String::new, |id| format!(" (process id {id})"))
    )]
    DataDirectoryInUse {
        /// The directory.
        path: PathBuf,
        /// The process holding it, if it could be read.
        holder_process_id: Option<u32>,
    },
    /// The data directory holds another node's state.
    #[error(
        "data directory {} holds the state of node {stored}, not of node {configured}: start node {stored} on it, or give node {configured} an empty directory of its own",
        path.display()
    )]
    WrongNode {
        /// The directory.
        path: PathBuf,
        /// The node the directory was made for.
        stored: NodeId,
        /// The node asked to start on it.
        configured: NodeId,
    },
    /// The stored state is damaged or inconsistent; nothing was changed.
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The operating system refused what the node needs to run: a thread,
    /// or entropy for the node's incarnation.
    #[error("system: {0}")]
    System(String),
}

/// Starts nodes.
pub struct Node;

struct Recovered {
    log: LogStore,
    snapshots: SnapshotStore,
    memory: MemStorage,
    members: AddressBook,
    applied: LogId,
    conf_state: ConfState,
}

impl Node {
    /// Starts a node: recovers its state from `config.data_dir` (or
    /// bootstraps it as `bootstrap` says), then runs it on the current
    /// tokio runtime. `transport` sends to peers; it delivers what arrives
    /// into the sender whose receiver is `inbound` (see
    /// [`inbound_channel`](crate::inbound_channel)).
    ///
    /// # Errors
    /// [`StartError`] if the data directory is unusable or damaged, or the
    /// configuration is invalid (a zero `tick_interval`, say).
    pub async fn start<M: StateMachine>(
        config: NodeConfig,
        mut state_machine: M,
        bootstrap: Bootstrap,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Result<NodeHandle<M>, StartError> {
        if config.tick_interval.is_zero() {
            return Err(StartError::Config("tick_interval must not be zero".to_string()));
        }
        let incarnation = Incarnation::draw().map_err(StartError::System)?;
        let (recovered, state_machine, data_directory, removed) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                // Held before anything is read, until the node stops.
                let data_directory = DataDirectory::open(&config.data_dir, config.id)?;
                let removed = data_dir::recorded_removal(&config.data_dir)?;
                let recovered = recover(&config, &mut state_machine, &bootstrap)?;
                Ok::<_, StartError>((recovered, state_machine, data_directory, removed))
            })
            .await
            .map_err(|error| StartError::Recovery(format!("recovery task failed: {error}")))??
        };
        let mut raft_config = config.raft.clone();
        raft_config.id = config.id;
        raft_config.applied = recovered.applied.index;
        raft_config.async_storage_writes = true;
        let raw = RawNode::new(&raft_config, recovered.memory.clone())
            .map_err(|error| StartError::Config(error.to_string()))?;
        for (id, info) in &recovered.members {
            if *id != config.id {
                transport.set_peer(*id, &info.peer_address);
            }
        }
        let snapshots = Arc::new(Mutex::new(recovered.snapshots));
        let pending_writes = Arc::new(Mutex::new(HashMap::new()));
        let metrics = Arc::new(Metrics::new(config.id));
        let (apply_sender, apply_jobs) = mpsc::unbounded_channel();
        let (apply_event_sender, apply_events) = mpsc::unbounded_channel();
        let (disk_sender, disk_jobs) = mpsc::unbounded_channel();
        let (disk_event_sender, disk_events) = mpsc::unbounded_channel();
        let applier = Applier::new(ApplierStart {
            local: config.id,
            state_machine,
            applied: recovered.applied,
            membership: (recovered.conf_state, recovered.members.clone()),
            snapshot_interval_entries: config.snapshot_interval_entries,
            snapshots: snapshots.clone(),
            pending_writes: pending_writes.clone(),
            events: apply_event_sender,
            metrics: metrics.clone(),
        });
        let disk = DiskWriter::<M> {
            log: recovered.log,
            memory: recovered.memory,
            snapshots: snapshots.clone(),
            transport: transport.clone(),
            applier: apply_sender.clone(),
            events: disk_event_sender,
            metrics: metrics.clone(),
        };
        let spawn = |name: String, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(work)
                .map_err(|error| StartError::System(format!("cannot start a thread: {error}")))
        };
        let applier_thread = spawn(
            format!("keel-apply-{}", config.id),
            Box::new(move || applier.run(apply_jobs)),
        )?;
        let disk_thread = spawn(
            format!("keel-disk-{}", config.id),
            Box::new(move || disk.run(disk_jobs)),
        )?;
        let (request_sender, requests) = mpsc::channel(config.max_pending_requests.max(1));
        let (halt_sender, halt_receiver) = halt::channel();
        if let Some(removal) = &removed {
            tracing::error!(node = %config.id, %removal, "this node was removed from the cluster");
            halt_sender.send_replace(Some(Halt::Removed(removal.clone())));
        }
        let handle = NodeHandle {
            id: config.id,
            requests: request_sender,
            request_timeout: config.request_timeout,
            metrics: metrics.clone(),
            halt: halt_receiver,
        };
        // Refusals count once no member has sent anything for two of the
        // longest election timeouts: long enough for members that lag
        // behind this node's addition to catch up (see `removal`).
        let quiet = config.tick_interval.saturating_mul(
            2 * u32::try_from(config.raft.election_timeout_ticks_max).unwrap_or(u32::MAX / 2),
        );
        let refusal_watch = RefusalWatch::new(config.id, quiet, tokio::time::Instant::now());
        let actor = Actor {
            clock: TickClock::new(tokio::time::Instant::now(), config.tick_interval),
            config,
            raw,
            transport,
            members: recovered.members,
            leaving_peers: Vec::new(),
            disk: disk_sender,
            applier: apply_sender,
            snapshots,
            pending_writes,
            pending_reads: HashMap::new(),
            pending_changes: HashMap::new(),
            changes_awaiting_apply: Vec::new(),
            transfer_waiters: Vec::new(),
            received_snapshots: Default::default(),
            request_ids: RequestIds::new(incarnation),
            metrics,
            fatal: None,
            removed,
            refusal_watch,
            halt: halt_sender,
            known_leader: None,
            threads: vec![applier_thread, disk_thread],
            data_directory: Some(data_directory),
        };
        tokio::spawn(actor.run(ActorInputs {
            requests,
            inbound,
            disk_events,
            apply_events,
        }));
        Ok(handle)
    }
}

fn directory_error(path: &Path, error: impl std::fmt::Display) -> StartError {
    StartError::DataDirectory {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// Opens the stores, bootstraps an empty directory, restores the state
/// machine from the latest snapshot and loads the log after it.
fn recover<M: StateMachine>(
    config: &NodeConfig,
    state_machine: &mut M,
    bootstrap: &Bootstrap,
) -> Result<Recovered, StartError> {
    let log_dir = config.data_dir.join("log");
    let snapshot_dir = config.data_dir.join("snapshots");
    for directory in [&log_dir, &snapshot_dir] {
        std::fs::create_dir_all(directory).map_err(|error| directory_error(directory, error))?;
    }
    let log_config = LogConfig::default().with_segment_size_bytes(config.segment_size_bytes);
    let mut log =
        LogStore::open(&log_dir, log_config).map_err(|error| StartError::Recovery(error.to_string()))?;
    let mut snapshots =
        SnapshotStore::open(&snapshot_dir).map_err(|error| StartError::Recovery(error.to_string()))?;
    let fresh = log.durable_state().last().index == Index::ZERO
        && log.hard_state().is_empty()
        && snapshots.latest().is_none();
    if fresh {
        if let Bootstrap::Founders(members) = bootstrap {
            let metadata = SnapshotMetadata::bootstrap(ConfState::with_voters(members.keys().copied()));
            let mut data = Cursor::new(snapshot_prefix(members)).chain(state_machine.snapshot());
            snapshots
                .write(metadata.clone(), &mut data)
                .map_err(|error| StartError::Recovery(format!("writing the bootstrap snapshot: {error}")))?;
            log.write(&WriteBatch::new().with_installed_snapshot(metadata))
                .map_err(|error| {
                    StartError::Recovery(format!("recording the bootstrap snapshot: {error}"))
                })?;
        }
    }
    let mut memory = MemStorage::new();
    let mut members = AddressBook::new();
    let mut applied = LogId::default();
    let mut conf_state = log.conf_state().clone();
    let recovery = |error: String| StartError::Recovery(error);
    if let Some(mut reader) = snapshots
        .read_latest()
        .map_err(|error| recovery(error.to_string()))?
    {
        let metadata = reader.metadata().clone();
        members = read_snapshot_prefix(&mut reader).map_err(recovery)?;
        state_machine
            .restore(&mut reader)
            .map_err(|error| recovery(format!("restoring snapshot {}: {error}", metadata.last)))?;
        applied = metadata.last;
        conf_state = metadata.conf_state.clone();
        memory
            .apply_snapshot(metadata)
            .map_err(|error| recovery(error.to_string()))?;
    } else {
        memory
            .set_conf_state(conf_state.clone())
            .map_err(|error| recovery(error.to_string()))?;
    }
    load_entries_after(&log, &mut memory, applied.index)?;
    memory
        .set_hard_state(log.hard_state())
        .map_err(|error| recovery(error.to_string()))?;
    Ok(Recovered {
        log,
        snapshots,
        memory,
        members,
        applied,
        conf_state,
    })
}

/// Copies the log's entries after `after` into the in-memory log.
fn load_entries_after(log: &LogStore, memory: &mut MemStorage, after: Index) -> Result<(), StartError> {
    const CHUNK_BYTES: u64 = 16 * 1024 * 1024;
    let recovery = |error: keel::StorageError| StartError::Recovery(error.to_string());
    let first = log.first_index().map_err(recovery)?;
    let last = log.last_index().map_err(recovery)?;
    let mut next = after.next();
    if first > next && last >= first {
        return Err(StartError::Recovery(format!(
            "the log starts at {first} but the snapshot ends at {after}: entries are missing"
        )));
    }
    while next <= last {
        let chunk = log.entries(next, last.next(), CHUNK_BYTES).map_err(recovery)?;
        let Some(tail) = chunk.last() else {
            break;
        };
        next = tail.index.next();
        memory.append(&chunk).map_err(recovery)?;
    }
    Ok(())
}
