//! The wire codec: a compact, versioned binary encoding of [`keel::Envelope`]
//! and of the connection handshake.
//!
//! # Frames
//!
//! Everything on a connection travels in frames: a 4-byte big-endian body
//! length, then the body. A body longer than the receiver's
//! `max_frame_bytes` closes the connection before anything is allocated for
//! it. [`encode`] and [`decode`] work on one body; [`encode_framed`] adds the
//! length prefix.
//!
//! # Envelope body (protocol version 1)
//!
//! Integers are unsigned LEB128 varints (1 to 10 bytes) unless said otherwise;
//! `bytes` is a varint length followed by that many bytes; `bool` and enum
//! codes are one byte; `option<x>` is a `bool` then `x` when it is 1.
//!
//! ```text
//! tag:u8  from  to  term  fields-of-the-kind
//!
//!  1 Append             prev.term prev.index commit count { term index kind:u8 data:bytes }*
//!  2 Accepted           last_index
//!  3 Rejected           rejected hint.term hint.index
//!  4 Vote               vote_kind:u8 last_log.term last_log.index reason:u8 priority
//!  5 VoteResponse       vote_kind:u8 granted:bool
//!  6 Heartbeat          commit read_round:option<varint>
//!  7 HeartbeatResponse  read_round:option<varint> priority
//!  8 Snapshot           last.term last.index voters learners voters_outgoing learners_next auto_leave:bool
//!                       (each set: count, then ids in strictly ascending order)
//!  9 TimeoutNow
//! 10 TransferLeader     target
//! 11 ReadIndex          context:bytes
//! 12 ReadIndexResponse  index context:bytes
//! 13 Propose            count { kind:u8 data:bytes }*
//! 14 ProposalRefused    reason:u8 count { kind:u8 data:bytes }*
//!                       (reason: 0 overloaded, 1 conf change pending,
//!                       2 invalid, 3 unavailable)
//! 15 ReadIndexRefused   context:bytes
//! ```
//!
//! Decoding checks every declared length and count against the bytes that
//! remain before it allocates, rejects unknown codes and trailing bytes, and
//! never panics. Entry payloads and read contexts are [`Bytes::slice`]s of
//! the frame: no copy.
//!
//! # Handshake
//!
//! The first frame a dialling node sends is a [`Handshake`] (31 bytes, fixed
//! width, big-endian): `"KEEL" version:u16 kind:u8 cluster_id:u64 from:u64
//! to:u64`. The listener answers with one frame of 3 bytes, `version:u16
//! status:u8` ([`HandshakeStatus`]), and closes the connection unless the
//! status is `Accepted`.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel::{
    Append, AppendResponse, ConfState, ElectionReason, Entry, EntryKind, Envelope, ForwardedProposal,
    Heartbeat, HeartbeatResponse, Index, LogId, Message, NodeId, ProposedEntry, ReadIndexRequest,
    ReadIndexResponse, RefusalReason, RefusedProposal, SnapshotMetadata, Term, VoteKind, VoteRequest,
    VoteResponse,
};

/// The version of the wire protocol this crate speaks. Both ends of a
/// connection must speak the same version; the handshake refuses any other.
pub const PROTOCOL_VERSION: u16 = 1;

/// The length of a frame's length prefix, in bytes.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The magic bytes that open a handshake.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"KEEL";

/// The size of the fixed part of an encoded [`Handshake`] body, in bytes;
/// the dialler's advertised address (a length byte and up to
/// [`ADVERTISED_ADDRESS_BYTES_MAX`] bytes) follows it.
pub const HANDSHAKE_BYTES: usize = 4 + 2 + 1 + 8 + 8 + 8;

/// The longest advertised address a handshake carries.
pub const ADVERTISED_ADDRESS_BYTES_MAX: usize = 255;

/// The largest encoded [`Handshake`] body, in bytes.
pub const HANDSHAKE_BYTES_MAX: usize = HANDSHAKE_BYTES + 1 + ADVERTISED_ADDRESS_BYTES_MAX;

/// The size of an encoded handshake reply body, in bytes.
pub const HANDSHAKE_REPLY_BYTES: usize = 3;

