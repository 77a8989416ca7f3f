//! The values Raft talks about: node ids, terms, indexes, entries and the
//! small records that are persisted next to the log.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! number_newtype {
    ($(#[$meta:meta])* $name:ident, $display_prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// The zero value.
            pub const ZERO: $name = $name(0);

            /// Wraps a raw number.
            #[inline]
            pub const fn new(value: u64) -> Self {
                $name(value)
            }

            /// The raw number.
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            #[inline]
            fn from(value: u64) -> Self {
                $name(value)
            }
        }

        impl From<$name> for u64 {
            #[inline]
            fn from(value: $name) -> u64 {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, concat!($display_prefix, "{}"), self.0)
            }
        }
    };
}

number_newtype!(
    /// The identity of a node in a cluster. Valid ids are `>= 1`; "no node"
    /// is written `Option<NodeId>::None`, never a zero id.
    ///
    /// ```
    /// use keel::NodeId;
    /// let id = NodeId::new(3);
    /// assert_eq!(id.get(), 3);
    /// assert_eq!(id.to_string(), "n3");
    /// ```
    NodeId,
    "n"
);

number_newtype!(
    /// A Raft term (§5.1): a logical clock that only moves forward.
    ///
    /// ```
    /// use keel::Term;
    /// assert!(Term::new(2) > Term::new(1));
    /// assert_eq!(Term::new(2).next(), Term::new(3));
    /// ```
    Term,
    ""
);

number_newtype!(
    /// The position of an entry in the log. The first real entry has index 1;
    /// index 0 is the empty prefix before it.
    ///
    /// ```
    /// use keel::Index;
    /// assert_eq!(Index::new(7).next(), Index::new(8));
    /// assert_eq!(Index::new(7).prev(), Index::new(6));
    /// ```
    Index,
    ""
);

impl Term {
    /// The highest term keel accepts from a peer or its storage, or moves
    /// to. Terms grow by one per election, so a real cluster never comes
    /// near it; a message with a term above it is malformed (refused, not
    /// obeyed), so one forged frame cannot push a cluster to a term it can
    /// never leave, and every `next()` stays far from overflow.
    ///
    /// ```
    /// use keel::Term;
    /// assert!(Term::LIMIT.next() > Term::LIMIT);
    /// ```
    pub const LIMIT: Term = Term(1 << 62);

    /// How far ahead of a node's own term a peer's message may be: further
    /// is malformed. Terms grow by one per election, so no real cluster
    /// jumps this far (2^48 elections), while a single forged frame can no
    /// longer carry a cluster anywhere near [`Term::LIMIT`], where it could
    /// not elect any more.
    ///
    /// ```
    /// use keel::Term;
    /// assert!(Term::JUMP_MAX < Term::LIMIT.get());
    /// ```
    pub const JUMP_MAX: u64 = 1 << 48;

    /// The term after this one.
    #[inline]
    pub const fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl Index {
    /// The highest index keel accepts from a peer or its storage. Like
    /// [`Term::LIMIT`]: far beyond any real log, so that index arithmetic
    /// on accepted values cannot overflow.
    ///
    /// ```
    /// use keel::Index;
    /// assert!(Index::LIMIT.plus(1) > Index::LIMIT);
    /// ```
    pub const LIMIT: Index = Index(1 << 62);

    /// The index after this one.
    #[inline]
    pub const fn next(self) -> Index {
        Index(self.0 + 1)
    }

    /// The index before this one; `Index::ZERO` stays at zero.
    #[inline]
    pub const fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }

    /// This index moved forward by `count`.
    #[inline]
    pub const fn plus(self, count: u64) -> Index {
        Index(self.0 + count)
    }

    /// The number of indexes from `earlier` up to this one (zero if `earlier`
    /// is later).
    #[inline]
    pub const fn distance_from(self, earlier: Index) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The identity of one log entry: its term and index. Two logs that hold an
/// entry with the same `LogId` are identical up to it (Log Matching, §5.3).
///
/// ```
/// use keel::{Index, LogId, Term};
/// let a = LogId::new(Term::new(2), Index::new(5));
/// let b = LogId::new(Term::new(3), Index::new(4));
/// // Logs are compared by last term first, then by index (§5.4.1).
/// assert!(b > a);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId {
    /// The term in which the entry was created by a leader.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: Term, index: Index) -> Self {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.term.0, self.index.0)
    }
}

