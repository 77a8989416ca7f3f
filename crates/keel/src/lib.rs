//! # keel
//!
//! The Raft consensus protocol as a deterministic state machine with no IO.
//!
//! A [`RawNode`] knows nothing of time, threads, disks or sockets. The
//! runtime around it feeds it input — [`RawNode::tick`] at a fixed interval,
//! [`RawNode::step`] for each message from a peer, [`RawNode::propose`] for
//! new commands — and takes the work it produces out of a [`Ready`]: entries
//! and hard state to persist, messages to send, committed entries to apply.
//! Same state and same input give the same output: the only randomness (the
//! election timeouts) comes from a seeded generator in [`Config`].
//!
//! ## A walk-through
//!
//! Start a node. A founding member of a new cluster starts from storage
//! holding the initial membership; a restarted node from whatever its
//! storage recovered.
//!
//! ```
//! use bytes::Bytes;
//! use keel::{Config, ConfState, MemStorage, NodeId, RawNode, Role, StorageWrite};
//!
//! let storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
//! let mut node = RawNode::new(&Config::new(NodeId::new(1)), storage)?;
//!
//! // Normally the election timeout makes a node campaign; a single voter
//! // wins at once.
//! node.campaign()?;
//! assert_eq!(node.status().role, Role::Leader);
//!
//! // Propose a command. It is appended to the leader's log; it commits once
//! // a majority (here: this node) has it on disk.
//! node.propose(Bytes::from_static(b"set x = 1"))?;
//!
//! // The runtime loop: take a Ready, do what it says in order, advance.
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let ready = node.ready()?;
//!     // 1. Messages that may leave at once (a leader's appends go out in
//!     //    parallel with its own disk write).
//!     for _envelope in ready.messages() { /* transport.send(envelope) */ }
//!     // 2. Persist entries, then hard state.
//!     node.storage_mut().append(ready.entries())?;
//!     if let Some(hard_state) = ready.hard_state() {
//!         node.storage_mut().set_hard_state(hard_state)?;
//!     }
//!     // 3. Messages that promise durability (votes, acknowledgements).
//!     for _envelope in ready.persisted_messages() { /* transport.send(envelope) */ }
//!     // 4. Apply committed entries in order.
//!     for entry in ready.committed_entries() {
//!         if !entry.data.is_empty() {
//!             applied.push(entry.data.clone());
//!         }
//!     }
//!     node.advance(ready)?;
//! }
//! assert_eq!(applied, vec![Bytes::from_static(b"set x = 1")]);
//!
//! // Change membership: propose the change; when its entry comes out of a
//! // Ready as committed, decode it and apply it (etcd's semantics: a change
//! // takes effect when applied), then persist the new membership.
//! use keel::{ConfChange, ReadMode};
//! node.propose_conf_change(&ConfChange::add_learner(NodeId::new(2)))?;
//! let mut membership = None;
//! while node.has_ready() {
//!     let ready = node.ready()?;
//!     node.storage_mut().append(ready.entries())?;
//!     if let Some(hard_state) = ready.hard_state() {
//!         node.storage_mut().set_hard_state(hard_state)?;
//!     }
//!     for entry in ready.committed_entries() {
//!         if entry.kind.is_conf_change() {
//!             let change = ConfChange::decode(&entry.data)?;
//!             let conf_state = node.apply_conf_change(&change)?;
//!             node.storage_mut().set_conf_state(conf_state.clone())?;
//!             membership = Some(conf_state);
//!         }
//!     }
//!     node.advance(ready)?;
//! }
//! assert!(membership.unwrap().learners().contains(&NodeId::new(2)));
//!
//! // A linearizable read without writing to the log (thesis §6.4): ask for a
//! // read index; serve the read once the state machine has applied it.
//! node.read_index(Bytes::from_static(b"read #1"), ReadMode::Safe)?;
//! let ready = node.ready()?;
//! let state = &ready.read_states()[0];
//! assert_eq!(state.context, Bytes::from_static(b"read #1"));
//! assert!(state.index <= node.status().applied); // here: serve the read
//! node.advance(ready)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Snapshots
//!
//! The application takes snapshots of its state and compacts the log
//! behind them (`StorageWrite::create_snapshot`, `StorageWrite::compact`).
//! When a follower needs compacted entries, the leader's `Ready` carries a
//! `Message::Snapshot` with the snapshot's *metadata only*: the runtime
//! streams the data beside it (as `keel-net` does) and reports the outcome
//! with [`RawNode::report_snapshot`]. The follower's runtime steps the
//! message once the data has arrived; the core decides whether to install
//! it (only if it is ahead of its commit index; matching entries after it
//! are kept) and hands the metadata back in [`Ready::snapshot`].
//!
//! A multi-node cluster is the same loop on every node, with messages
//! carried between them; `keel::testing::Cluster` (feature `test-support`) does
//! exactly that in memory.
//!
//! ## Asynchronous persistence
//!
//! With [`Config::async_storage_writes`], the runtime hands the `Ready`'s
//! writes to a disk thread and keeps going; it reports completion with
//! [`RawNode::on_persisted`] (with the `Ready`'s [`PersistMarker`]) and
//! [`RawNode::on_applied`]. The leader counts its own log toward commitment
//! only once it is reported durable, and committed entries are handed out
//! for applying only once they are durable locally.
//!
//! ## Errors
//!
//! Nothing a peer sends can panic a node: malformed messages are refused
//! with [`StepError`], stale ones ignored. A refused proposal
//! ([`ProposalError`]) changes nothing. A storage failure is fatal: the node
//! stops and every later call returns [`Error::Stopped`].

#![warn(clippy::unwrap_used)]

pub mod confchange;
mod config;
mod error;
mod log;
mod message;
#[cfg(feature = "planted-bugs")]
mod planted_bugs;
// Quorum arithmetic and the leader's progress tracking are the protocol's
// own bookkeeping: private, so they can change without breaking users. The
// one type the public API shows (`PeerStatus::state`) is re-exported below.
mod quorum;
mod raft;
mod raw_node;
mod ready;
mod status;
mod storage;
mod tracker;
mod types;

#[cfg(feature = "test-support")]
pub mod testing;

pub use confchange::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
pub use config::{Config, ConfigError};
pub use error::{Error, ProposalError, ReadError, StepError, StorageError, TransferError};
pub use message::{
    Append, AppendResponse, ElectionReason, Envelope, ForwardedProposal, Heartbeat, HeartbeatResponse,
    Message, ProposedEntry, ReadIndexRequest, ReadIndexResponse, RefusalReason, RefusedProposal, VoteKind,
    VoteRequest, VoteResponse,
};
#[cfg(feature = "planted-bugs")]
pub use planted_bugs::PlantedBug;
pub use raft::{ReadMode, ReadState, Role, SnapshotOutcome};
pub use raw_node::RawNode;
pub use ready::{PersistMarker, Ready, SoftState};
pub use status::{PeerStatus, Status};
pub use storage::{InitialState, MemStorage, Storage, StorageWrite};
pub use tracker::ProgressState;
pub use types::{
    ConfState, ConfStateError, Entry, EntryKind, HardState, Index, LogId, NodeId, SnapshotMetadata, Term,
};
