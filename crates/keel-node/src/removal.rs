//! How a node learns that it is no longer a member of its cluster.
//!
//! A removed node that does not know it keeps running as the voter it
//! believes it is: it campaigns, its peers refuse it, and it answers
//! every client with "no leader" forever. It learns of its removal in one
//! of two ways:
//!
//! - **It applies its own removal.** The usual case: the leader sends the
//!   committed membership change to the node being removed like any other
//!   entry, so a node that is up when it is removed applies it.
//! - **The members refuse it.** A node that was down or cut off when its
//!   removal was committed never receives it: the members no longer send
//!   to it. When it campaigns, the members refuse its connections as a
//!   non-member (keel-net's `NotMember` handshake refusal). A refusal on
//!   its own proves little (a member that has not yet applied this node's
//!   addition refuses it too), so the node concludes it was removed only
//!   when most of the voters it knows refuse it, and no member has sent it
//!   anything for a while (`quiet`): a node just added hears from its
//!   leader, and lagging members catch up within an election or two.
//!
//! The finding is recorded in `<data dir>/REMOVED` (see
//! [`crate::data_dir`]), so a restarted removed node knows at once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use keel::{ConfState, Index, NodeId};
use keel_net::codec::HandshakeStatus;
use tokio::time::Instant;

/// How a node learned that it is no longer a member of its cluster (see
/// [`NodeStatus::removed`](crate::NodeStatus::removed)).
///
/// ```
/// use keel::Index;
/// use keel_node::Removal;
/// let removal = Removal::Applied { index: Index::new(42) };
/// assert_eq!(removal.to_string(), "it applied its own removal (log index 42)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It applied the committed membership change that removed it.
    Applied {
        /// The log index of that change.
        index: Index,
    },
    /// Most voters of the configuration it last knew refused its
    /// connections as a non-member, and no member had sent it anything for
    /// a while: it was removed while it could not hear of it.
    RefusedByMembers {
        /// The voters that refused it.
        voters: Vec<NodeId>,
    },
    /// Its data directory records that it was removed, in an earlier run.
    Recorded {
        /// How it learned it then, as recorded.
        reason: String,
    },
}

impl fmt::Display for Removal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Applied { index } => write!(formatter, "it applied its own removal (log index {index})"),
            Removal::RefusedByMembers { voters } => {
                let voters: Vec<String> = voters.iter().map(ToString::to_string).collect();
                write!(
                    formatter,
                    "the voters {} refuse it as a non-member",
                    voters.join(", ")
                )
            }
            Removal::Recorded { reason } => write!(formatter, "recorded in an earlier run: {reason}"),
        }
    }
}

/// The removal a membership change applied at `index` makes of `local`:
/// `Some` if `local` was a member before (`before`) and is not after
/// (`after`). A node that was never a member (one waiting to be added)
/// is not removed by a change that leaves it out.
pub(crate) fn removed_by_change(
    local: NodeId,
    before: &ConfState,
    after: &ConfState,
    index: Index,
) -> Option<Removal> {
    (before.contains(local) && !after.contains(local)).then_some(Removal::Applied { index })
}

/// Watches the members' refusals for signs that this node was removed
/// while it could not hear of it.
#[derive(Debug)]
pub(crate) struct RefusalWatch {
    local: NodeId,
    /// How long no member may have sent anything before refusals count.
    quiet: Duration,
    /// Peers that refused this node as a non-member since they last sent
    /// it anything.
    refused_by: BTreeMap<NodeId, Instant>,
    last_heard_from_member: Instant,
}

impl RefusalWatch {
    /// A watch for node `local`, started at `now`: refusals count once no
    /// member has sent anything for `quiet`.
    pub(crate) fn new(local: NodeId, quiet: Duration, now: Instant) -> Self {
        RefusalWatch {
            local,
            quiet,
            refused_by: BTreeMap::new(),
            last_heard_from_member: now,
        }
    }

    /// A message from `from` arrived: it treats this node as a member.
    pub(crate) fn heard_from(&mut self, from: NodeId, now: Instant) {
        self.refused_by.remove(&from);
        self.last_heard_from_member = now;
    }

