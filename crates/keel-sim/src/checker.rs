//! Cluster-wide safety properties (Raft paper Figure 3), checked as the
//! simulation observes each node, plus the [`Property`] names a failure
//! report uses.
//!
//! - **Election safety**: at most one leader per term. Every node that
//!   reports itself leader is recorded by term.
//! - **No double vote**: a node grants at most one (real) vote per term,
//!   across crashes — what the persisted vote guarantees. Recorded: every
//!   granted vote response sent, every vote a node's durable hard state
//!   holds (a candidate's vote for itself included: it never leaves the
//!   node as a message) and every leader's vote for itself in its term (a
//!   sole voter wins without a message at all).
//! - **Log matching**: an entry is identified by its index and term. Each
//!   entry written to any node's disk is recorded with its payload and the
//!   term of the entry before it; any later write of the same index and
//!   term must agree on both, which by induction makes logs that share an
//!   entry identical up to it.
//! - **Committed entries never change** and **state machine safety**: the
//!   first node that knows an index is committed (its commit index covers
//!   it, or it applies it) fixes that index's entry; every other node's
//!   committed or applied entry at that index must be the same.
//! - **Leader completeness**: checked by the simulator against this
//!   checker's committed entries whenever a new leader appears and at the
//!   end (see `Simulation`).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use keel::{ConfState, Entry, EntryKind, Index, LogId, NodeId, SnapshotMetadata, Term};

/// A property the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Property {
    /// Two leaders in one term.
    ElectionSafety,
    /// A node granted its vote to two candidates in one term.
    DoubleVote,
    /// Two logs disagree on an entry with the same index and term, or on
    /// what precedes it.
    LogMatching,
    /// A leader lacks an entry committed before its term.
    LeaderCompleteness,
    /// A leader moved its commit index onto an entry of an earlier term
    /// (only entries of its own term commit by counting, §5.4.2).
    CommitRule,
    /// Two nodes applied different entries at one index.
    StateMachineSafety,
    /// A node's entry at an index it had committed changed.
    CommittedEntryChanged,
    /// A node's term, vote, commit or applied index went backwards within
    /// one incarnation.
    Monotonicity,
    /// A node's own `check_invariants` failed.
    NodeInvariant,
    /// A node went on after its storage failed (or stopped without a
    /// storage failure).
    StopOnStorageFailure,
    /// No leader, or no convergence, within the liveness bound after the
    /// faults stopped.
    Liveness,
    /// The client history is not linearizable.
    Linearizability,
    /// The linearizability search ran out of budget (not a pass).
    LinearizabilityInconclusive,
    /// A node (or the simulator) panicked: a core assertion fired.
    Panic,
    /// Two nodes hold different memberships as of one applied index (after
    /// applying the change there, or in a snapshot ending there).
    ConfigurationAgreement,
    /// A loop of the simulation ran out of its budget: a message storm, a
    /// `Ready` loop that never drains, a disk that never catches up. Reported
    /// with the seed instead of spinning (see `budget`).
    Budget,
    /// A forged message (a term or index beyond keel's limits) was not
    /// refused with a typed error, or changed the node that got it.
    ForgedMessage,
    /// The simulator itself hit an impossible state (a bug in keel-sim, or a
    /// core output that breaks its documented contract).
    Contract,
}

impl Property {
    /// A short kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Property::ElectionSafety => "election-safety",
            Property::DoubleVote => "double-vote",
            Property::LogMatching => "log-matching",
            Property::LeaderCompleteness => "leader-completeness",
            Property::CommitRule => "commit-rule",
            Property::StateMachineSafety => "state-machine-safety",
            Property::CommittedEntryChanged => "committed-entry-changed",
            Property::Monotonicity => "monotonicity",
            Property::NodeInvariant => "node-invariant",
            Property::StopOnStorageFailure => "stop-on-storage-failure",
            Property::Liveness => "liveness",
            Property::Linearizability => "linearizability",
            Property::LinearizabilityInconclusive => "linearizability-inconclusive",
            Property::Panic => "panic",
            Property::ConfigurationAgreement => "configuration-agreement",
            Property::Budget => "budget",
            Property::ForgedMessage => "forged-message",
            Property::Contract => "contract",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A broken property and what broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub property: Property,
    /// A precise description: nodes, terms, indexes, payloads.
    pub detail: String,
}

impl Violation {
    /// A violation of `property`.
    pub fn new(property: Property, detail: impl Into<String>) -> Self {
        Violation {
            property,
            detail: detail.into(),
        }
    }
}

/// An entry's identity beyond its log id: kind and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Content {
    kind: EntryKind,
    data: Bytes,
}

impl Content {
    fn of(entry: &Entry) -> Self {
        Content {
            kind: entry.kind,
            data: entry.data.clone(),
        }
    }
}

/// The first sighting of a committed entry.
#[derive(Clone, Debug)]
struct Committed {
    term: Term,
    content: Content,
    node: NodeId,
    /// The observer's term at the first sighting: an upper bound of the
    /// term in which the entry was committed (a leader commits, and every
    /// node that learns of it is in that term or later).
    known_in_term: Term,
}

