//! Membership changes as pure functions: from a configuration and a change,
//! the new configuration or a precise error (§6 of the Raft paper; §4 of
//! Ongaro's thesis). No state, no IO; property-tested against a naive
//! reference.
//!
//! A change with one voter added or removed and no explicit transition is a
//! *simple* change, safe on its own (thesis §4.1). Anything else goes
//! through a *joint* configuration (§6): the new voters are added as the
//! incoming half while the old ones stay as the outgoing half, and every
//! decision needs a majority of both, until a second change leaves the joint
//! state — automatically when `transition` allows.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{ConfState, EntryKind, NodeId};

/// What happens to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Make the node a voter (adding it, or promoting a learner).
    AddVoter,
    /// Make the node a learner (adding it, or demoting a voter).
    AddLearner,
    /// Remove the node.
    RemoveNode,
}

/// One node's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    /// What happens.
    pub kind: ConfChangeKind,
    /// To whom.
    pub node_id: NodeId,
}

/// How a joint configuration is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeTransition {
    /// A simple change when possible; otherwise joint, left automatically.
    Auto,
    /// Always joint, left automatically once applied.
    JointImplicit,
    /// Always joint, left only by an explicit [`ConfChange::leave_joint`].
    JointExplicit,
}

/// A membership change, proposed with
/// [`RawNode::propose_conf_change`](crate::RawNode::propose_conf_change) and
/// applied with [`RawNode::apply_conf_change`](crate::RawNode::apply_conf_change).
///
/// ```
/// use keel::confchange::{apply, ConfChange};
/// use keel::{ConfState, NodeId};
/// let three = ConfState::with_voters([1, 2, 3].map(NodeId::new));
/// let four = apply(&three, &ConfChange::add_voter(NodeId::new(4))).unwrap();
/// assert!(four.is_voter(NodeId::new(4)));
/// // Two voters at once must go through a joint configuration.
/// let change = ConfChange::add_voter(NodeId::new(5)).with(keel::confchange::ConfChangeSingle {
///     kind: keel::confchange::ConfChangeKind::RemoveNode,
///     node_id: NodeId::new(1),
/// });
/// let joint = apply(&four, &change).unwrap();
/// assert!(joint.is_joint() && joint.auto_leave());
/// let left = apply(&joint, &ConfChange::leave_joint()).unwrap();
/// assert!(!left.is_joint() && !left.is_voter(NodeId::new(1)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// How to move through a joint configuration.
    pub transition: ConfChangeTransition,
    /// The node changes; empty means "leave the joint configuration".
    pub changes: Vec<ConfChangeSingle>,
    /// Opaque data for the application (for example the new node's address).
    pub context: Bytes,
}

impl ConfChange {
    fn single(kind: ConfChangeKind, node_id: NodeId) -> Self {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle { kind, node_id }],
            context: Bytes::new(),
        }
    }

    /// Adds (or promotes) a voter.
    pub fn add_voter(node_id: NodeId) -> Self {
        Self::single(ConfChangeKind::AddVoter, node_id)
    }

    /// Adds a learner (or demotes a voter).
    pub fn add_learner(node_id: NodeId) -> Self {
        Self::single(ConfChangeKind::AddLearner, node_id)
    }

    /// Removes a node.
    pub fn remove_node(node_id: NodeId) -> Self {
        Self::single(ConfChangeKind::RemoveNode, node_id)
    }

    /// Leaves a joint configuration.
    pub fn leave_joint() -> Self {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: Vec::new(),
            context: Bytes::new(),
        }
    }

    /// This change plus one more node change.
    pub fn with(mut self, change: ConfChangeSingle) -> Self {
        self.changes.push(change);
        self
    }

    /// This change with `context` attached.
    pub fn with_context(mut self, context: Bytes) -> Self {
        self.context = context;
        self
    }

    /// Whether this change leaves a joint configuration.
    pub fn leaves_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// `Some(auto_leave)` if this change enters a joint configuration.
    pub fn enters_joint(&self) -> Option<bool> {
        let joint = !self.changes.is_empty()
            && (self.transition != ConfChangeTransition::Auto || self.changes.len() > 1);
        joint.then_some(self.transition != ConfChangeTransition::JointExplicit)
    }

    /// The entry kind that carries this change in the log: always
    /// [`EntryKind::ConfChange`], simple or joint (the encoding says which).
    pub fn entry_kind(&self) -> EntryKind {
        EntryKind::ConfChange
    }

    /// The log encoding: version, transition, changes, context.
    pub fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::with_capacity(10 + self.changes.len() * 9 + self.context.len());
        buffer.put_u8(ENCODING_VERSION);
        buffer.put_u8(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointImplicit => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        buffer.put_u32_le(self.changes.len() as u32);
        for change in &self.changes {
            buffer.put_u8(match change.kind {
                ConfChangeKind::AddVoter => 0,
                ConfChangeKind::AddLearner => 1,
                ConfChangeKind::RemoveNode => 2,
            });
            buffer.put_u64_le(change.node_id.get());
        }
        buffer.put_u32_le(self.context.len() as u32);
        buffer.put_slice(&self.context);
        buffer.freeze()
    }

    /// Decodes [`ConfChange::encode`]'s output.
    ///
    /// # Errors
    /// [`ConfChangeDecodeError`] for anything else; never panics.
    pub fn decode(data: &Bytes) -> Result<Self, ConfChangeDecodeError> {
        let mut reader = Reader { data, position: 0 };
        let version = reader.u8()?;
        if version != ENCODING_VERSION {
            return Err(ConfChangeDecodeError::UnknownVersion(version));
        }
        let transition = match reader.u8()? {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointImplicit,
            2 => ConfChangeTransition::JointExplicit,
            other => return Err(ConfChangeDecodeError::UnknownCode(other)),
        };
        let count = reader.u32()? as usize;
        // Each change takes 9 bytes: refuse counts the data cannot hold
        // before allocating for them.
        if count > reader.remaining() / 9 {
            return Err(ConfChangeDecodeError::Truncated);
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match reader.u8()? {
                0 => ConfChangeKind::AddVoter,
                1 => ConfChangeKind::AddLearner,
                2 => ConfChangeKind::RemoveNode,
                other => return Err(ConfChangeDecodeError::UnknownCode(other)),
            };
            changes.push(ConfChangeSingle {
                kind,
                node_id: NodeId::new(reader.u64()?),
            });
        }
        let context_length = reader.u32()? as usize;
        let context = reader.bytes(context_length)?;
        if reader.remaining() != 0 {
            return Err(ConfChangeDecodeError::TrailingBytes);
        }
        Ok(ConfChange {
            transition,
            changes,
            context,
        })
    }
}