/// Why a frame body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The body ended in the middle of a field.
    #[error("body truncated: needed {needed} more bytes, {remaining} remain")]
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A varint ran past 10 bytes or past 64 bits.
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    /// A varint length does not fit in memory addresses of this machine.
    #[error("length {0} does not fit in usize")]
    LengthOverflow(u64),
    /// The message tag is not one this version knows.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// An enum code (entry kind, vote kind, election reason, bool) is unknown.
    #[error("unknown {field} code {code}")]
    UnknownCode {
        /// Which field held the code.
        field: &'static str,
        /// The code found.
        code: u8,
    },
    /// A declared element count cannot fit in the bytes that remain.
    #[error("{field} count {count} exceeds what {remaining} remaining bytes can hold")]
    CountTooLarge {
        /// Which list.
        field: &'static str,
        /// The declared count.
        count: u64,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A snapshot's membership breaks one of [`ConfState`]'s invariants.
    #[error("invalid membership: {0}")]
    InvalidMembership(keel::ConfStateError),
    /// A node-id set is not in strictly ascending order.
    #[error("{0} set is not strictly ascending")]
    UnorderedSet(&'static str),
    /// Bytes were left after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A handshake did not start with [`HANDSHAKE_MAGIC`].
    #[error("handshake magic is wrong")]
    BadMagic,
    /// A handshake or reply has the wrong size.
    #[error("handshake is {actual} bytes, expected {expected}")]
    HandshakeSize {
        /// The size expected.
        expected: usize,
        /// The size found.
        actual: usize,
    },
}

// ---------------------------------------------------------------- message tags

const TAG_APPEND: u8 = 1;
const TAG_ACCEPTED: u8 = 2;
const TAG_REJECTED: u8 = 3;
const TAG_VOTE: u8 = 4;
const TAG_VOTE_RESPONSE: u8 = 5;
const TAG_HEARTBEAT: u8 = 6;
const TAG_HEARTBEAT_RESPONSE: u8 = 7;
const TAG_SNAPSHOT: u8 = 8;
const TAG_TIMEOUT_NOW: u8 = 9;
const TAG_TRANSFER_LEADER: u8 = 10;
const TAG_READ_INDEX: u8 = 11;
const TAG_READ_INDEX_RESPONSE: u8 = 12;
const TAG_PROPOSE: u8 = 13;
const TAG_PROPOSAL_REFUSED: u8 = 14;
const TAG_READ_INDEX_REFUSED: u8 = 15;

/// The smallest encoding of one log entry: term, index, kind, data length.
const ENTRY_BYTES_MIN: usize = 4;
/// The smallest encoding of one proposed entry: kind, data length.
const PROPOSED_ENTRY_BYTES_MIN: usize = 2;
/// The smallest encoding of one node id.
const NODE_ID_BYTES_MIN: usize = 1;

// ---------------------------------------------------------------- encoding

/// Appends the body of one frame holding `envelope` to `out` (no length
/// prefix; see [`encode_framed`]).
///
/// ```
/// use bytes::BytesMut;
/// use keel::{Envelope, Message, NodeId, Term};
/// let envelope = Envelope::new(NodeId::new(1), NodeId::new(2), Term::new(3), Message::TimeoutNow);
/// let mut body = BytesMut::new();
/// keel_net::codec::encode(&envelope, &mut body);
/// assert_eq!(keel_net::codec::decode(body.freeze()).unwrap(), envelope);
/// ```
pub fn encode(envelope: &Envelope, out: &mut BytesMut) {
    out.reserve(encoded_size_hint(envelope));
    let tag = match &envelope.message {
        Message::Append(_) => TAG_APPEND,
        Message::AppendResponse(AppendResponse::Accepted { .. }) => TAG_ACCEPTED,
        Message::AppendResponse(AppendResponse::Rejected { .. }) => TAG_REJECTED,
        Message::Vote(_) => TAG_VOTE,
        Message::VoteResponse(_) => TAG_VOTE_RESPONSE,
        Message::Heartbeat(_) => TAG_HEARTBEAT,
        Message::HeartbeatResponse(_) => TAG_HEARTBEAT_RESPONSE,
        Message::Snapshot(_) => TAG_SNAPSHOT,
        Message::TimeoutNow => TAG_TIMEOUT_NOW,
        Message::TransferLeader { .. } => TAG_TRANSFER_LEADER,
        Message::ReadIndex(_) => TAG_READ_INDEX,
        Message::ReadIndexResponse(_) => TAG_READ_INDEX_RESPONSE,
        Message::Propose(_) => TAG_PROPOSE,
        Message::ProposalRefused(_) => TAG_PROPOSAL_REFUSED,
        Message::ReadIndexRefused(_) => TAG_READ_INDEX_REFUSED,
    };
    out.put_u8(tag);
    put_varint(out, envelope.from.get());
    put_varint(out, envelope.to.get());
    put_varint(out, envelope.term.get());
    encode_fields(&envelope.message, out);
}

/// Appends one whole frame (length prefix and body) holding `envelope` to
/// `out`, and returns the body length.
pub fn encode_framed(envelope: &Envelope, out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_u32(0);
    encode(envelope, out);
    let body_bytes = out.len() - start - FRAME_HEADER_BYTES;
    // A body over 4 GiB is impossible to send anyway; saturate and let the
    // frame limit of the sender refuse it.
    let prefix = u32::try_from(body_bytes).unwrap_or(u32::MAX).to_be_bytes();
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&prefix);
    body_bytes
}

