//! Messages between Raft peers.
//!
//! Every message travels in an [`Envelope`] that names its sender, its
//! recipient and the sender's term; the [`Message`] enum inside carries only
//! the fields of its own kind. The wire encoding lives with the transport
//! (`keel-net`), not here.

use bytes::Bytes;

use crate::types::{Entry, EntryKind, Index, LogId, NodeId, SnapshotMetadata, Term};

/// A message with its routing header.
///
/// ```
/// use keel::{Envelope, Message, NodeId, Term};
/// let envelope = Envelope::new(NodeId::new(1), NodeId::new(2), Term::new(3), Message::TimeoutNow);
/// assert_eq!(envelope.to, NodeId::new(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term when it sent the message (for a pre-vote request, the
    /// term the sender would campaign in).
    pub term: Term,
    /// The message itself.
    pub message: Message,
}

impl Envelope {
    /// Builds an envelope.
    pub fn new(from: NodeId, to: NodeId, term: Term, message: Message) -> Self {
        Envelope {
            from,
            to,
            term,
            message,
        }
    }

    /// An estimate of the encoded size, for batching and flow control: the
    /// header plus the entries' [`Entry::size_bytes`].
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        HEADER_BYTES
            + match &self.message {
                Message::Append(append) => append.entries.iter().map(Entry::size_bytes).sum(),
                Message::Propose(ForwardedProposal { entries })
                | Message::ProposalRefused(RefusedProposal { entries, .. }) => {
                    entries.iter().map(|entry| entry.data.len() as u64 + 1).sum()
                }
                Message::ReadIndex(request) => request.context.len() as u64,
                Message::ReadIndexResponse(response) => response.context.len() as u64,
                _ => 0,
            }
    }
}

/// The kinds of Raft message, each with only its own fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Leader → follower: entries to append after `prev` (§5.3).
    Append(Append),
    /// Follower → leader: the result of an [`Append`] or snapshot install.
    AppendResponse(AppendResponse),
    /// Candidate → all: a request for a (pre-)vote (§5.2, thesis §9.6).
    Vote(VoteRequest),
    /// The answer to a [`VoteRequest`].
    VoteResponse(VoteResponse),
    /// Leader → follower: "I am alive", with the commit index the follower
    /// may apply and an optional read round to confirm leadership.
    Heartbeat(Heartbeat),
    /// Follower → leader: the answer to a [`Heartbeat`].
    HeartbeatResponse(HeartbeatResponse),
    /// Leader → follower: install the snapshot described here. The data is
    /// streamed by the runtime beside the message, not carried in it.
    /// Boxed: it is rare and large, and every other message is moved
    /// several times on the hot path.
    Snapshot(Box<SnapshotMetadata>),
    /// Leader → transfer target: start an election now (thesis §3.10).
    TimeoutNow,
    /// Follower → leader: please hand leadership to `target`.
    TransferLeader {
        /// The node that should become leader.
        target: NodeId,
    },
    /// Follower → leader: a request for a read index (thesis §6.4).
    ReadIndex(ReadIndexRequest),
    /// Leader → follower: the read index for a forwarded request.
    ReadIndexResponse(ReadIndexResponse),
    /// Follower → leader: proposals forwarded by a follower.
    Propose(ForwardedProposal),
    /// Leader → follower: forwarded proposals the leader refused, handed
    /// back so that their callers learn it at once instead of timing out.
    ProposalRefused(RefusedProposal),
    /// Node → the follower that forwarded a [`ReadIndexRequest`]: this node
    /// is not the leader (any more) and cannot answer it, so the requester
    /// fails its caller at once instead of waiting for a timeout.
    ReadIndexRefused(ReadIndexRequest),
}

