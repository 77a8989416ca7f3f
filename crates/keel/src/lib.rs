//! # keel
//!
//! The Raft consensus protocol as a deterministic state machine with no IO.
//! (Crate documentation with a complete walk-through follows as the core lands.)

mod config;
mod error;
mod log;
mod message;
pub mod quorum;
mod raft;
mod raw_node;
mod ready;
mod status;
mod storage;
pub mod tracker;
mod types;

#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{Config, ConfigError};
pub use error::{Error, ProposalError, ReadError, StepError, StorageError};
pub use message::{
    Append, AppendResponse, ElectionReason, Envelope, ForwardedProposal, Heartbeat, HeartbeatResponse, Message,
    ProposedEntry, ReadIndexRequest, ReadIndexResponse, VoteKind, VoteRequest, VoteResponse,
};
pub use raft::Role;
pub use raw_node::RawNode;
pub use ready::{PersistMarker, Ready, SoftState};
pub use status::{PeerStatus, Status};
pub use storage::{InitialState, MemStorage, Storage, StorageWrite};
pub use types::{ConfState, ConfStateError, Entry, EntryKind, HardState, Index, LogId, NodeId, SnapshotMetadata, Term};