/// An upper-bound-ish estimate of the encoded size, used to reserve once.
fn encoded_size_hint(envelope: &Envelope) -> usize {
    usize::try_from(envelope.size_bytes()).unwrap_or(0) + 32
}

fn encode_fields(message: &Message, out: &mut BytesMut) {
    match message {
        Message::Append(append) => {
            put_log_id(out, append.prev);
            put_varint(out, append.commit.get());
            put_varint(out, append.entries.len() as u64);
            for entry in &append.entries {
                put_varint(out, entry.term.get());
                put_varint(out, entry.index.get());
                out.put_u8(entry.kind.code());
                put_bytes(out, &entry.data);
            }
        }
        Message::AppendResponse(AppendResponse::Accepted { last_index }) => {
            put_varint(out, last_index.get());
        }
        Message::AppendResponse(AppendResponse::Rejected { rejected, hint }) => {
            put_varint(out, rejected.get());
            put_log_id(out, *hint);
        }
        Message::Vote(request) => {
            out.put_u8(vote_kind_code(request.kind));
            put_log_id(out, request.last_log);
            out.put_u8(match request.reason {
                ElectionReason::Timeout => 0,
                ElectionReason::Transfer => 1,
            });
            put_varint(out, request.priority);
        }
        Message::VoteResponse(response) => {
            out.put_u8(vote_kind_code(response.kind));
            out.put_u8(u8::from(response.granted));
        }
        Message::Heartbeat(heartbeat) => {
            put_varint(out, heartbeat.commit.get());
            put_option(out, heartbeat.read_round);
        }
        Message::HeartbeatResponse(response) => {
            put_option(out, response.read_round);
            put_varint(out, response.priority);
        }
        Message::Snapshot(metadata) => {
            put_log_id(out, metadata.last);
            let conf = &metadata.conf_state;
            for set in [
                conf.voters(),
                conf.learners(),
                conf.voters_outgoing(),
                conf.learners_next(),
            ] {
                put_varint(out, set.len() as u64);
                for id in set {
                    put_varint(out, id.get());
                }
            }
            out.put_u8(u8::from(conf.auto_leave()));
        }
        Message::TimeoutNow => {}
        Message::TransferLeader { target } => put_varint(out, target.get()),
        Message::ReadIndex(request) | Message::ReadIndexRefused(request) => put_bytes(out, &request.context),
        Message::ReadIndexResponse(response) => {
            put_varint(out, response.index.get());
            put_bytes(out, &response.context);
        }
        Message::Propose(proposal) => put_proposed_entries(out, &proposal.entries),
        Message::ProposalRefused(refused) => {
            out.put_u8(refusal_reason_code(refused.reason));
            put_proposed_entries(out, &refused.entries);
        }
    }
}

