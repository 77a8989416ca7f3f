//! # Write your first replicated service
//!
//! This page builds a replicated counter from scratch: three nodes that
//! agree on one number, survive the loss of any one of them, and answer
//! linearizable reads. Everything keel needs from you is the state machine;
//! the log, elections, replication, snapshots and recovery come with
//! [`Node`](crate::Node).
//!
//! ## 1. The state machine
//!
//! A [`StateMachine`](crate::StateMachine) turns commands into state
//! changes. It must be deterministic: every node applies the same commands
//! in the same order and must end in the same state. Commands travel in
//! the log as bytes, so you say how to encode them — and refuse bad ones
//! there, before they enter the log. Snapshots are streams, so a state
//! larger than memory can be transferred.
//!
//! ```
//! use std::io::{Cursor, Read};
//! use bytes::Bytes;
//! use keel::Index;
//! use keel_node::{CommandError, RestoreError, StateMachine};
//!
//! #[derive(Default)]
//! pub struct Counter {
//!     value: i64,
//! }
//!
//! pub enum CounterCommand {
//!     Add(i64),
//! }
//!
//! impl StateMachine for Counter {
//!     type Command = CounterCommand;
//!     type Response = i64; // the value after the command
//!     type Query = ();
//!     type QueryResponse = i64;
//!
//!     fn encode_command(command: &CounterCommand) -> Result<Bytes, CommandError> {
//!         let CounterCommand::Add(amount) = command;
//!         if *amount == 0 {
//!             return Err(CommandError::new("adding zero is pointless"));
//!         }
//!         Ok(Bytes::copy_from_slice(&amount.to_le_bytes()))
//!     }
//!
//!     fn decode_command(data: &[u8]) -> Result<CounterCommand, CommandError> {
//!         let bytes: [u8; 8] = data.try_into().map_err(|_| CommandError::new("not 8 bytes"))?;
//!         Ok(CounterCommand::Add(i64::from_le_bytes(bytes)))
//!     }
//!
//!     fn apply(&mut self, _index: Index, command: CounterCommand) -> i64 {
//!         let CounterCommand::Add(amount) = command;
//!         self.value += amount;
//!         self.value
//!     }
//!
//!     fn query(&self, _query: &()) -> i64 {
//!         self.value
//!     }
//!
//!     fn snapshot(&self) -> Box<dyn Read + Send> {
//!         Box::new(Cursor::new(self.value.to_le_bytes().to_vec()))
//!     }
//!
//!     fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
//!         let mut bytes = [0u8; 8];
//!         snapshot.read_exact(&mut bytes)?;
//!         self.value = i64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! ## 2. Start three nodes
//!
//! Each node needs a data directory, a transport and its inbound channel.
//! In production the transport is [`keel_net::Network`] (TCP, optionally
//! mutual TLS); here the nodes share one process through a
//! [`LocalNetwork`](crate::LocalNetwork), which is the same code path
//! minus the sockets. Founding members are all started with the same
//! [`Bootstrap::Founders`](crate::Bootstrap) address book; a restarted node
//! ignores it and recovers from its data directory.
//!
//! ## 3. Write and read
//!
//! [`NodeHandle::write`](crate::NodeHandle::write) returns once the command
//! is applied on the node you asked, with the state machine's response. Any
//! node accepts writes: followers forward them to the leader.
//! [`NodeHandle::read`](crate::NodeHandle::read) with
//! [`Consistency::Linearizable`](crate::Consistency) answers from the state
//! as of a moment after the call began, on any node.
//!
//! ```
//! # use std::io::{Cursor, Read};
//! # use bytes::Bytes;
//! # use keel::Index;
//! # use keel_node::{CommandError, RestoreError, StateMachine};
//! # #[derive(Default)]
//! # pub struct Counter { value: i64 }
//! # pub enum CounterCommand { Add(i64) }
//! # impl StateMachine for Counter {
//! #     type Command = CounterCommand;
//! #     type Response = i64;
//! #     type Query = ();
//! #     type QueryResponse = i64;
//! #     fn encode_command(command: &CounterCommand) -> Result<Bytes, CommandError> {
//! #         let CounterCommand::Add(amount) = command;
//! #         if *amount == 0 { return Err(CommandError::new("adding zero is pointless")); }
//! #         Ok(Bytes::copy_from_slice(&amount.to_le_bytes()))
//! #     }
//! #     fn decode_command(data: &[u8]) -> Result<CounterCommand, CommandError> {
//! #         let bytes: [u8; 8] = data.try_into().map_err(|_| CommandError::new("not 8 bytes"))?;
//! #         Ok(CounterCommand::Add(i64::from_le_bytes(bytes)))
//! #     }
//! #     fn apply(&mut self, _index: Index, command: CounterCommand) -> i64 {
//! #         let CounterCommand::Add(amount) = command;
//! #         self.value += amount;
//! #         self.value
//! #     }
//! #     fn query(&self, _query: &()) -> i64 { self.value }
//! #     fn snapshot(&self) -> Box<dyn Read + Send> { Box::new(Cursor::new(self.value.to_le_bytes().to_vec())) }
//! #     fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
//! #         let mut bytes = [0u8; 8];
//! #         snapshot.read_exact(&mut bytes)?;
//! #         self.value = i64::from_le_bytes(bytes);
//! #         Ok(())
//! #     }
//! # }
//! use std::time::Duration;
//! use keel::NodeId;
//! use keel_node::{
//!     inbound_channel, AddressBook, Bootstrap, Consistency, LocalNetwork, MemberInfo, Node, NodeConfig, NodeError,
//! };
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tempfile::tempdir()?;
//! let network = LocalNetwork::new(data.path());
//! let founders: AddressBook = (1..=3)
//!     .map(|id| (NodeId::new(id), MemberInfo { peer_address: format!("node-{id}"), metadata: Bytes::new() }))
//!     .collect();
//!
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     let mut config = NodeConfig::new(NodeId::new(id), data.path().join(format!("node-{id}")));
//!     config.tick_interval = Duration::from_millis(10); // fast elections for the example
//!     let (inbound_sender, inbound) = inbound_channel();
//!     let transport = network.join(NodeId::new(id), inbound_sender);
//!     let handle = Node::start(config, Counter::default(), Bootstrap::Founders(founders.clone()), transport, inbound)
//!         .await?;
//!     nodes.push(handle);
//! }
//!
//! // Writes through any node; wait for the first election to settle.
//! let mut value = None;
//! for _ in 0..200 {
//!     match nodes[0].write(CounterCommand::Add(5)).await {
//!         Ok(after) => { value = Some(after); break; }
//!         Err(error) if error.outcome_unknown() => tokio::time::sleep(Duration::from_millis(10)).await,
//!         Err(error) => return Err(error.into()),
//!     }
//! }
//! // (A retried write after an unknown outcome may apply twice: make
//! // commands idempotent, or tag them, when that matters.)
//! assert!(value.is_some());
//! let after = nodes[2].write(CounterCommand::Add(-2)).await?;
//!
//! // Linearizable reads on every node see the latest value.
//! for node in &nodes {
//!     assert_eq!(node.read((), Consistency::Linearizable).await?, after);
//! }
//!
//! // A bad command never enters the log.
//! let error = nodes[1].write(CounterCommand::Add(0)).await.unwrap_err();
//! assert!(matches!(error, NodeError::Refused(_)));
//!
//! for node in &nodes {
//!     node.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## 4. What you get for free
//!
//! - **Failures**: stop any one node and the others elect a leader within
//!   one or two election timeouts (10–20 ticks by default) and keep
//!   serving. A restarted node recovers its log from disk and catches up.
//! - **Snapshots**: every `snapshot_interval_entries` applied entries the
//!   applier streams [`StateMachine::snapshot`](crate::StateMachine::snapshot)
//!   to disk and the log is compacted; a node far behind receives the
//!   snapshot instead of the log.
//! - **Membership**: [`NodeHandle::add_learner`](crate::NodeHandle::add_learner),
//!   then [`NodeHandle::add_voter`](crate::NodeHandle::add_voter) to promote;
//!   [`NodeHandle::remove_member`](crate::NodeHandle::remove_member);
//!   [`NodeHandle::transfer_leader`](crate::NodeHandle::transfer_leader).
//!   A removed node learns it (from its log, or from the members refusing
//!   it) and says so: [`NodeHandle::halted`](crate::NodeHandle::halted)
//!   returns, as it does after a fatal error, so that a server can exit.
//! - **Errors that say what happened**: `Timeout`, `NoLeader`,
//!   `ShuttingDown` and `Fatal` on a write mean the outcome is unknown
//!   ([`NodeError::outcome_unknown`](crate::NodeError::outcome_unknown));
//!   every other error means it was not applied.
//!
//! A complete server built this way, with an HTTP API, is `keel-kv`
//! (`crates/keel-kv/src/store.rs` is its state machine).
