//! Request identity: which life of a node asked, and which of that life's
//! requests it was.
//!
//! A node matches what comes back from the protocol (an applied entry, a
//! ReadIndex answer, a membership change) to the caller waiting for it by
//! the id it gave the request. Ids count from 1 in every life of the node,
//! so a count alone is ambiguous: an entry proposed before a restart and
//! committed after it would answer the new life's request of the same
//! number with the old command's response. Every id therefore carries the
//! node's [`Incarnation`], drawn afresh at each start: nothing proposed or
//! asked in an earlier life can answer a caller of this one.
//!
//! The incarnation is random rather than a counter persisted in the data
//! directory: it costs no write at start, and stays unique when a data
//! directory is restored from a backup or copied (a persisted counter would
//! then hand out numbers a previous life already used). 63 random bits
//! make two lives share one with probability 2⁻⁶³.
//!
//! Encoded, an incarnation always has its top bit set. Logs written before
//! incarnations existed hold `origin | request number` with numbers counted
//! from 1, which never reach 2⁶³: such entries decode as
//! [`Incarnation::LEGACY`], which no live node has, so they answer no one
//! and the log stays readable.

use bytes::{BufMut, Bytes, BytesMut};
use rand_core::{OsRng, RngCore};

/// Set in every encoded incarnation, never in a legacy request number.
const INCARNATION_MARKER: u64 = 1 << 63;

/// One life of a node: from a start to its stop or crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Incarnation(u64);

impl Incarnation {
    /// The life of requests written before ids carried an incarnation.
    pub(crate) const LEGACY: Incarnation = Incarnation(0);

    /// A fresh incarnation from the operating system's entropy source.
    pub(crate) fn draw() -> Result<Self, String> {
        let mut bytes = [0u8; 8];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|error| format!("no entropy for the node's incarnation: {error}"))?;
        Ok(Incarnation(u64::from_le_bytes(bytes) | INCARNATION_MARKER))
    }
}

/// A request's identity within one node: its life and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RequestId {
    pub(crate) incarnation: Incarnation,
    pub(crate) sequence: u64,
}

/// Bytes of an encoded [`RequestId`].
pub(crate) const REQUEST_ID_BYTES: usize = 16;

impl RequestId {
    pub(crate) fn put(&self, buffer: &mut BytesMut) {
        buffer.put_u64_le(self.incarnation.0);
        buffer.put_u64_le(self.sequence);
    }

    /// Reads an id off the front of `data`, legacy (a bare number) or not,
    /// and returns it with the bytes that follow it.
    pub(crate) fn take(data: &[u8]) -> Option<(RequestId, &[u8])> {
        let (first, rest) = take_u64(data)?;
        if first & INCARNATION_MARKER == 0 {
            let legacy = RequestId {
                incarnation: Incarnation::LEGACY,
                sequence: first,
            };
            return Some((legacy, rest));
        }
        let (sequence, rest) = take_u64(rest)?;
        let id = RequestId {
            incarnation: Incarnation(first),
            sequence,
        };
        Some((id, rest))
    }

    /// A read context naming this request.
    pub(crate) fn to_read_context(self) -> Bytes {
        let mut buffer = BytesMut::with_capacity(REQUEST_ID_BYTES);
        self.put(&mut buffer);
        buffer.freeze()
    }

    /// The request a read context names, if it is one of ours: exactly an
    /// id, of this encoding (contexts never reach a disk, so there is no
    /// legacy form to accept).
    pub(crate) fn from_read_context(context: &[u8]) -> Option<RequestId> {
        match RequestId::take(context)? {
            (id, []) if id.incarnation != Incarnation::LEGACY => Some(id),
            _ => None,
        }
    }
}

fn take_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// Hands out this life's request ids.
#[derive(Debug)]
pub(crate) struct RequestIds {
    incarnation: Incarnation,
    last_sequence: u64,
}

impl RequestIds {
    pub(crate) fn new(incarnation: Incarnation) -> Self {
        RequestIds {
            incarnation,
            last_sequence: 0,
        }
    }

    pub(crate) fn next(&mut self) -> RequestId {
        self.last_sequence += 1;
        RequestId {
            incarnation: self.incarnation,
            sequence: self.last_sequence,
        }
    }
}