fn put_proposed_entries(out: &mut BytesMut, entries: &[ProposedEntry]) {
    put_varint(out, entries.len() as u64);
    for entry in entries {
        out.put_u8(entry.kind.code());
        put_bytes(out, &entry.data);
    }
}

fn refusal_reason_code(reason: RefusalReason) -> u8 {
    match reason {
        RefusalReason::Overloaded => 0,
        RefusalReason::ConfChangePending => 1,
        RefusalReason::Invalid => 2,
        RefusalReason::Unavailable => 3,
    }
}

fn vote_kind_code(kind: VoteKind) -> u8 {
    match kind {
        VoteKind::PreVote => 0,
        VoteKind::Vote => 1,
    }
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_log_id(out: &mut BytesMut, id: LogId) {
    put_varint(out, id.term.get());
    put_varint(out, id.index.get());
}

fn put_bytes(out: &mut BytesMut, data: &[u8]) {
    put_varint(out, data.len() as u64);
    out.put_slice(data);
}

fn put_option(out: &mut BytesMut, value: Option<u64>) {
    match value {
        None => out.put_u8(0),
        Some(value) => {
            out.put_u8(1);
            put_varint(out, value);
        }
    }
}

// ---------------------------------------------------------------- decoding

/// Decodes one frame body (without its length prefix) into an envelope.
///
/// Entry payloads and read contexts share `frame`'s buffer. Any malformed
/// input is an error, never a panic; nothing is allocated beyond what the
/// remaining bytes can justify.
pub fn decode(frame: Bytes) -> Result<Envelope, CodecError> {
    let mut reader = Reader { buffer: frame };
    let tag = reader.u8()?;
    let from = NodeId::new(reader.varint()?);
    let to = NodeId::new(reader.varint()?);
    let term = Term::new(reader.varint()?);
    let message = decode_fields(tag, &mut reader)?;
    if reader.buffer.has_remaining() {
        return Err(CodecError::TrailingBytes(reader.buffer.remaining()));
    }
    Ok(Envelope::new(from, to, term, message))
}

fn decode_fields(tag: u8, reader: &mut Reader) -> Result<Message, CodecError> {
    let message = match tag {
        TAG_APPEND => {
            let prev = reader.log_id()?;
            let commit = Index::new(reader.varint()?);
            let count = reader.count("entries", ENTRY_BYTES_MIN)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let term = Term::new(reader.varint()?);
                let index = Index::new(reader.varint()?);
                let kind = reader.entry_kind()?;
                let data = reader.bytes()?;
                entries.push(Entry::new(term, index, kind, data));
            }
            Message::Append(Append {
                prev,
                entries,
                commit,
            })
        }
        TAG_ACCEPTED => Message::AppendResponse(AppendResponse::Accepted {
            last_index: Index::new(reader.varint()?),
        }),
        TAG_REJECTED => Message::AppendResponse(AppendResponse::Rejected {
            rejected: Index::new(reader.varint()?),
            hint: reader.log_id()?,
        }),
        TAG_VOTE => Message::Vote(VoteRequest {
            kind: reader.vote_kind()?,
            last_log: reader.log_id()?,
            reason: match reader.u8()? {
                0 => ElectionReason::Timeout,
                1 => ElectionReason::Transfer,
                code => {
                    return Err(CodecError::UnknownCode {
                        field: "election reason",
                        code,
                    })
                }
            },
            priority: reader.varint()?,
        }),
        TAG_VOTE_RESPONSE => Message::VoteResponse(VoteResponse {
            kind: reader.vote_kind()?,
            granted: reader.bool("granted")?,
        }),
        TAG_HEARTBEAT => Message::Heartbeat(Heartbeat {
            commit: Index::new(reader.varint()?),
            read_round: reader.option()?,
        }),
        TAG_HEARTBEAT_RESPONSE => Message::HeartbeatResponse(HeartbeatResponse {
            read_round: reader.option()?,
            priority: reader.varint()?,
        }),
        TAG_SNAPSHOT => {
            let last = reader.log_id()?;
            let voters = reader.node_set("voters")?;
            let learners = reader.node_set("learners")?;
            let voters_outgoing = reader.node_set("voters_outgoing")?;
            let learners_next = reader.node_set("learners_next")?;
            let auto_leave = reader.bool("auto_leave")?;
            let conf_state = ConfState::joint(voters, learners, voters_outgoing, learners_next, auto_leave)
                .map_err(CodecError::InvalidMembership)?;
            Message::Snapshot(Box::new(SnapshotMetadata { last, conf_state }))
        }
        TAG_TIMEOUT_NOW => Message::TimeoutNow,
        TAG_TRANSFER_LEADER => Message::TransferLeader {
            target: NodeId::new(reader.varint()?),
        },
        TAG_READ_INDEX => Message::ReadIndex(ReadIndexRequest {
            context: reader.bytes()?,
        }),
        TAG_READ_INDEX_REFUSED => Message::ReadIndexRefused(ReadIndexRequest {
            context: reader.bytes()?,
        }),
        TAG_READ_INDEX_RESPONSE => Message::ReadIndexResponse(ReadIndexResponse {
            index: Index::new(reader.varint()?),
            context: reader.bytes()?,
        }),
        TAG_PROPOSE => Message::Propose(ForwardedProposal {
            entries: reader.proposed_entries()?,
        }),
        TAG_PROPOSAL_REFUSED => {
            let reason = reader.refusal_reason()?;
            Message::ProposalRefused(RefusedProposal {
                entries: reader.proposed_entries()?,
                reason,
            })
        }
        unknown => return Err(CodecError::UnknownTag(unknown)),
    };
    Ok(message)
}