/// What an entry's payload means to the core.
///
/// ```
/// use keel::EntryKind;
/// assert_eq!(EntryKind::from_code(EntryKind::ConfChange.code()), Some(EntryKind::ConfChange));
/// assert!(EntryKind::ConfChange.is_conf_change());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data, opaque to the core. A leader's empty entry at the
    /// start of its term is a normal entry with no data.
    Normal,
    /// A membership change: an encoded [`ConfChange`](crate::ConfChange),
    /// simple or joint (one encoding carries both).
    ConfChange,
}

impl EntryKind {
    /// A stable one-byte code, for codecs and disk formats: 0 for
    /// `Normal`, 1 for `ConfChange`.
    ///
    /// ```
    /// use keel::EntryKind;
    /// assert_eq!(EntryKind::ConfChange.code(), 1);
    /// ```
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    /// The kind with this code, or `None` for an unknown code.
    ///
    /// Code 2 also decodes as `ConfChange`: earlier versions wrote joint
    /// changes under their own kind (etcd's `ConfChangeV2`), so logs on
    /// disk and peers not yet upgraded still carry it. It is never written
    /// any more, and a `ConfChange`'s own encoding says whether it is
    /// joint, so nothing is lost by merging the two.
    ///
    /// ```
    /// use keel::EntryKind;
    /// assert_eq!(EntryKind::from_code(1), Some(EntryKind::ConfChange));
    /// assert_eq!(EntryKind::from_code(2), Some(EntryKind::ConfChange));
    /// assert_eq!(EntryKind::from_code(3), None);
    /// ```
    pub const fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            // 2: the retired joint-change kind; see above.
            1 | 2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }

    /// Whether the entry changes membership.
    ///
    /// ```
    /// use keel::EntryKind;
    /// assert!(!EntryKind::Normal.is_conf_change());
    /// ```
    pub const fn is_conf_change(self) -> bool {
        matches!(self, EntryKind::ConfChange)
    }
}

/// One entry of the replicated log.
///
/// The payload is a [`Bytes`]: the same buffer travels from the network read
/// to the disk write and into every follower's message without a copy.
///
/// ```
/// use bytes::Bytes;
/// use keel::{Entry, EntryKind, Index, Term};
/// let entry = Entry::new(Term::new(1), Index::new(1), EntryKind::Normal, Bytes::from_static(b"x"));
/// assert_eq!(entry.log_id().index, Index::new(1));
/// assert_eq!(entry.payload_bytes(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// How the core interprets `data`.
    pub kind: EntryKind,
    /// The payload. It may share its buffer with neighbouring entries (a
    /// leader packs small proposals together; entries received over the
    /// network share their receive buffer): a state machine that keeps
    /// part of it for long should copy that part.
    pub data: Bytes,
}

impl Entry {
    /// A fixed per-entry overhead, in bytes, counted on top of the payload
    /// when limiting message sizes (term, index and kind on the wire).
    pub const OVERHEAD_BYTES: u64 = 17;

    /// Builds an entry.
    pub fn new(term: Term, index: Index, kind: EntryKind, data: Bytes) -> Self {
        Entry {
            term,
            index,
            kind,
            data,
        }
    }

    /// The entry's identity.
    #[inline]
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// The payload length in bytes.
    #[inline]
    pub fn payload_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// The size this entry counts for in message-size limits: payload plus
    /// [`Entry::OVERHEAD_BYTES`].
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.payload_bytes() + Self::OVERHEAD_BYTES
    }

    /// How many of `entries`, from the first, fit in `max_bytes` (counted
    /// with [`Entry::size_bytes`]) — at least one when there are any, so a
    /// single entry larger than the limit still makes progress. What
    /// [`Storage::entries`](crate::Storage::entries) implementations return.
    ///
    /// ```
    /// use keel::Entry;
    /// let entries = keel::testing::entries(1, 1, 4);
    /// let one = entries[0].size_bytes();
    /// assert_eq!(Entry::count_within_bytes(&entries, 2 * one), 2);
    /// assert_eq!(Entry::count_within_bytes(&entries, 0), 1);
    /// assert_eq!(Entry::count_within_bytes(&[], 0), 0);
    /// ```
    pub fn count_within_bytes(entries: &[Entry], max_bytes: u64) -> usize {
        let mut total_bytes = 0u64;
        let count = entries
            .iter()
            .take_while(|entry| {
                total_bytes += entry.size_bytes();
                total_bytes <= max_bytes
            })
            .count();
        count.max(entries.len().min(1))
    }
}