/// The cluster-wide checks; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SafetyChecker {
    leaders: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    written: BTreeMap<LogId, (Content, Term)>,
    committed: BTreeMap<Index, Committed>,
    /// The membership after each applied membership change (and the
    /// bootstrap one), with the node that first applied it.
    confs: BTreeMap<Index, (ConfState, NodeId)>,
}

impl SafetyChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        SafetyChecker::default()
    }

    /// `node` reports itself leader of `term`. Returns whether this is the
    /// first sighting of that leadership.
    pub fn observe_leader(&mut self, term: Term, node: NodeId) -> Result<bool, Violation> {
        match self.leaders.get(&term) {
            Some(leader) if *leader == node => Ok(false),
            Some(leader) => Err(Violation::new(
                Property::ElectionSafety,
                format!("nodes {leader} and {node} are both leader of term {term}"),
            )),
            None => {
                self.leaders.insert(term, node);
                Ok(true)
            }
        }
    }

    /// `voter` gave its vote in `term` to `candidate` (itself, for a
    /// candidate): a granted vote response, a durable hard state, or a
    /// leadership.
    pub fn observe_vote(&mut self, voter: NodeId, term: Term, candidate: NodeId) -> Result<(), Violation> {
        match self.votes.insert((voter, term), candidate) {
            Some(earlier) if earlier != candidate => Err(Violation::new(
                Property::DoubleVote,
                format!("node {voter} voted for {earlier} and then for {candidate} in term {term}"),
            )),
            _ => Ok(()),
        }
    }

    /// `node` wrote `entry` to its disk, after an entry of term `previous_term`.
    pub fn observe_written(
        &mut self,
        node: NodeId,
        entry: &Entry,
        previous_term: Term,
    ) -> Result<(), Violation> {
        let content = Content::of(entry);
        match self.written.get(&entry.log_id()) {
            None => {
                self.written.insert(entry.log_id(), (content, previous_term));
                Ok(())
            }
            Some((known, known_previous)) if *known == content && *known_previous == previous_term => Ok(()),
            Some((known, known_previous)) => Err(Violation::new(
                Property::LogMatching,
                format!(
                    "node {node} wrote entry {} ({:?}, {} bytes) after term {previous_term}, but entry {} \
                     was written elsewhere as ({:?}, {} bytes) after term {known_previous}",
                    entry.log_id(),
                    entry.kind,
                    entry.data.len(),
                    entry.log_id(),
                    known.kind,
                    known.data.len()
                ),
            )),
        }
    }

    /// `node`, in `node_term`, holds `entry` as committed; `how` says how it
    /// knows ("commit index" or "applied"). The first sighting of an index
    /// fixes its entry.
    pub fn observe_committed(
        &mut self,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
        how: &'static str,
    ) -> Result<(), Violation> {
        let content = Content::of(entry);
        match self.committed.get(&entry.index) {
            None => {
                self.committed.insert(
                    entry.index,
                    Committed {
                        term: entry.term,
                        content,
                        node,
                        known_in_term: node_term,
                    },
                );
                Ok(())
            }
            Some(known) if known.term == entry.term && known.content == content => Ok(()),
            Some(known) => {
                let property = if how == "applied" {
                    Property::StateMachineSafety
                } else {
                    Property::CommittedEntryChanged
                };
                Err(Violation::new(
                    property,
                    format!(
                        "node {node} has {} as committed ({how}), but node {} had committed {} there",
                        entry.log_id(),
                        known.node,
                        LogId::new(known.term, entry.index)
                    ),
                ))
            }
        }
    }

    /// The entries from `first` on that were certainly committed before
    /// `term` began, as `(index, entry term)`: every leader of `term` must
    /// hold them (leader completeness).
    pub fn committed_before_term(
        &self,
        first: Index,
        term: Term,
    ) -> impl Iterator<Item = (Index, Term)> + '_ {
        self.committed
            .range(first..)
            .filter(move |(_, committed)| committed.known_in_term < term)
            .map(|(index, committed)| (*index, committed.term))
    }

    /// The founders' membership, in the bootstrap snapshot at `index`.
    pub fn observe_bootstrap(&mut self, index: Index, conf: ConfState) {
        self.confs.insert(index, (conf, NodeId::ZERO));
    }

    /// `node` applied the membership change at `index` and now holds
    /// `conf`: every node must hold the same membership there.
    pub fn observe_applied_conf(
        &mut self,
        node: NodeId,
        index: Index,
        conf: &ConfState,
    ) -> Result<(), Violation> {
        match self.confs.get(&index) {
            None => {
                self.confs.insert(index, (conf.clone(), node));
                Ok(())
            }
            Some((known, _)) if known == conf => Ok(()),
            Some((known, first)) => Err(Violation::new(
                Property::ConfigurationAgreement,
                format!(
                    "node {node} applied membership {conf:?} at {index}, but node {first} applied {known:?}"
                ),
            )),
        }
    }

    /// `node` took or installs a snapshot: its membership must be the one
    /// applied at the latest membership change at or before its index.
    pub fn observe_snapshot_conf(&self, node: NodeId, metadata: &SnapshotMetadata) -> Result<(), Violation> {
        let index = metadata.last.index;
        match self.confs.range(..=index).next_back() {
            Some((_, (known, _))) if *known == metadata.conf_state => Ok(()),
            Some((at, (known, first))) => Err(Violation::new(
                Property::ConfigurationAgreement,
                format!(
                    "node {node} has snapshot {} with membership {:?}, but the membership since {at} is {known:?} \
                     (applied by node {first})",
                    metadata.last, metadata.conf_state
                ),
            )),
            None => Ok(()),
        }
    }

    /// The highest index known committed.
    pub fn committed_max(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(Index::ZERO)
    }

    /// How many leaderships were seen.
    pub fn leaders_seen(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &'static [u8]) -> Entry {
        Entry::new(
            Term::new(term),
            Index::new(index),
            EntryKind::Normal,
            Bytes::from_static(data),
        )
    }

    fn id(value: u64) -> NodeId {
        NodeId::new(value)
    }

    #[test]
    fn two_leaders_in_one_term_break_election_safety() {
        let mut checker = SafetyChecker::new();
        assert_eq!(checker.observe_leader(Term::new(2), id(1)), Ok(true));
        assert_eq!(checker.observe_leader(Term::new(2), id(1)), Ok(false));
        assert_eq!(checker.observe_leader(Term::new(3), id(2)), Ok(true));
        let violation = checker.observe_leader(Term::new(2), id(3)).unwrap_err();
        assert_eq!(violation.property, Property::ElectionSafety);
    }

    #[test]
    fn a_second_vote_in_a_term_is_caught() {
        let mut checker = SafetyChecker::new();
        assert!(checker.observe_vote(id(1), Term::new(4), id(2)).is_ok());
        assert!(checker.observe_vote(id(1), Term::new(4), id(2)).is_ok());
        assert!(checker.observe_vote(id(1), Term::new(5), id(3)).is_ok());
        let violation = checker.observe_vote(id(1), Term::new(4), id(3)).unwrap_err();
        assert_eq!(violation.property, Property::DoubleVote);
        // A candidate's vote for itself counts like any other.
        assert!(checker.observe_vote(id(2), Term::new(6), id(2)).is_ok());
        let self_then_other = checker.observe_vote(id(2), Term::new(6), id(3)).unwrap_err();
        assert_eq!(self_then_other.property, Property::DoubleVote);
    }

    #[test]
    fn same_index_and_term_with_other_content_or_history_breaks_log_matching() {
        let mut checker = SafetyChecker::new();
        assert!(checker
            .observe_written(id(1), &entry(1, 1, b"a"), Term::ZERO)
            .is_ok());
        assert!(checker
            .observe_written(id(2), &entry(1, 1, b"a"), Term::ZERO)
            .is_ok());
        // Another term at the same index is fine (an uncommitted entry).
        assert!(checker
            .observe_written(id(2), &entry(2, 1, b"b"), Term::ZERO)
            .is_ok());
        let content = checker
            .observe_written(id(3), &entry(1, 1, b"x"), Term::ZERO)
            .unwrap_err();
        assert_eq!(content.property, Property::LogMatching);
        assert!(checker
            .observe_written(id(1), &entry(3, 2, b"c"), Term::new(1))
            .is_ok());
        let history = checker
            .observe_written(id(2), &entry(3, 2, b"c"), Term::new(2))
            .unwrap_err();
        assert_eq!(history.property, Property::LogMatching);
    }

    #[test]
    fn committed_entries_are_fixed_by_the_first_sighting() {
        let mut checker = SafetyChecker::new();
        let term = Term::new(1);
        assert!(checker
            .observe_committed(id(1), term, &entry(1, 1, b"a"), "commit index")
            .is_ok());
        assert!(checker
            .observe_committed(id(2), Term::new(3), &entry(1, 1, b"a"), "applied")
            .is_ok());
        let applied = checker
            .observe_committed(id(3), term, &entry(2, 1, b"b"), "applied")
            .unwrap_err();
        assert_eq!(applied.property, Property::StateMachineSafety);
        let changed = checker
            .observe_committed(id(3), term, &entry(1, 1, b"z"), "commit index")
            .unwrap_err();
        assert_eq!(changed.property, Property::CommittedEntryChanged);
        assert_eq!(checker.committed_max(), Index::new(1));
        // Known committed in term 1: leaders of term 2 on must hold it, a
        // (stale) leader of term 1 need not.
        let before = |term| {
            checker
                .committed_before_term(Index::new(1), Term::new(term))
                .collect::<Vec<_>>()
        };
        assert_eq!(before(2), vec![(Index::new(1), Term::new(1))]);
        assert!(before(1).is_empty());
    }
}