/// A cursor over a frame body whose every read is checked.
struct Reader {
    buffer: Bytes,
}

impl Reader {
    fn need(&self, needed: usize) -> Result<(), CodecError> {
        let remaining = self.buffer.remaining();
        if remaining < needed {
            return Err(CodecError::Truncated { needed, remaining });
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.buffer.get_u8())
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value: u64 = 0;
        for position in 0..10u32 {
            let byte = self.u8()?;
            let low = u64::from(byte & 0x7f);
            // The tenth byte may only carry the 64th bit.
            if position == 9 && low > 1 {
                return Err(CodecError::VarintOverflow);
            }
            value |= low << (7 * position);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    fn log_id(&mut self) -> Result<LogId, CodecError> {
        let term = Term::new(self.varint()?);
        let index = Index::new(self.varint()?);
        Ok(LogId::new(term, index))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            code => Err(CodecError::UnknownCode { field, code }),
        }
    }

    fn option(&mut self) -> Result<Option<u64>, CodecError> {
        if self.bool("option")? {
            Ok(Some(self.varint()?))
        } else {
            Ok(None)
        }
    }

    fn vote_kind(&mut self) -> Result<VoteKind, CodecError> {
        match self.u8()? {
            0 => Ok(VoteKind::PreVote),
            1 => Ok(VoteKind::Vote),
            code => Err(CodecError::UnknownCode {
                field: "vote kind",
                code,
            }),
        }
    }

    fn proposed_entries(&mut self) -> Result<Vec<ProposedEntry>, CodecError> {
        let count = self.count("proposed entries", PROPOSED_ENTRY_BYTES_MIN)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = self.entry_kind()?;
            let data = self.bytes()?;
            entries.push(ProposedEntry { kind, data });
        }
        Ok(entries)
    }

    fn refusal_reason(&mut self) -> Result<RefusalReason, CodecError> {
        let code = self.u8()?;
        Ok(match code {
            0 => RefusalReason::Overloaded,
            1 => RefusalReason::ConfChangePending,
            2 => RefusalReason::Invalid,
            3 => RefusalReason::Unavailable,
            code => {
                return Err(CodecError::UnknownCode {
                    field: "refusal reason",
                    code,
                })
            }
        })
    }

    fn entry_kind(&mut self) -> Result<EntryKind, CodecError> {
        let code = self.u8()?;
        EntryKind::from_code(code).ok_or(CodecError::UnknownCode {
            field: "entry kind",
            code,
        })
    }

