//! [`Status`]: a node's state, for monitoring and tests.

use crate::raft::Role;
use crate::tracker::ProgressState;
use crate::types::{ConfState, HardState, Index, NodeId};

/// A copy of a node's state at one moment.
///
/// ```
/// use keel::{Config, ConfState, MemStorage, NodeId, RawNode, Role};
/// let storage = MemStorage::new_with_conf_state(ConfState::with_voters([NodeId::new(1)]));
/// let mut node = RawNode::new(&Config::new(NodeId::new(1)), storage)?;
/// node.campaign()?;
/// let status = node.status();
/// assert_eq!(status.role, Role::Leader);
/// // Nothing compacted yet: the log still starts at its first entry.
/// assert_eq!(status.first_index.map(|index| index.get()), Some(1));
/// assert_eq!(status.peers.len(), 1);
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The highest index applied.
    pub applied: Index,
    /// The first index still in its log (entries below it are compacted
    /// into a snapshot), or `None` if storage could not say just now.
    ///
    /// Reading it may ask storage, and storage can fail; `status` itself
    /// never fails and never stops the node for that (a monitoring call
    /// should not decide the node's fate), so a failed read shows here as
    /// `None` and the next step that needs the log reports the error.
    pub first_index: Option<Index>,
    /// The last index of its log.
    pub last_index: Index,
    /// The membership in force.
    pub conf_state: ConfState,
    /// Uncommitted proposal bytes (leader).
    pub uncommitted_bytes: u64,
    /// The node leadership is being handed to (leader only).
    pub transfer_target: Option<NodeId>,
    /// The index of the latest membership change in the log (leader only).
    pub pending_conf_index: Index,
    /// The election timeout drawn for this term.
    pub randomized_election_timeout_ticks: u64,
    /// Each member's replication progress (leader only; empty otherwise).
    pub peers: Vec<PeerStatus>,
}

/// The leader's view of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The member.
    pub id: NodeId,
    /// The highest index known replicated to it.
    pub matched: Index,
    /// The next index to send.
    pub next: Index,
    /// How the leader sends to it.
    pub state: ProgressState,
    /// In [`ProgressState::Probe`]: a probe was sent and not answered yet,
    /// so the leader sends nothing more until an answer or the next
    /// heartbeat response. Always false in the other states. A follower
    /// that stays paused across heartbeats is not answering.
    pub probe_paused: bool,
    /// Whether it was heard from in the current check-quorum period.
    pub recent_active: bool,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Append messages in flight.
    pub inflight_messages: usize,
    /// Entry bytes in flight.
    pub inflight_bytes: u64,
}
