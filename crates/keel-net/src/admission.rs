//! Who may hold an inbound connection, and how many: the membership and
//! the two connection budgets.
//!
//! - **Unauthenticated**: a connection that has not completed its
//!   handshake holds a slot of its own budget,
//!   `unauthenticated_connections_max`, for at most `handshake_timeout_ms`,
//!   with a read buffer the size of a handshake frame. When the budget is
//!   full, the oldest such connection is closed to make room: a flood of
//!   silent strangers then delays a member's handshake (one round trip on
//!   a LAN) only if it opens a budget's worth of connections within that
//!   round trip, instead of locking members out for a handshake timeout.
//! - **Members**: a connection whose handshake names a member takes that
//!   member's slot for its connection kind (messages or snapshot); a newer
//!   connection replaces an older one of the same member and kind (a
//!   restarted peer's fresh connection replaces its dead one). So members
//!   need no shared cap, never compete with strangers, and hold at most two
//!   connections each.
//!
//! Everything here is plain state: the caller closes the connections it is
//! handed back (`H` is how it closes one: a task's abort handle).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use keel::NodeId;

use crate::codec::ConnectionKind;

/// An inbound connection being served.
#[derive(Debug)]
pub(crate) struct Connection<H> {
    /// How to close it.
    pub(crate) handle: H,
    /// Where it comes from (for the log).
    pub(crate) remote: SocketAddr,
}

/// Why a handshaked connection did not get a member's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PromoteError {
    /// The dialler is not a member.
    NotMember,
    /// The connection was already closed to make room (it is going away).
    Evicted,
}

/// The slot of one member's connection of one kind.
type Slot = (NodeId, ConnectionKind);

/// The membership and the connections held, under one lock so that a
/// member removed while its handshake is in flight cannot slip in.
pub(crate) struct Admission<H> {
    members: BTreeSet<NodeId>,
    next_sequence: u64,
    /// Unauthenticated connections by sequence: the first is the oldest.
    handshaking: BTreeMap<u64, Connection<H>>,
    /// Member connections, with the sequence of the connection in the slot.
    live: BTreeMap<Slot, (u64, Connection<H>)>,
}