    /// A length-prefixed byte string, as a slice of the frame (no copy).
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let declared = self.varint()?;
        let length = usize::try_from(declared).map_err(|_| CodecError::LengthOverflow(declared))?;
        self.need(length)?;
        Ok(self.buffer.split_to(length))
    }

    /// A declared element count, checked against the bytes that remain when
    /// each element takes at least `element_bytes_min` bytes.
    fn count(&mut self, field: &'static str, element_bytes_min: usize) -> Result<usize, CodecError> {
        let count = self.varint()?;
        let remaining = self.buffer.remaining();
        let fits = (remaining / element_bytes_min) as u64;
        if count > fits {
            return Err(CodecError::CountTooLarge {
                field,
                count,
                remaining,
            });
        }
        // `count <= remaining`, which is a usize.
        Ok(count as usize)
    }

    fn node_set(&mut self, field: &'static str) -> Result<BTreeSet<NodeId>, CodecError> {
        let count = self.count(field, NODE_ID_BYTES_MIN)?;
        let mut set = BTreeSet::new();
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let id = self.varint()?;
            if previous.is_some_and(|previous| previous >= id) {
                return Err(CodecError::UnorderedSet(field));
            }
            previous = Some(id);
            set.insert(NodeId::new(id));
        }
        Ok(set)
    }
}

// ---------------------------------------------------------------- handshake

/// What a connection carries, declared in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnectionKind {
    /// Raft messages, batched, from the dialling node to the listener.
    Messages,
    /// One snapshot: its message, then its data in chunks.
    Snapshot,
}

impl ConnectionKind {
    const fn code(self) -> u8 {
        match self {
            ConnectionKind::Messages => 0,
            ConnectionKind::Snapshot => 1,
        }
    }

    const fn from_code(code: u8) -> Option<ConnectionKind> {
        match code {
            0 => Some(ConnectionKind::Messages),
            1 => Some(ConnectionKind::Snapshot),
            _ => None,
        }
    }
}

/// The first frame on every connection: who dials whom, in which cluster,
/// speaking which protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The dialler's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// What the connection carries.
    pub kind: ConnectionKind,
    /// The cluster the dialler belongs to.
    pub cluster_id: u64,
    /// The dialling node.
    pub from: NodeId,
    /// The node the dialler means to reach.
    pub to: NodeId,
    /// Where the dialler listens (`host:port`), or empty. A node that does
    /// not know the dialler's address yet (it just joined the cluster)
    /// learns it from here, so it can answer.
    pub advertised_address: String,
}

impl Handshake {
    /// The encoded body length of this handshake.
    pub fn encoded_bytes(&self) -> usize {
        HANDSHAKE_BYTES + 1 + self.advertised_address.len().min(ADVERTISED_ADDRESS_BYTES_MAX)
    }
}

/// The listener's answer to a [`Handshake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// The connection is open for frames.
    Accepted,
    /// The listener speaks another protocol version (sent back beside it).
    UnsupportedVersion,
    /// The dialler belongs to another cluster.
    WrongCluster,
    /// The listener is not the node the dialler meant to reach, or the
    /// dialler's id is invalid (or, with node names required, its
    /// certificate does not name it).
    WrongNode,
    /// The dialler is not a member as far as the listener knows: not added
    /// yet, or removed. Sent by listeners since this status was added;
    /// older diallers read it as an unknown code, which refuses all the
    /// same.
    NotMember,
}

impl HandshakeStatus {
    const fn code(self) -> u8 {
        match self {
            HandshakeStatus::Accepted => 0,
            HandshakeStatus::UnsupportedVersion => 1,
            HandshakeStatus::WrongCluster => 2,
            HandshakeStatus::WrongNode => 3,
            HandshakeStatus::NotMember => 4,
        }
    }
}

/// Appends the body of a handshake frame to `out`.
pub fn encode_handshake(handshake: &Handshake, out: &mut BytesMut) {
    out.reserve(HANDSHAKE_BYTES);
    out.put_slice(&HANDSHAKE_MAGIC);
    out.put_u16(handshake.version);
    out.put_u8(handshake.kind.code());
    out.put_u64(handshake.cluster_id);
    out.put_u64(handshake.from.get());
    out.put_u64(handshake.to.get());
    // An address too long to carry is not sent at all rather than cut.
    let address = handshake.advertised_address.as_bytes();
    let address = if address.len() > ADVERTISED_ADDRESS_BYTES_MAX {
        &[][..]
    } else {
        address
    };
    out.put_u8(address.len() as u8);
    out.put_slice(address);
}

