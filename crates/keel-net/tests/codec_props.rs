//! Laws of the codec: every envelope survives a round trip, and no input,
//! however broken, makes the decoder panic or over-allocate.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use keel::{
    Append, AppendResponse, ConfState, ElectionReason, Entry, EntryKind, Envelope, ForwardedProposal,
    Heartbeat, HeartbeatResponse, Index, LogId, Message, NodeId, ProposedEntry, ReadIndexRequest,
    ReadIndexResponse, RefusalReason, RefusedProposal, SnapshotMetadata, Term, VoteKind, VoteRequest,
    VoteResponse,
};
use keel_net::codec::{decode, encode, encode_framed, FRAME_HEADER_BYTES};
use proptest::prelude::*;

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..300u64, any::<u64>()]
}

fn log_id() -> impl Strategy<Value = LogId> {
    (number(), number()).prop_map(|(term, index)| LogId::new(Term::new(term), Index::new(index)))
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![Just(EntryKind::Normal), Just(EntryKind::ConfChange)]
}

fn data() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn node_set() -> impl Strategy<Value = BTreeSet<NodeId>> {
    proptest::collection::btree_set(number().prop_map(NodeId::new), 0..6)
}

fn vote_kind() -> impl Strategy<Value = VoteKind> {
    prop_oneof![Just(VoteKind::PreVote), Just(VoteKind::Vote)]
}

