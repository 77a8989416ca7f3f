//! The trait a user implements: what the replicated log drives.

use std::io::Read;

use bytes::Bytes;
use keel::Index;

/// The application state replicated by keel. Every node applies the same
/// commands in the same order, so every node's state machine goes through
/// the same states.
///
/// `apply` must be deterministic: the same state and command give the same
/// new state and response on every node. It runs on a dedicated thread, so
/// a slow `apply` delays responses but never heartbeats.
///
/// ```
/// use std::io::{Cursor, Read};
/// use bytes::Bytes;
/// use keel::Index;
/// use keel_node::{CommandError, RestoreError, StateMachine};
///
/// /// A counter: commands add to it, queries read it.
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl StateMachine for Counter {
///     type Command = u64;
///     type Response = u64;
///     type Query = ();
///     type QueryResponse = u64;
///
///     fn encode_command(command: &u64) -> Result<Bytes, CommandError> {
///         Ok(Bytes::copy_from_slice(&command.to_le_bytes()))
///     }
///     fn decode_command(data: &[u8]) -> Result<u64, CommandError> {
///         let bytes: [u8; 8] = data.try_into().map_err(|_| CommandError::new("not 8 bytes"))?;
///         Ok(u64::from_le_bytes(bytes))
///     }
///     fn apply(&mut self, _index: Index, command: u64) -> u64 {
///         self.0 += command;
///         self.0
///     }
///     fn query(&self, _query: &()) -> u64 {
///         self.0
///     }
///     fn snapshot(&self) -> Box<dyn Read + Send> {
///         Box::new(Cursor::new(self.0.to_le_bytes().to_vec()))
///     }
///     fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
///         let mut bytes = [0u8; 8];
///         snapshot.read_exact(&mut bytes).map_err(RestoreError::from)?;
///         self.0 = u64::from_le_bytes(bytes);
///         Ok(())
///     }
/// }
/// let mut counter = Counter::default();
/// assert_eq!(counter.apply(Index::new(1), 5), 5);
/// ```
pub trait StateMachine: Send + 'static {
    /// A change to the state, carried in the log.
    type Command: Send + 'static;
    /// What applying a command returns to the writer.
    type Response: Send + 'static;
    /// A question about the state.
    type Query: Send + 'static;
    /// The answer to a query.
    type QueryResponse: Send + 'static;

    /// Encodes a command for the log. Validate here: a command refused
    /// with an error never enters the log, so a malformed command cannot
    /// poison every node that would apply it.
    fn encode_command(command: &Self::Command) -> Result<Bytes, CommandError>;

    /// Decodes a command from the log. An error here for a committed entry
    /// stops the node (the log holds something this version cannot apply).
    fn decode_command(data: &[u8]) -> Result<Self::Command, CommandError>;

    /// Applies a committed command at `index`. A panic here stops the node
    /// with a fatal error rather than leave the state half-applied.
    fn apply(&mut self, index: Index, command: Self::Command) -> Self::Response;

    /// Answers a query from the current state.
    fn query(&self, query: &Self::Query) -> Self::QueryResponse;

    /// A stream of the whole state, for a snapshot. It must capture the
    /// state as of this call; keel reads it to the end right away.
    fn snapshot(&self) -> Box<dyn Read + Send>;

    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError>;
}

/// A command that cannot be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid command: {reason}")]
pub struct CommandError {
    reason: String,
}

impl CommandError {
    /// An error with a reason for the caller.
    pub fn new(reason: impl Into<String>) -> Self {
        CommandError {
            reason: reason.into(),
        }
    }

    /// Why the command is invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A snapshot that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the snapshot failed.
    #[error("reading the snapshot failed: {0}")]
    Io(#[from] std::io::Error),
    /// The snapshot's content is invalid.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}
