//! Forged messages: envelopes with terms or indexes at and beyond keel's
//! limits ([`Term::LIMIT`], [`Index::LIMIT`]), from node ids nobody knows
//! and from members. A peer whose codec let a corrupted frame through, or a
//! malicious one, sends such things; a single one must neither panic a node
//! nor push a cluster somewhere it cannot leave.
//!
//! Every forgery with a value beyond a limit must be refused with a typed
//! error and leave its recipient unchanged. A forgery at exactly the term
//! limit is in range — a vote request with an empty log, which moves its
//! recipient to that term and asks for nothing else — and only has to
//! leave the cluster able to elect a leader again (the liveness phase).
//! Nothing in range is forged otherwise: a well-formed message at the
//! current term from a member could be any Byzantine lie, which Raft does
//! not claim to survive.

use bytes::Bytes;
use keel::{
    Append, AppendResponse, ConfState, ElectionReason, Entry, EntryKind, Envelope, Heartbeat,
    HeartbeatResponse, Index, LogId, Message, NodeId, ReadIndexResponse, SnapshotMetadata, Term, VoteKind,
    VoteRequest, VoteResponse,
};

use crate::rng::SimRng;

/// A forged envelope and what the core must do with it.
#[derive(Clone, Debug)]
pub struct Forgery {
    /// The envelope, to be handed to the recipient's `step`.
    pub envelope: Envelope,
    /// A term or index beyond the limits: the core must refuse it (a typed
    /// `StepError`) and stay as it was.
    pub must_be_refused: bool,
}

/// Terms beyond the limit.
const TERMS_BEYOND: [Term; 3] = [
    Term::new(u64::MAX),
    Term::new((1 << 62) + 1),
    Term::new(u64::MAX - 1),
];
/// Indexes beyond the limit.
const INDEXES_BEYOND: [Index; 3] = [
    Index::new(u64::MAX),
    Index::new((1 << 62) + 1),
    Index::new(u64::MAX - 1),
];

// The constants above must stay beyond keel's limits.
const _: () = assert!(Term::LIMIT.get() + 1 == (1 << 62) + 1 && Index::LIMIT.get() + 1 == (1 << 62) + 1);

/// Forges a message for `to` from `from` (a member, or an id nobody
/// knows), whose current term is `term_now`.
pub fn forge(rng: &mut SimRng, from: NodeId, to: NodeId, term_now: Term) -> Forgery {
    let envelope = |term, message| Envelope::new(from, to, term, message);
    match rng.below(8) {
        // A term beyond the limit, on any kind of message.
        0..=2 => {
            let term = *rng.pick(&TERMS_BEYOND).unwrap_or(&TERMS_BEYOND[0]);
            Forgery {
                envelope: envelope(term, any_message(rng, to, term_now)),
                must_be_refused: true,
            }
        }
        // The current term, with an index (or an entry's term) beyond the
        // limit.
        3..=6 => Forgery {
            envelope: envelope(term_now, message_beyond_limits(rng, term_now)),
            must_be_refused: true,
        },
        // Exactly the term limit: in range, on a request that asks for a
        // vote with an empty log.
        _ => {
            let kind = if rng.chance(500_000) {
                VoteKind::PreVote
            } else {
                VoteKind::Vote
            };
            Forgery {
                envelope: envelope(Term::LIMIT, Message::Vote(vote_request(kind, LogId::default()))),
                must_be_refused: false,
            }
        }
    }
}

fn vote_request(kind: VoteKind, last_log: LogId) -> VoteRequest {
    VoteRequest {
        kind,
        last_log,
        reason: ElectionReason::Timeout,
        priority: 0,
    }
}

fn entry(term: Term, index: Index) -> Entry {
    Entry::new(term, index, EntryKind::Normal, Bytes::from_static(b"forged"))
}

/// Any kind of message, with ordinary contents.
fn any_message(rng: &mut SimRng, to: NodeId, term_now: Term) -> Message {
    let low = LogId::new(term_now, Index::new(rng.below(4)));
    match rng.below(8) {
        0 => Message::Append(Append {
            prev: low,
            entries: vec![entry(term_now, low.index.next())],
            commit: low.index,
        }),
        1 => Message::AppendResponse(AppendResponse::Accepted {
            last_index: low.index,
        }),
        2 => Message::Vote(vote_request(VoteKind::Vote, low)),
        3 => Message::VoteResponse(VoteResponse {
            kind: VoteKind::Vote,
            granted: true,
        }),
        4 => Message::Heartbeat(Heartbeat {
            commit: low.index,
            read_round: Some(1),
        }),
        5 => Message::HeartbeatResponse(HeartbeatResponse {
            read_round: Some(1),
            priority: 0,
        }),
        6 => Message::Snapshot(Box::new(SnapshotMetadata {
            last: low,
            conf_state: ConfState::with_voters([to]),
        })),
        _ => Message::TimeoutNow,
    }
}

/// A message at the current term with one index, or one entry's term,
/// beyond the limit.
fn message_beyond_limits(rng: &mut SimRng, term_now: Term) -> Message {
    let index = *rng.pick(&INDEXES_BEYOND).unwrap_or(&INDEXES_BEYOND[0]);
    let term = *rng.pick(&TERMS_BEYOND).unwrap_or(&TERMS_BEYOND[0]);
    let low = Index::new(rng.below(4));
    match rng.below(9) {
        0 => Message::Append(Append {
            prev: LogId::new(term_now, index),
            entries: Vec::new(),
            commit: low,
        }),
        1 => Message::Append(Append {
            prev: LogId::new(term_now, low),
            entries: Vec::new(),
            commit: index,
        }),
        // An entry of a term beyond the limit, followed by an ordinary one:
        // a check of the last entry alone misses it.
        2 => Message::Append(Append {
            prev: LogId::new(term_now, low),
            entries: vec![entry(term, low.next()), entry(term_now, low.next().next())],
            commit: low,
        }),
        3 => Message::AppendResponse(AppendResponse::Accepted { last_index: index }),
        4 => Message::AppendResponse(AppendResponse::Rejected {
            rejected: low,
            hint: LogId::new(term, low),
        }),
        5 => Message::Vote(vote_request(VoteKind::Vote, LogId::new(term_now, index))),
        6 => Message::Heartbeat(Heartbeat {
            commit: index,
            read_round: None,
        }),
        7 => Message::ReadIndexResponse(ReadIndexResponse {
            index,
            context: Bytes::from_static(b"forged"),
        }),
        _ => Message::Snapshot(Box::new(SnapshotMetadata {
            last: LogId::new(term_now, index),
            conf_state: ConfState::default(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgeries_beyond_the_limits_say_so_and_the_rest_are_vote_requests_at_the_limit() {
        let mut rng = SimRng::new(9);
        let (from, to) = (NodeId::new(100), NodeId::new(1));
        for _ in 0..500 {
            let forgery = forge(&mut rng, from, to, Term::new(3));
            let envelope = &forgery.envelope;
            let beyond = envelope.term > Term::LIMIT || envelope.message.out_of_range().is_some();
            let entry_beyond = matches!(&envelope.message, Message::Append(append)
                if append.entries.iter().any(|entry| entry.term > Term::LIMIT));
            if forgery.must_be_refused {
                assert!(beyond || entry_beyond, "{envelope:?}");
            } else {
                assert_eq!(envelope.term, Term::LIMIT);
                assert!(matches!(envelope.message, Message::Vote(_)), "{envelope:?}");
            }
        }
    }
}