impl Message {
    /// A short name of the kind, for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Append(_) => "append",
            Message::AppendResponse(_) => "append_response",
            Message::Vote(request) => match request.kind {
                VoteKind::PreVote => "pre_vote",
                VoteKind::Vote => "vote",
            },
            Message::VoteResponse(response) => match response.kind {
                VoteKind::PreVote => "pre_vote_response",
                VoteKind::Vote => "vote_response",
            },
            Message::Heartbeat(_) => "heartbeat",
            Message::HeartbeatResponse(_) => "heartbeat_response",
            Message::Snapshot(_) => "snapshot",
            Message::TimeoutNow => "timeout_now",
            Message::TransferLeader { .. } => "transfer_leader",
            Message::ReadIndex(_) => "read_index",
            Message::ReadIndexResponse(_) => "read_index_response",
            Message::Propose(_) => "propose",
            Message::ProposalRefused(_) => "proposal_refused",
            Message::ReadIndexRefused(_) => "read_index_refused",
        }
    }

    /// Checks every term and index the message carries against
    /// [`Term::LIMIT`] and [`Index::LIMIT`]; returns what is out of range.
    /// Values past the limits come only from a broken or forged peer, and
    /// refusing them keeps all arithmetic on accepted values far from
    /// overflow.
    ///
    /// ```
    /// use keel::{Heartbeat, Index, Message};
    /// let fine = Message::Heartbeat(Heartbeat { commit: Index::new(9), read_round: None });
    /// assert_eq!(fine.out_of_range(), None);
    /// let forged = Message::Heartbeat(Heartbeat { commit: Index::new(u64::MAX), read_round: None });
    /// assert!(forged.out_of_range().is_some());
    /// ```
    pub fn out_of_range(&self) -> Option<&'static str> {
        let index_ok = |index: Index| index <= Index::LIMIT;
        let log_id_ok = |log_id: LogId| log_id.term <= Term::LIMIT && log_id.index <= Index::LIMIT;
        let fine = match self {
            Message::Append(append) => {
                log_id_ok(append.prev)
                    && index_ok(append.commit)
                    && append
                        .entries
                        .last()
                        .is_none_or(|entry| log_id_ok(entry.log_id()))
            }
            Message::AppendResponse(AppendResponse::Accepted { last_index }) => index_ok(*last_index),
            Message::AppendResponse(AppendResponse::Rejected { rejected, hint }) => {
                index_ok(*rejected) && log_id_ok(*hint)
            }
            Message::Vote(request) => log_id_ok(request.last_log),
            Message::Heartbeat(heartbeat) => index_ok(heartbeat.commit),
            Message::Snapshot(metadata) => log_id_ok(metadata.last),
            Message::ReadIndexResponse(response) => index_ok(response.index),
            Message::VoteResponse(_)
            | Message::HeartbeatResponse(_)
            | Message::TimeoutNow
            | Message::TransferLeader { .. }
            | Message::ReadIndex(_)
            | Message::Propose(_)
            | Message::ProposalRefused(_)
            | Message::ReadIndexRefused(_) => true,
        };
        (!fine).then_some("a term or index beyond keel's limits")
    }
}

/// Entries for a follower to append (AppendEntries in Figure 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// The entry just before `entries`; the follower must hold it to accept.
    pub prev: LogId,
    /// The entries, contiguous from `prev.index + 1`; empty to carry only a
    /// commit index or to probe.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: Index,
}

/// The result of an [`Append`] (or of installing a snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `last_index`, and every
    /// entry up to it is durable on the follower.
    Accepted {
        /// The last index known to match the leader's log.
        last_index: Index,
    },
    /// The follower does not hold `rejected` with the leader's term.
    Rejected {
        /// The `prev.index` of the rejected append.
        rejected: Index,
        /// The follower's best guess of where the logs may match: an entry
        /// of its log at or before `rejected` with a term no greater than the
        /// leader's `prev.term` (fast back-off, §5.3).
        hint: LogId,
    },
}

/// Whether a vote request is a real vote or a pre-vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// A pre-vote (thesis §9.6): asks whether the voter *would* vote, and
    /// changes no state on either side.
    PreVote,
    /// A real vote (§5.2).
    Vote,
}

