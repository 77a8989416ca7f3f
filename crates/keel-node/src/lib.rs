//! # keel-node
//!
//! The runtime around keel's core: implement [`StateMachine`], start a
//! [`Node`], and use the [`NodeHandle`] to `write`, `read`, change
//! membership and transfer leadership.
//!
//! ## How it runs
//!
//! - **One task owns the `RawNode`** (the raft loop). Whenever it wakes,
//!   it first charges the core every tick its monotonic clock owes (one
//!   per `tick_interval` elapsed, so a paused process owes many), then
//!   steps messages from the transport, takes client requests, and hands
//!   each `Ready`'s work on: messages to the transport at once (a leader
//!   replicates in parallel with its own disk write), writes to the disk
//!   thread, committed entries to the applier. It never waits for IO.
//! - **The disk thread** writes with keel-log, grouping every `Ready`
//!   queued behind the current write into one fsync, mirrors the writes
//!   into the in-memory log the core reads from, and only then sends the
//!   messages that promise durability (votes, acknowledgements, anything
//!   of a term not yet durable).
//! - **The applier thread** owns the state machine: it applies entries in
//!   order, answers writers and readers, and takes snapshots every
//!   `snapshot_interval_entries`, after which the log is compacted.
//!
//! ## Consistency
//!
//! A write returns once its entry is applied on the node that took it.
//! Reads are [`Consistency::Linearizable`] (ReadIndex), [`Consistency::Lease`]
//! or [`Consistency::Stale`]. Lease reads rest on a clock assumption: the
//! nodes' tick rates differ by at most `max_clock_drift_percent` of
//! [`keel::Config`], and time is measured by a monotonic clock, pauses
//! included (see [`Consistency::Lease`]). Followers forward writes and
//! linearizable reads to the leader themselves. `Timeout`, `NoLeader`,
//! `ShuttingDown` and `Fatal` on a write mean its outcome is unknown
//! ([`NodeError::outcome_unknown`]).
//!
//! Start with the [`guide`]: a replicated counter from scratch.

#![warn(clippy::unwrap_used)]

mod actor;
mod apply;
mod clock;
mod config;
mod consistency;
mod data_dir;
mod disk;
mod error;
pub mod guide;
mod halt;
mod handle;
mod members;
mod metrics;
mod node;
mod removal;
mod request;
mod state_machine;
mod status;
#[cfg(feature = "test-support")]
pub mod testing;
mod transport;

pub use config::NodeConfig;
pub use consistency::Consistency;
pub use data_dir::check_data_directory;
pub use error::NodeError;
pub use halt::Halt;
pub use handle::{MemberChange, NodeHandle};
pub use members::{AddressBook, MemberInfo};
pub use metrics::{names as metric_names, NodeMetrics};
pub use node::{Bootstrap, Node, StartError};
pub use removal::Removal;
pub use state_machine::{CommandError, RestoreError, StateMachine};
pub use status::NodeStatus;
pub use transport::{inbound_channel, Inbound, LocalNetwork, Transport, INBOUND_QUEUE_MESSAGES};