    /// `peer` refused this node's handshake with `status`.
    pub(crate) fn refused(&mut self, peer: NodeId, status: HandshakeStatus, now: Instant) {
        if status == HandshakeStatus::NotMember {
            self.refused_by.entry(peer).or_insert(now);
        }
    }

    /// Whether the refusals show that this node was removed from `conf`,
    /// the configuration it last knew: it is a voter there, most of each
    /// voter set refused it, and no member has sent it anything for
    /// `quiet`.
    pub(crate) fn removal(&self, conf: &ConfState, now: Instant) -> Option<Removal> {
        if !conf.is_voter(self.local)
            || now.saturating_duration_since(self.last_heard_from_member) < self.quiet
        {
            return None;
        }
        let refused_most = |voters: &std::collections::BTreeSet<NodeId>| {
            voters.is_empty()
                || voters
                    .iter()
                    .filter(|id| self.refused_by.contains_key(id))
                    .count()
                    > voters.len() / 2
        };
        if conf.voters().is_empty() || !refused_most(conf.voters()) || !refused_most(conf.voters_outgoing()) {
            return None;
        }
        let voters = self
            .refused_by
            .keys()
            .filter(|id| conf.voters().contains(id) || conf.voters_outgoing().contains(id))
            .copied()
            .collect();
        Some(Removal::RefusedByMembers { voters })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> ConfState {
        ConfState::with_voters(ids.iter().copied().map(NodeId::new))
    }

    const QUIET: Duration = Duration::from_secs(2);

    #[test]
    fn only_a_member_is_removed_by_a_change_that_leaves_it_out() {
        let three = voters(&[1, 2, 3]);
        let two = voters(&[1, 2]);
        let removed = removed_by_change(NodeId::new(3), &three, &two, Index::new(9));
        assert_eq!(removed, Some(Removal::Applied { index: Index::new(9) }));
        assert_eq!(
            removed_by_change(NodeId::new(2), &three, &two, Index::new(9)),
            None
        );
        // A node waiting to be added sees changes that leave it out.
        assert_eq!(
            removed_by_change(NodeId::new(4), &two, &three, Index::new(9)),
            None
        );
    }

    #[test]
    fn most_voters_refusing_after_a_quiet_spell_means_removed() {
        // Goal: one refusal is not enough; a majority is, once no member
        // has sent anything for the quiet spell; a message from a member
        // withdraws its refusal and restarts the spell.
        let start = Instant::now();
        let conf = voters(&[1, 2, 3]);
        let mut watch = RefusalWatch::new(NodeId::new(3), QUIET, start);
        let later = start + QUIET;
        watch.refused(NodeId::new(1), HandshakeStatus::NotMember, start);
        assert_eq!(watch.removal(&conf, later), None, "one voter of three");
        watch.refused(NodeId::new(2), HandshakeStatus::WrongCluster, start);
        assert_eq!(watch.removal(&conf, later), None, "not a membership refusal");
        watch.refused(NodeId::new(2), HandshakeStatus::NotMember, start);
        assert_eq!(watch.removal(&conf, start + QUIET / 2), None, "too soon");
        assert_eq!(
            watch.removal(&conf, later),
            Some(Removal::RefusedByMembers {
                voters: vec![NodeId::new(1), NodeId::new(2)]
            })
        );
        watch.heard_from(NodeId::new(1), later);
        assert_eq!(watch.removal(&conf, later + QUIET), None, "node 1 sent a message");
    }

    #[test]
    fn a_node_that_is_no_voter_in_its_configuration_is_not_judged() {
        // A node waiting to join knows no configuration with itself in it.
        let start = Instant::now();
        let mut watch = RefusalWatch::new(NodeId::new(4), QUIET, start);
        for peer in 1..=3 {
            watch.refused(NodeId::new(peer), HandshakeStatus::NotMember, start);
        }
        assert_eq!(watch.removal(&voters(&[1, 2, 3]), start + QUIET), None);
        assert_eq!(watch.removal(&ConfState::default(), start + QUIET), None);
    }
}