fn message() -> impl Strategy<Value = Message> {
    let entry = (number(), number(), entry_kind(), data())
        .prop_map(|(term, index, kind, data)| Entry::new(Term::new(term), Index::new(index), kind, data));
    prop_oneof![
        (log_id(), proptest::collection::vec(entry, 0..8), number()).prop_map(|(prev, entries, commit)| {
            Message::Append(Append {
                prev,
                entries,
                commit: Index::new(commit),
            })
        }),
        number().prop_map(|last| Message::AppendResponse(AppendResponse::Accepted {
            last_index: Index::new(last)
        })),
        (number(), log_id()).prop_map(
            |(rejected, hint)| Message::AppendResponse(AppendResponse::Rejected {
                rejected: Index::new(rejected),
                hint
            })
        ),
        (vote_kind(), log_id(), any::<bool>(), number()).prop_map(|(kind, last_log, transfer, priority)| {
            Message::Vote(VoteRequest {
                kind,
                last_log,
                reason: if transfer {
                    ElectionReason::Transfer
                } else {
                    ElectionReason::Timeout
                },
                priority,
            })
        }),
        (vote_kind(), any::<bool>())
            .prop_map(|(kind, granted)| Message::VoteResponse(VoteResponse { kind, granted })),
        (number(), proptest::option::of(number())).prop_map(|(commit, read_round)| {
            Message::Heartbeat(Heartbeat {
                commit: Index::new(commit),
                read_round,
            })
        }),
        (proptest::option::of(number()), number()).prop_map(|(read_round, priority)| {
            Message::HeartbeatResponse(HeartbeatResponse { read_round, priority })
        }),
        (
            log_id(),
            node_set(),
            node_set(),
            node_set(),
            node_set(),
            any::<bool>()
        )
            .prop_map(
                |(last, voters, learners, voters_outgoing, learners_next, auto_leave)| {
                    // Shaped into a valid membership: the decoder refuses
                    // invalid ones (tested on its own below).
                    let zero = NodeId::new(0);
                    let voters: BTreeSet<NodeId> = voters.into_iter().filter(|id| *id != zero).collect();
                    let voters_outgoing: BTreeSet<NodeId> =
                        voters_outgoing.into_iter().filter(|id| *id != zero).collect();
                    let learners: BTreeSet<NodeId> = learners
                        .into_iter()
                        .filter(|id| *id != zero && !voters.contains(id) && !voters_outgoing.contains(id))
                        .collect();
                    let learners_next: BTreeSet<NodeId> = learners_next
                        .into_iter()
                        .filter(|id| {
                            voters_outgoing.contains(id) && !voters.contains(id) && !learners.contains(id)
                        })
                        .collect();
                    let auto_leave = auto_leave && !voters_outgoing.is_empty();
                    let conf_state =
                        ConfState::joint(voters, learners, voters_outgoing, learners_next, auto_leave)
                            .expect("shaped to be valid");
                    Message::Snapshot(Box::new(SnapshotMetadata { last, conf_state }))
                }
            ),
        Just(Message::TimeoutNow),
        number().prop_map(|target| Message::TransferLeader {
            target: NodeId::new(target)
        }),
        data().prop_map(|context| Message::ReadIndex(ReadIndexRequest { context })),
        (number(), data()).prop_map(|(index, context)| Message::ReadIndexResponse(ReadIndexResponse {
            index: Index::new(index),
            context
        })),
        proptest::collection::vec((entry_kind(), data()), 0..8).prop_map(|entries| {
            Message::Propose(ForwardedProposal {
                entries: entries
                    .into_iter()
                    .map(|(kind, data)| ProposedEntry { kind, data })
                    .collect(),
            })
        }),
        (
            proptest::collection::vec((entry_kind(), data()), 0..8),
            prop_oneof![
                Just(RefusalReason::Overloaded),
                Just(RefusalReason::ConfChangePending),
                Just(RefusalReason::Invalid),
                Just(RefusalReason::Unavailable),
            ]
        )
            .prop_map(|(entries, reason)| {
                Message::ProposalRefused(RefusedProposal {
                    entries: entries
                        .into_iter()
                        .map(|(kind, data)| ProposedEntry { kind, data })
                        .collect(),
                    reason,
                })
            }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (number(), number(), number(), message()).prop_map(|(from, to, term, message)| {
        Envelope::new(NodeId::new(from), NodeId::new(to), Term::new(term), message)
    })
}

fn encoded(envelope: &Envelope) -> Bytes {
    let mut body = BytesMut::new();
    encode(envelope, &mut body);
    body.freeze()
}

/// Decoding must return (Ok or Err), and whatever decodes must re-encode to
/// something that decodes to the same envelope.
fn decode_is_total(bytes: Bytes) {
    if let Ok(envelope) = decode(bytes) {
        assert_eq!(decode(encoded(&envelope)), Ok(envelope));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_envelope_round_trips(envelope in envelope()) {
        prop_assert_eq!(decode(encoded(&envelope)), Ok(envelope));
    }

    #[test]
    fn framed_body_is_the_plain_body(envelope in envelope()) {
        let mut framed = BytesMut::new();
        let body_bytes = encode_framed(&envelope, &mut framed);
        prop_assert_eq!(&framed[FRAME_HEADER_BYTES..], &encoded(&envelope)[..]);
        prop_assert_eq!(framed.len(), FRAME_HEADER_BYTES + body_bytes);
    }

    #[test]
    fn every_strict_prefix_is_refused(envelope in envelope(), cut in any::<prop::sample::Index>()) {
        // Goal: a truncated body never decodes (all fields are mandatory).
        let body = encoded(&envelope);
        let length = cut.index(body.len());
        prop_assert!(decode(body.slice(..length)).is_err());
    }

    #[test]
    fn bit_flips_never_panic(envelope in envelope(), flips in proptest::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..4)) {
        let mut body = encoded(&envelope).to_vec();
        for (position, bit) in flips {
            let position = position.index(body.len());
            body[position] ^= 1 << bit;
        }
        decode_is_total(Bytes::from(body));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_is_total(Bytes::from(bytes));
    }

    #[test]
    fn random_bytes_after_a_valid_tag_never_panic(tag in 0..16u8, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut body = vec![tag];
        body.extend(bytes);
        decode_is_total(Bytes::from(body));
    }
}

/// A fuzz-ish loop without cargo-fuzz: a fixed-seed generator mutates valid
/// encodings (splice, overwrite, insert huge varints) a hundred thousand
/// times; the decoder must never panic.
#[test]
fn mutation_fuzzing_never_panics() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let seeds: Vec<Bytes> = [
        Message::TimeoutNow,
        Message::Append(Append {
            prev: LogId::new(Term::new(3), Index::new(9)),
            entries: (10..14)
                .map(|index| {
                    Entry::new(
                        Term::new(3),
                        Index::new(index),
                        EntryKind::Normal,
                        Bytes::from_static(b"payload"),
                    )
                })
                .collect(),
            commit: Index::new(8),
        }),
        Message::Snapshot(Box::new(SnapshotMetadata {
            last: LogId::new(Term::new(2), Index::new(100)),
            conf_state: ConfState::with_voters([1, 2, 3].map(NodeId::new)),
        })),
        Message::Propose(ForwardedProposal {
            entries: vec![ProposedEntry {
                kind: EntryKind::ConfChange,
                data: Bytes::from_static(b"cc"),
            }],
        }),
        Message::ProposalRefused(RefusedProposal {
            entries: vec![ProposedEntry {
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"refused"),
            }],
            reason: RefusalReason::ConfChangePending,
        }),
    ]
    .into_iter()
    .map(|message| {
        encoded(&Envelope::new(
            NodeId::new(1),
            NodeId::new(2),
            Term::new(3),
            message,
        ))
    })
    .collect();
    for _ in 0..100_000 {
        let seed = &seeds[(random() % seeds.len() as u64) as usize];
        let mut body = seed.to_vec();
        for _ in 0..(1 + random() % 4) {
            let position = (random() % (body.len() as u64 + 1)) as usize;
            match random() % 4 {
                0 => body.truncate(position),
                1 if position < body.len() => body[position] = random() as u8,
                2 => body
                    .splice(
                        position..position,
                        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                    )
                    .for_each(drop),
                _ => body.insert(position.min(body.len()), random() as u8),
            }
        }
        decode_is_total(Bytes::from(body));
    }
}

