//! [`NodeStatus`]: a node's state as its handle reports it.

use keel::Status;

use crate::members::AddressBook;
use crate::removal::Removal;

/// A node's state, as [`NodeHandle::status`](crate::NodeHandle::status)
/// reports it.
///
/// ```no_run
/// # async fn run<M: keel_node::StateMachine>(node: keel_node::NodeHandle<M>) -> Result<(), keel_node::NodeError> {
/// let status = node.status().await?;
/// if let Some(removal) = &status.removed {
///     eprintln!("node {} is no longer a member: {removal}", status.raft.id);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The core's view: role, term, leader, commit, applied, membership.
    pub raft: Status,
    /// How to reach each member.
    pub members: AddressBook,
    /// Why the node stopped, if it did.
    pub fatal: Option<String>,
    /// How the node learned that it is no longer a member of the cluster,
    /// if it did (see [`Removal`]). A removed node no longer campaigns and
    /// refuses everything but status and stale reads.
    pub removed: Option<Removal>,
}
