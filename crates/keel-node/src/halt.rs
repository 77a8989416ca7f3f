//! [`Halt`]: why a node stopped serving as a member, for whoever runs it
//! (a supervisor decides from it whether to exit, and how).

use std::fmt;

use tokio::sync::watch;

use crate::removal::Removal;

/// Why a node stopped serving as a member; what
/// [`NodeHandle::halted`](crate::NodeHandle::halted) returns.
///
/// ```
/// use keel_node::{Halt, Removal};
/// let halt = Halt::Fatal("log write failed: No space left on device".into());
/// assert!(halt.to_string().contains("No space left"));
/// assert!(!Halt::Removed(Removal::Recorded { reason: "earlier".into() }).to_string().is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// A fatal error stopped the node (a failed disk write, a panic in the
    /// state machine): it serves nothing more, and only a restart (after
    /// fixing the cause) brings it back. Requests waiting when it stopped
    /// failed with [`NodeError::Fatal`](crate::NodeError::Fatal).
    Fatal(String),
    /// The node learned that it is no longer a member. It keeps running
    /// (it answers [`status`](crate::NodeHandle::status) and stale reads;
    /// everything else fails with
    /// [`NodeError::NotMember`](crate::NodeError::NotMember)) and no longer
    /// campaigns; stop it with [`shutdown`](crate::NodeHandle::shutdown).
    Removed(Removal),
    /// The node was shut down.
    ShutDown,
}

impl fmt::Display for Halt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Halt::Fatal(reason) => write!(formatter, "stopped after a fatal error: {reason}"),
            Halt::Removed(removal) => write!(formatter, "removed from the cluster: {removal}"),
            Halt::ShutDown => formatter.write_str("shut down"),
        }
    }
}

/// The raft loop's side: announces the first halt (a later one, say a
/// fatal error after a removal, replaces it for later readers).
pub(crate) fn channel() -> (watch::Sender<Option<Halt>>, watch::Receiver<Option<Halt>>) {
    watch::channel(None)
}

/// Waits on `receiver` until a halt is announced; the raft loop gone
/// without a word counts as shut down.
pub(crate) async fn wait(mut receiver: watch::Receiver<Option<Halt>>) -> Halt {
    match receiver.wait_for(Option::is_some).await {
        Ok(halt) => halt.clone().unwrap_or(Halt::ShutDown),
        Err(_) => Halt::ShutDown,
    }
}
