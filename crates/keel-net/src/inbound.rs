//! What the transport hands to the runtime.

use std::path::PathBuf;

use keel::{Envelope, NodeId};

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