#[test]
fn entry_payloads_share_the_frame_buffer() {
    // Goal: decoding copies no payload: the entry's data points into the frame.
    let envelope = Envelope::new(
        NodeId::new(1),
        NodeId::new(2),
        Term::new(1),
        Message::Append(Append {
            prev: LogId::default(),
            entries: vec![Entry::new(
                Term::new(1),
                Index::new(1),
                EntryKind::Normal,
                Bytes::from(vec![7u8; 128]),
            )],
            commit: Index::ZERO,
        }),
    );
    let frame = encoded(&envelope);
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let Ok(Envelope {
        message: Message::Append(append),
        ..
    }) = decode(frame.clone())
    else {
        panic!("append did not decode");
    };
    assert!(range.contains(&(append.entries[0].data.as_ptr() as usize)));
}

#[test]
fn a_snapshot_with_an_invalid_membership_is_refused_at_decode() {
    let conf_state = ConfState::new([NodeId::new(1)], [NodeId::new(2)]).unwrap();
    let envelope = Envelope::new(
        NodeId::new(1),
        NodeId::new(2),
        Term::new(1),
        Message::Snapshot(Box::new(SnapshotMetadata {
            last: LogId::new(Term::new(1), Index::new(5)),
            conf_state,
        })),
    );
    let mut body = BytesMut::new();
    encode(&envelope, &mut body);
    let mut bytes = body.to_vec();
    // voters = {1}, learners = {2}: `count 1, id 1, count 1, id 2`; make
    // node 1 a learner too.
    let position = bytes
        .windows(4)
        .rposition(|window| window == [1, 1, 1, 2])
        .expect("the membership in the body");
    bytes[position + 3] = 1;
    assert!(
        decode(Bytes::from(bytes)).is_err(),
        "a voter that is also a learner is refused"
    );
}