/// Decodes the body of a handshake frame.
pub fn decode_handshake(mut body: Bytes) -> Result<Handshake, CodecError> {
    if body.len() <= HANDSHAKE_BYTES || body.len() > HANDSHAKE_BYTES_MAX {
        return Err(CodecError::HandshakeSize {
            expected: HANDSHAKE_BYTES + 1,
            actual: body.len(),
        });
    }
    if body[..4] != HANDSHAKE_MAGIC {
        return Err(CodecError::BadMagic);
    }
    body.advance(4);
    let version = body.get_u16();
    let kind_code = body.get_u8();
    let kind = ConnectionKind::from_code(kind_code).ok_or(CodecError::UnknownCode {
        field: "connection kind",
        code: kind_code,
    })?;
    let cluster_id = body.get_u64();
    let from = NodeId::new(body.get_u64());
    let to = NodeId::new(body.get_u64());
    let length = body.get_u8() as usize;
    if body.len() != length {
        return Err(CodecError::HandshakeSize {
            expected: HANDSHAKE_BYTES + 1 + length,
            actual: HANDSHAKE_BYTES + 1 + body.len(),
        });
    }
    let advertised_address = String::from_utf8(body.to_vec()).map_err(|_| CodecError::UnknownCode {
        field: "advertised address (not UTF-8)",
        code: 0,
    })?;
    Ok(Handshake {
        version,
        kind,
        cluster_id,
        from,
        to,
        advertised_address,
    })
}

/// Appends the body of a handshake reply to `out`.
pub fn encode_handshake_reply(status: HandshakeStatus, out: &mut BytesMut) {
    out.put_u16(PROTOCOL_VERSION);
    out.put_u8(status.code());
}