/// A log entry payload tagged with who proposed it (`origin | request id |
/// command`), so the node that took the request can answer it when it
/// applies the entry.
pub(crate) mod tagged {
    use bytes::{BufMut, Bytes, BytesMut};
    use keel::NodeId;

    use super::{RequestId, REQUEST_ID_BYTES};

    pub(crate) fn encode(origin: NodeId, request: RequestId, command: &[u8]) -> Bytes {
        let mut buffer = BytesMut::with_capacity(8 + REQUEST_ID_BYTES + command.len());
        buffer.put_u64_le(origin.get());
        request.put(&mut buffer);
        buffer.put_slice(command);
        buffer.freeze()
    }

    /// `(origin, request id, command)`, or `None` if too short. The
    /// command shares `data`'s buffer.
    pub(crate) fn decode(data: &Bytes) -> Option<(NodeId, RequestId, Bytes)> {
        let (origin, rest) = super::take_u64(data)?;
        let (request, command) = RequestId::take(rest)?;
        let command = data.slice(data.len() - command.len()..);
        Some((NodeId::new(origin), request, command))
    }
}

#[cfg(test)]
mod tests {
    use keel::NodeId;

    use super::*;

    fn id(incarnation: Incarnation, sequence: u64) -> RequestId {
        RequestId {
            incarnation,
            sequence,
        }
    }

    #[test]
    fn two_lives_never_share_an_incarnation_or_the_legacy_one() {
        let first = Incarnation::draw().unwrap();
        let second = Incarnation::draw().unwrap();
        assert_ne!(first, second);
        assert_ne!(first, Incarnation::LEGACY);
        assert_ne!(second, Incarnation::LEGACY);
    }

    #[test]
    fn an_entry_round_trips_with_its_origin_life_and_number() {
        let life = Incarnation::draw().unwrap();
        let data = tagged::encode(NodeId::new(3), id(life, 7), b"set x");
        let (origin, request, command) = tagged::decode(&data).unwrap();
        assert_eq!(
            (origin, request, &command[..]),
            (NodeId::new(3), id(life, 7), &b"set x"[..])
        );
    }

    #[test]
    fn an_entry_of_the_old_format_decodes_to_the_legacy_life() {
        // `origin | number | command`, as written before incarnations.
        let mut old = BytesMut::new();
        old.put_u64_le(3);
        old.put_u64_le(1);
        old.put_slice(b"set x");
        let (origin, request, command) = tagged::decode(&old.freeze()).unwrap();
        assert_eq!(
            (origin, request, &command[..]),
            (NodeId::new(3), id(Incarnation::LEGACY, 1), &b"set x"[..])
        );
        // ... and so is never the first request of a live node.
        let now = RequestIds::new(Incarnation::draw().unwrap()).next();
        assert_eq!(now.sequence, 1);
        assert_ne!(request, now);
    }

    #[test]
    fn the_same_number_in_two_lives_is_two_requests() {
        let before = RequestIds::new(Incarnation::draw().unwrap()).next();
        let now = RequestIds::new(Incarnation::draw().unwrap()).next();
        assert_eq!(before.sequence, now.sequence);
        assert_ne!(before, now);
    }

    #[test]
    fn read_contexts_name_exactly_one_request_of_one_life() {
        let life = Incarnation::draw().unwrap();
        let context = id(life, 9).to_read_context();
        assert_eq!(RequestId::from_read_context(&context), Some(id(life, 9)));
        // The 8-byte contexts of the old format, or anything else, name none.
        assert_eq!(RequestId::from_read_context(&9u64.to_le_bytes()), None);
        assert_eq!(RequestId::from_read_context(&context[..12]), None);
        assert_eq!(RequestId::from_read_context(b""), None);
    }

    #[test]
    fn a_short_entry_has_no_header() {
        assert!(tagged::decode(&Bytes::from_static(b"short")).is_none());
        let mut cut = BytesMut::new();
        cut.put_u64_le(1);
        cut.put_u64_le(INCARNATION_MARKER | 5);
        assert!(tagged::decode(&cut.freeze()).is_none());
    }
}