/// The state a node must persist before it answers any message (Figure 2,
/// "Persistent state on all servers"), plus the commit index.
///
/// ```
/// use keel::{HardState, Index, NodeId, Term};
/// let state = HardState { term: Term::new(2), vote: Some(NodeId::new(1)), commit: Index::new(10) };
/// assert!(!state.is_empty());
/// assert!(HardState::default().is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed. Persisting it is an
    /// optimisation (it lets a restarted node apply sooner); losing it is safe.
    pub commit: Index,
}

impl HardState {
    /// Whether this is the state of a node that has never done anything.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// A cluster membership: who votes and who only listens.
///
/// During a joint change (§6 of the Raft paper) a decision needs a majority
/// of `voters` *and* a majority of `voters_outgoing`.
///
/// Invariants (checked by [`ConfState::validate`]): no node is both a voter
/// and a learner; `learners_next` only holds outgoing voters that will become
/// learners when the joint configuration is left; `auto_leave` only in a joint
/// configuration.
///
/// ```
/// use keel::{ConfState, NodeId};
/// let conf = ConfState::with_voters([1, 2, 3].map(NodeId::new));
/// assert!(conf.is_voter(NodeId::new(2)));
/// assert!(!conf.is_joint());
/// conf.validate().unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub(crate) voters: BTreeSet<NodeId>,
    /// Learners: receive the log, never vote, never count for commit.
    pub(crate) learners: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub(crate) voters_outgoing: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint state is left.
    pub(crate) learners_next: BTreeSet<NodeId>,
    /// Whether the leader leaves the joint state on its own once it applies.
    pub(crate) auto_leave: bool,
}