/// Decodes a handshake reply: the listener's protocol version and status.
pub fn decode_handshake_reply(mut body: Bytes) -> Result<(u16, HandshakeStatus), CodecError> {
    if body.len() != HANDSHAKE_REPLY_BYTES {
        return Err(CodecError::HandshakeSize {
            expected: HANDSHAKE_REPLY_BYTES,
            actual: body.len(),
        });
    }
    let version = body.get_u16();
    let status = match body.get_u8() {
        0 => HandshakeStatus::Accepted,
        1 => HandshakeStatus::UnsupportedVersion,
        2 => HandshakeStatus::WrongCluster,
        3 => HandshakeStatus::WrongNode,
        4 => HandshakeStatus::NotMember,
        code => {
            return Err(CodecError::UnknownCode {
                field: "handshake status",
                code,
            })
        }
    };
    Ok((version, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            let mut reader = Reader { buffer: out.freeze() };
            assert_eq!(reader.varint(), Ok(value));
            assert!(!reader.buffer.has_remaining());
        }
    }

    #[test]
    fn varint_past_64_bits_is_refused() {
        let mut reader = Reader {
            buffer: Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
        };
        assert_eq!(reader.varint(), Err(CodecError::VarintOverflow));
        let mut endless = Reader {
            buffer: Bytes::from_static(&[0x80; 11]),
        };
        assert_eq!(endless.varint(), Err(CodecError::VarintOverflow));
    }

    #[test]
    fn huge_entry_count_is_refused_before_allocating() {
        // Goal: a tiny frame that declares 2^60 entries is an error, not an
        // attempt to reserve them.
        let mut body = BytesMut::new();
        body.put_u8(TAG_APPEND);
        for field in [1, 2, 3, 0, 0, 0] {
            put_varint(&mut body, field);
        }
        put_varint(&mut body, 1 << 60);
        assert!(matches!(
            decode(body.freeze()),
            Err(CodecError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn huge_data_length_is_refused() {
        let mut body = BytesMut::new();
        body.put_u8(TAG_READ_INDEX);
        for field in [1, 2, 3] {
            put_varint(&mut body, field);
        }
        put_varint(&mut body, u64::MAX);
        body.put_slice(b"abc");
        assert!(decode(body.freeze()).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let envelope = Envelope::new(NodeId::new(1), NodeId::new(2), Term::new(3), Message::TimeoutNow);
        let mut body = BytesMut::new();
        encode(&envelope, &mut body);
        body.put_u8(0);
        assert_eq!(decode(body.freeze()), Err(CodecError::TrailingBytes(1)));
    }

    #[test]
    fn unordered_node_set_is_refused() {
        let mut body = BytesMut::new();
        body.put_u8(TAG_SNAPSHOT);
        for field in [1, 2, 3, 1, 1] {
            put_varint(&mut body, field);
        }
        // voters = {2, 2}
        for field in [2, 2, 2] {
            put_varint(&mut body, field);
        }
        for _ in 0..3 {
            put_varint(&mut body, 0);
        }
        body.put_u8(0);
        assert_eq!(decode(body.freeze()), Err(CodecError::UnorderedSet("voters")));
    }

    #[test]
    fn the_retired_joint_change_kind_decodes_as_a_conf_change() {
        // Goal: a peer of an earlier version sends joint membership changes
        // with entry kind 2; they must arrive as `EntryKind::ConfChange`.
        let entry = Entry::new(
            Term::new(3),
            Index::new(4),
            EntryKind::ConfChange,
            Bytes::from_static(b"abc"),
        );
        let append = Append {
            prev: LogId::new(Term::new(3), Index::new(3)),
            entries: vec![entry],
            commit: Index::new(3),
        };
        let envelope = Envelope::new(
            NodeId::new(1),
            NodeId::new(2),
            Term::new(3),
            Message::Append(append),
        );
        let mut body = BytesMut::new();
        encode(&envelope, &mut body);
        // The entry is last: kind, data length (one varint byte), data.
        let kind_at = body.len() - 5;
        assert_eq!(body[kind_at], EntryKind::ConfChange.code());
        body[kind_at] = 2;
        assert_eq!(decode(body.freeze()), Ok(envelope));
    }

    #[test]
    fn handshake_round_trips_and_checks_magic() {
        let handshake = Handshake {
            version: PROTOCOL_VERSION,
            kind: ConnectionKind::Snapshot,
            cluster_id: 77,
            from: NodeId::new(1),
            to: NodeId::new(2),
            advertised_address: "127.0.0.1:7001".to_string(),
        };
        let mut out = BytesMut::new();
        encode_handshake(&handshake, &mut out);
        assert_eq!(out.len(), handshake.encoded_bytes());
        assert_eq!(decode_handshake(out.clone().freeze()), Ok(handshake.clone()));
        // A declared address length that disagrees with the body is refused.
        let mut short = out.clone();
        short.truncate(out.len() - 1);
        assert!(decode_handshake(short.freeze()).is_err());
        out[0] = b'X';
        assert_eq!(decode_handshake(out.freeze()), Err(CodecError::BadMagic));
        assert!(decode_handshake(Bytes::from_static(b"KEEL")).is_err());
    }

    #[test]
    fn every_handshake_status_round_trips() {
        for status in [
            HandshakeStatus::Accepted,
            HandshakeStatus::UnsupportedVersion,
            HandshakeStatus::WrongCluster,
            HandshakeStatus::WrongNode,
            HandshakeStatus::NotMember,
        ] {
            let mut out = BytesMut::new();
            encode_handshake_reply(status, &mut out);
            assert_eq!(
                decode_handshake_reply(out.freeze()),
                Ok((PROTOCOL_VERSION, status))
            );
        }
    }

    #[test]
    fn framed_encoding_prefixes_the_body_length() {
        let envelope = Envelope::new(NodeId::new(1), NodeId::new(2), Term::new(3), Message::TimeoutNow);
        let mut out = BytesMut::new();
        let body_bytes = encode_framed(&envelope, &mut out);
        assert_eq!(out.len(), FRAME_HEADER_BYTES + body_bytes);
        assert_eq!(
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
            body_bytes
        );
    }
}