impl<H> Admission<H> {
    pub(crate) fn new() -> Self {
        Admission {
            members: BTreeSet::new(),
            next_sequence: 0,
            handshaking: BTreeMap::new(),
            live: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.members.contains(&id)
    }

    pub(crate) fn add_member(&mut self, id: NodeId) {
        self.members.insert(id);
    }

    /// Removes `id` from the membership; returns its connections, to close.
    pub(crate) fn remove_member(&mut self, id: NodeId) -> Vec<Connection<H>> {
        self.members.remove(&id);
        let slots: Vec<Slot> = self
            .live
            .keys()
            .filter(|(member, _)| *member == id)
            .copied()
            .collect();
        slots
            .into_iter()
            .filter_map(|slot| self.live.remove(&slot).map(|(_, connection)| connection))
            .collect()
    }

    /// Replaces the membership; returns the connections of former members,
    /// to close.
    pub(crate) fn set_members(&mut self, members: BTreeSet<NodeId>) -> Vec<Connection<H>> {
        self.members = members;
        let gone: Vec<Slot> = self
            .live
            .keys()
            .filter(|(member, _)| !self.members.contains(member))
            .copied()
            .collect();
        gone.into_iter()
            .filter_map(|slot| self.live.remove(&slot).map(|(_, connection)| connection))
            .collect()
    }

    /// Registers a new unauthenticated connection: `serve` starts serving it
    /// under the sequence it is given and returns its handle. If
    /// `unauthenticated_max` were already held, returns the oldest, which
    /// the caller closes.
    pub(crate) fn start_handshake(
        &mut self,
        remote: SocketAddr,
        unauthenticated_max: usize,
        serve: impl FnOnce(u64) -> H,
    ) -> Option<Connection<H>> {
        debug_assert!(unauthenticated_max >= 1);
        let evicted = if self.handshaking.len() >= unauthenticated_max {
            self.handshaking.pop_first().map(|(_, connection)| connection)
        } else {
            None
        };
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let handle = serve(sequence);
        self.handshaking.insert(sequence, Connection { handle, remote });
        debug_assert!(self.handshaking.len() <= unauthenticated_max);
        evicted
    }

    /// Moves connection `sequence`, whose handshake names member `from`,
    /// into `from`'s slot for `kind`. Returns the connection it replaces,
    /// which the caller closes.
    pub(crate) fn promote(
        &mut self,
        sequence: u64,
        from: NodeId,
        kind: ConnectionKind,
    ) -> Result<Option<Connection<H>>, PromoteError> {
        // A node that knows no member yet is waiting to join: it takes the
        // first members that reach it (the cluster id still has to match),
        // and is strict from the moment its runtime names the members.
        if !self.members.is_empty() && !self.members.contains(&from) {
            return Err(PromoteError::NotMember);
        }
        let connection = self.handshaking.remove(&sequence).ok_or(PromoteError::Evicted)?;
        let replaced = self.live.insert((from, kind), (sequence, connection));
        Ok(replaced.map(|(_, connection)| connection))
    }

    /// Forgets connection `sequence` once its task ends: from the
    /// unauthenticated budget, or from `slot` if it still holds it (a newer
    /// connection may have taken it).
    pub(crate) fn finish(&mut self, sequence: u64, slot: Option<(NodeId, ConnectionKind)>) {
        match slot {
            None => {
                self.handshaking.remove(&sequence);
            }
            Some(slot) => {
                if self.live.get(&slot).is_some_and(|(held, _)| *held == sequence) {
                    self.live.remove(&slot);
                }
            }
        }
    }

    /// Connections held now: (unauthenticated, members').
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.handshaking.len() as u64, self.live.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn member(id: u64) -> NodeId {
        NodeId::new(id)
    }

    #[test]
    fn a_full_unauthenticated_budget_closes_its_oldest() {
        // Goal: the budget never exceeds its cap; the newest connection is
        // always let in, the oldest closed for it.
        let mut admission = Admission::new();
        for port in 0..3 {
            let evicted = admission.start_handshake(remote(port), 3, |sequence| sequence);
            assert!(evicted.is_none());
        }
        let evicted = admission.start_handshake(remote(3), 3, |sequence| sequence);
        assert_eq!(evicted.map(|connection| connection.handle), Some(0));
        assert_eq!(admission.counts(), (3, 0));
    }

    #[test]
    fn a_node_that_knows_no_member_takes_any_until_members_are_named() {
        let mut admission = Admission::new();
        admission.start_handshake(remote(1), 8, |sequence| sequence);
        admission.start_handshake(remote(2), 8, |sequence| sequence);
        assert!(matches!(
            admission.promote(0, member(7), ConnectionKind::Messages),
            Ok(None)
        ));
        admission.add_member(member(2));
        assert_eq!(
            admission.promote(1, member(7), ConnectionKind::Messages).err(),
            Some(PromoteError::NotMember)
        );
    }

    #[test]
    fn only_members_are_promoted_and_the_newest_takes_the_slot() {
        let mut admission = Admission::new();
        admission.add_member(member(2));
        admission.start_handshake(remote(1), 8, |sequence| sequence);
        admission.start_handshake(remote(2), 8, |sequence| sequence);
        admission.start_handshake(remote(3), 8, |sequence| sequence);
        assert_eq!(
            admission.promote(0, member(99), ConnectionKind::Messages).err(),
            Some(PromoteError::NotMember)
        );
        let first = admission.promote(1, member(2), ConnectionKind::Messages);
        assert!(matches!(first, Ok(None)));
        let second = admission.promote(2, member(2), ConnectionKind::Messages);
        assert_eq!(second.ok().flatten().map(|connection| connection.handle), Some(1));
        // The replaced connection's end does not free the newer one's slot.
        admission.finish(1, Some((member(2), ConnectionKind::Messages)));
        assert_eq!(admission.counts(), (1, 1));
        admission.finish(0, None);
        assert_eq!(admission.counts(), (0, 1));
    }

    #[test]
    fn an_evicted_connection_cannot_be_promoted() {
        let mut admission = Admission::new();
        admission.add_member(member(2));
        admission.start_handshake(remote(1), 1, |sequence| sequence);
        admission.start_handshake(remote(2), 1, |sequence| sequence);
        assert_eq!(
            admission.promote(0, member(2), ConnectionKind::Messages).err(),
            Some(PromoteError::Evicted)
        );
    }

    #[test]
    fn removing_members_hands_back_their_connections() {
        let mut admission = Admission::new();
        for id in [2, 3] {
            admission.add_member(member(id));
        }
        for (sequence, (id, kind)) in [
            (2, ConnectionKind::Messages),
            (2, ConnectionKind::Snapshot),
            (3, ConnectionKind::Messages),
        ]
        .into_iter()
        .enumerate()
        {
            admission.start_handshake(remote(sequence as u16), 8, |sequence| sequence);
            assert!(admission.promote(sequence as u64, member(id), kind).is_ok());
        }
        let closed = admission.remove_member(member(2));
        assert_eq!(closed.len(), 2);
        assert!(!admission.is_member(member(2)));
        let closed = admission.set_members(BTreeSet::from([member(4)]));
        assert_eq!(
            closed
                .iter()
                .map(|connection| connection.handle)
                .collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(admission.counts(), (0, 0));
        assert!(admission.is_member(member(4)));
    }
}