impl ConfState {
    /// A simple configuration of voters only.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            ..ConfState::default()
        }
    }

    /// A configuration of `voters` and `learners`, checked.
    ///
    /// # Errors
    /// A node that is both, or node id 0.
    ///
    /// ```
    /// use keel::{ConfState, NodeId};
    /// let conf = ConfState::new([1, 2, 3].map(NodeId::new), [NodeId::new(4)])?;
    /// assert!(conf.learners().contains(&NodeId::new(4)));
    /// assert!(ConfState::new([NodeId::new(1)], [NodeId::new(1)]).is_err());
    /// # Ok::<(), keel::ConfStateError>(())
    /// ```
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, ConfStateError> {
        Self::joint(voters, learners, [], [], false)
    }

    /// A configuration in any shape, joint included, checked: what a
    /// decoder of a stored or received membership uses.
    ///
    /// # Errors
    /// Any broken invariant listed on the type.
    ///
    /// ```
    /// use keel::{ConfState, NodeId};
    /// let ids = |raw: &[u64]| raw.iter().copied().map(NodeId::new).collect::<Vec<_>>();
    /// let conf = ConfState::joint(ids(&[1, 2, 4]), [], ids(&[1, 2, 3]), ids(&[3]), true)?;
    /// assert!(conf.is_joint() && conf.auto_leave());
    /// assert!(ConfState::joint(ids(&[1]), [], [], [], true).is_err(), "auto-leave outside a joint configuration");
    /// # Ok::<(), keel::ConfStateError>(())
    /// ```
    pub fn joint(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        voters_outgoing: impl IntoIterator<Item = NodeId>,
        learners_next: impl IntoIterator<Item = NodeId>,
        auto_leave: bool,
    ) -> Result<Self, ConfStateError> {
        let conf = ConfState {
            voters: voters.into_iter().collect(),
            learners: learners.into_iter().collect(),
            voters_outgoing: voters_outgoing.into_iter().collect(),
            learners_next: learners_next.into_iter().collect(),
            auto_leave,
        };
        conf.validate()?;
        Ok(conf)
    }

    /// Voters of the incoming (or only) configuration.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// Learners: receive the log, never vote, never count for commit.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub fn voters_outgoing(&self) -> &BTreeSet<NodeId> {
        &self.voters_outgoing
    }

    /// Outgoing voters that become learners when the joint state is left.
    pub fn learners_next(&self) -> &BTreeSet<NodeId> {
        &self.learners_next
    }

    /// Whether the leader leaves the joint state on its own once it applies.
    pub fn auto_leave(&self) -> bool {
        self.auto_leave
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    /// Every member, each once, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.voters_outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all.extend(self.learners_next.iter().copied());
        all
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<(), ConfStateError> {
        if let Some(id) = self.voters.intersection(&self.learners).next() {
            return Err(ConfStateError::VoterIsLearner(*id));
        }
        if let Some(id) = self.voters_outgoing.intersection(&self.learners).next() {
            return Err(ConfStateError::VoterIsLearner(*id));
        }
        if let Some(id) = self
            .learners_next
            .iter()
            .find(|id| !self.voters_outgoing.contains(id))
        {
            return Err(ConfStateError::LearnerNextNotOutgoing(*id));
        }
        if let Some(id) = self.learners_next.intersection(&self.voters).next() {
            return Err(ConfStateError::VoterIsLearner(*id));
        }
        if self.auto_leave && !self.is_joint() {
            return Err(ConfStateError::AutoLeaveWithoutJoint);
        }
        if [
            &self.voters,
            &self.learners,
            &self.voters_outgoing,
            &self.learners_next,
        ]
        .iter()
        .any(|set| set.contains(&NodeId::ZERO))
        {
            return Err(ConfStateError::ZeroNodeId);
        }
        Ok(())
    }
}

/// Why a [`ConfState`] is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfStateError {
    /// A node appears as voter and learner at once.
    #[error("node {0} is both a voter and a learner")]
    VoterIsLearner(NodeId),
    /// `learners_next` names a node that is not an outgoing voter.
    #[error("node {0} is in learners_next but not an outgoing voter")]
    LearnerNextNotOutgoing(NodeId),
    /// `auto_leave` is set outside a joint configuration.
    #[error("auto_leave is set but the configuration is not joint")]
    AutoLeaveWithoutJoint,
    /// Node id 0 is reserved for "no node".
    #[error("node id 0 is not a valid member")]
    ZeroNodeId,
}

/// What a snapshot covers: everything up to and including `last`, and the
/// membership in force at that point.
///
/// ```
/// use keel::{ConfState, Index, LogId, NodeId, SnapshotMetadata, Term};
/// let meta = SnapshotMetadata {
///     last: LogId::new(Term::new(3), Index::new(100)),
///     conf_state: ConfState::with_voters([NodeId::new(1)]),
/// };
/// assert_eq!(meta.last.index, Index::new(100));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMetadata {
    /// The last entry the snapshot includes.
    pub last: LogId,
    /// The membership as of `last`.
    pub conf_state: ConfState,
}

impl SnapshotMetadata {
    /// The snapshot every founding member of a new cluster starts from: the
    /// initial membership at index 1, term 1, with an empty state. Nodes
    /// added later start empty; the leader sends them this snapshot (or a
    /// newer one), which is how they learn the membership that was never
    /// written to the log.
    ///
    /// ```
    /// use keel::{ConfState, Index, NodeId, SnapshotMetadata};
    /// let founders = SnapshotMetadata::bootstrap(ConfState::with_voters([1, 2, 3].map(NodeId::new)));
    /// assert_eq!(founders.last.index, Index::new(1));
    /// ```
    pub fn bootstrap(conf_state: ConfState) -> Self {
        SnapshotMetadata {
            last: LogId::new(Term::new(1), Index::new(1)),
            conf_state,
        }
    }

    /// Whether this is the metadata of "no snapshot" (index 0).
    pub fn is_empty(&self) -> bool {
        self.last.index == Index::ZERO
    }
}