/// Why a candidate campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElectionReason {
    /// Its election timeout fired, or an operator asked it to campaign.
    Timeout,
    /// The leader handed over leadership (thesis §3.10); voters grant it even
    /// while they still hear from the old leader.
    Transfer,
}

/// A request for a vote or pre-vote (RequestVote in Figure 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// Pre-vote or vote.
    pub kind: VoteKind,
    /// The candidate's last log entry, for the up-to-date check (§5.4.1).
    pub last_log: LogId,
    /// Why the candidate campaigns.
    pub reason: ElectionReason,
    /// The candidate's election priority (higher wins ties of log length).
    pub priority: u64,
}

/// The answer to a [`VoteRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// Pre-vote or vote, as in the request.
    pub kind: VoteKind,
    /// Whether the vote is granted.
    pub granted: bool,
}

/// A leader's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The commit index the follower may use: the leader's commit index,
    /// capped at what the follower is known to hold.
    pub commit: Index,
    /// A leadership-confirmation round for linearizable reads, echoed back.
    pub read_round: Option<u64>,
}

/// The answer to a [`Heartbeat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The heartbeat's read round, echoed.
    pub read_round: Option<u64>,
    /// The responder's election priority, so the leader can hand over to a
    /// preferred node.
    pub priority: u64,
}

/// A follower's request for a read index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadIndexRequest {
    /// Opaque context chosen by the requester, returned with the index.
    pub context: Bytes,
}

/// The leader's answer to a forwarded [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadIndexResponse {
    /// The index the requester must have applied before it serves the read.
    pub index: Index,
    /// The request's context.
    pub context: Bytes,
}

/// Proposals forwarded from a follower to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedProposal {
    /// The proposed payloads, in order.
    pub entries: Vec<ProposedEntry>,
}

/// Forwarded proposals the leader refused, all of one forwarded batch (all
/// or none of a batch is accepted).
///
/// A refusal means the leader did not append the copy it refused, and took
/// back whatever of the batch it had appended. Over a transport that
/// delivers each message at most once (keel-net does) the proposals are
/// therefore not in the log; over one that may duplicate messages, another
/// copy may have been accepted.
///
/// ```
/// use keel::{EntryKind, ProposedEntry, RefusalReason, RefusedProposal};
/// let refused = RefusedProposal {
///     entries: vec![ProposedEntry { kind: EntryKind::Normal, data: "x".into() }],
///     reason: RefusalReason::Overloaded,
/// };
/// assert_eq!(refused.reason.to_string(), "the leader's uncommitted log is full");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedProposal {
    /// The refused payloads, as they were forwarded.
    pub entries: Vec<ProposedEntry>,
    /// Why the leader refused them.
    pub reason: RefusalReason,
}

/// Why a leader refused forwarded proposals: the part of a
/// [`ProposalError`](crate::ProposalError) that travels between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RefusalReason {
    /// The leader's uncommitted log is at `max_uncommitted_bytes`: try
    /// again later.
    #[error("the leader's uncommitted log is full")]
    Overloaded,
    /// A membership change is already in progress.
    #[error("a membership change is already in progress")]
    ConfChangePending,
    /// The batch or its membership change is invalid.
    #[error("the proposal is invalid")]
    Invalid,
    /// The leader is handing over or leaving: ask the next leader.
    #[error("the leader is not taking proposals")]
    Unavailable,
}

impl RefusalReason {
    /// The reason a leader reports for `error`.
    pub(crate) fn of(error: &crate::ProposalError) -> Self {
        use crate::ProposalError;
        match error {
            ProposalError::UncommittedLimit { .. } => RefusalReason::Overloaded,
            ProposalError::ConfChangePending { .. } => RefusalReason::ConfChangePending,
            ProposalError::InvalidConfChange(_) | ProposalError::Malformed(_) => RefusalReason::Invalid,
            _ => RefusalReason::Unavailable,
        }
    }
}

/// A payload proposed for the log, before the leader gives it a term and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedEntry {
    /// How the core interprets `data`.
    pub kind: EntryKind,
    /// The payload.
    pub data: Bytes,
}