const ENCODING_VERSION: u8 = 1;

struct Reader<'a> {
    data: &'a Bytes,
    position: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.data.len() - self.position
    }

    fn take(&mut self, count: usize) -> Result<&[u8], ConfChangeDecodeError> {
        if self.remaining() < count {
            return Err(ConfChangeDecodeError::Truncated);
        }
        let slice = &self.data[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, ConfChangeDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ConfChangeDecodeError> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, ConfChangeDecodeError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self, count: usize) -> Result<Bytes, ConfChangeDecodeError> {
        if self.remaining() < count {
            return Err(ConfChangeDecodeError::Truncated);
        }
        let bytes = self.data.slice(self.position..self.position + count);
        self.position += count;
        Ok(bytes)
    }
}

/// Why bytes are not an encoded [`ConfChange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeDecodeError {
    /// The data ends early.
    #[error("conf change data is truncated")]
    Truncated,
    /// An unknown encoding version.
    #[error("unknown conf change encoding version {0}")]
    UnknownVersion(u8),
    /// An unknown kind or transition code.
    #[error("unknown conf change code {0}")]
    UnknownCode(u8),
    /// Bytes after the end.
    #[error("trailing bytes after the conf change")]
    TrailingBytes,
}

/// Why a change cannot be applied to a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Leaving a joint configuration that is not joint.
    #[error("not in a joint configuration")]
    NotJoint,
    /// Entering a joint configuration, or making a simple change, while joint.
    #[error("already in a joint configuration; leave it first")]
    AlreadyJoint,
    /// A simple change may change at most one voter.
    #[error("a simple change may add or remove at most one voter; use a joint change")]
    MoreThanOneVoterChanged,
    /// The change would leave no voter.
    #[error("the change removes every voter")]
    NoVoters,
    /// Node id 0 is not a node.
    #[error("node id 0 is not a valid member")]
    ZeroNodeId,
    /// The same node appears twice in one change.
    #[error("{0} appears more than once in the change")]
    DuplicateNode(NodeId),
}

/// The configuration that results from applying `change` to `conf`.
///
/// # Errors
/// [`ConfChangeError`] when the change is not allowed; `conf` is never
/// modified.
pub fn apply(conf: &ConfState, change: &ConfChange) -> Result<ConfState, ConfChangeError> {
    if change.leaves_joint() {
        return leave_joint(conf);
    }
    let mut seen = std::collections::BTreeSet::new();
    for single in &change.changes {
        if single.node_id == NodeId::ZERO {
            return Err(ConfChangeError::ZeroNodeId);
        }
        if !seen.insert(single.node_id) {
            return Err(ConfChangeError::DuplicateNode(single.node_id));
        }
    }
    if conf.is_joint() {
        return Err(ConfChangeError::AlreadyJoint);
    }
    let mut next = conf.clone();
    match change.enters_joint() {
        Some(auto_leave) => {
            next.voters_outgoing = conf.voters.clone();
            apply_changes(&mut next, &change.changes);
            next.auto_leave = auto_leave;
        }
        None => {
            apply_changes(&mut next, &change.changes);
            if next.voters.symmetric_difference(&conf.voters).count() > 1 {
                return Err(ConfChangeError::MoreThanOneVoterChanged);
            }
        }
    }
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVoters);
    }
    debug_assert!(next.validate().is_ok(), "confchange produced {next:?}");
    Ok(next)
}

fn apply_changes(conf: &mut ConfState, changes: &[ConfChangeSingle]) {
    for change in changes {
        let id = change.node_id;
        match change.kind {
            ConfChangeKind::AddVoter => {
                conf.learners.remove(&id);
                conf.learners_next.remove(&id);
                conf.voters.insert(id);
            }
            ConfChangeKind::AddLearner => {
                conf.voters.remove(&id);
                conf.learners.remove(&id);
                conf.learners_next.remove(&id);
                // Still a voter of the outgoing half: it becomes a learner
                // only when the joint state is left.
                if conf.voters_outgoing.contains(&id) {
                    conf.learners_next.insert(id);
                } else {
                    conf.learners.insert(id);
                }
            }
            ConfChangeKind::RemoveNode => {
                conf.voters.remove(&id);
                conf.learners.remove(&id);
                conf.learners_next.remove(&id);
            }
        }
    }
}

fn leave_joint(conf: &ConfState) -> Result<ConfState, ConfChangeError> {
    if !conf.is_joint() {
        return Err(ConfChangeError::NotJoint);
    }
    let mut next = conf.clone();
    let learners_next = std::mem::take(&mut next.learners_next);
    next.learners.extend(learners_next);
    next.voters_outgoing.clear();
    next.auto_leave = false;
    Ok(next)
}
