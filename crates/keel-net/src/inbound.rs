//! What the transport hands to the runtime.

use std::path::PathBuf;

use keel::{Envelope, NodeId};

use crate::codec::HandshakeStatus;

/// What the transport hands to the runtime.
#[derive(Debug)]
pub enum Inbound {
    /// A message from a member of our cluster, addressed to us.
    Message(Envelope),
    /// A message to this peer was dropped: its queue was full, it has no
    /// address, connecting failed, or a write failed. Reports for one peer
    /// are coalesced while the runtime has not taken the last one, so a burst
    /// of drops yields one report. Pass it to `RawNode::report_unreachable`.
    Unreachable(NodeId),
    /// A whole snapshot arrived. `envelope.message` is
    /// [`keel::Message::Snapshot`]; its data is on disk at `data_path`, a
    /// file in `snapshot_dir` that the runtime now owns (and removes once
    /// installed).
    SnapshotReceived {
        /// The snapshot message.
        envelope: Envelope,
        /// The complete, fsynced data.
        data_path: PathBuf,
    },
    /// A peer this node dialled refused its handshake (and
    /// [`Inbound::Unreachable`] follows, as for any failed dial). Sent once
    /// per refused dial, so at most once per reconnect backoff per peer;
    /// dropped when the inbound queue is full (the next dial reports it
    /// again).
    ///
    /// [`HandshakeStatus::NotMember`] from most of the voters this node
    /// knows is how a node that was removed while it could not hear of it
    /// (down, or cut off when its removal was committed) learns that it
    /// was: the members no longer admit it.
    ///
    /// ```
    /// use keel::NodeId;
    /// use keel_net::codec::HandshakeStatus;
    /// use keel_net::Inbound;
    ///
    /// let event = Inbound::Refused { peer: NodeId::new(2), status: HandshakeStatus::NotMember };
    /// assert!(matches!(event, Inbound::Refused { status: HandshakeStatus::NotMember, .. }));
    /// ```
    Refused {
        /// The peer that refused.
        peer: NodeId,
        /// Why: another cluster, another node, not a member, ...
        status: HandshakeStatus,
    },
    /// The outcome of a
    /// [`Network::send_snapshot`](crate::Network::send_snapshot):
    /// `Delivered` once the receiver holds the whole data on disk, `Failed`
    /// otherwise. Pass it to `RawNode::report_snapshot`.
    SnapshotSent {
        /// The snapshot's recipient.
        to: NodeId,
        /// Delivered or failed.
        outcome: keel::SnapshotOutcome,
    },
}
