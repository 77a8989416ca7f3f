//! The address book: how to reach each member, replicated through the log
//! (in membership changes' context) and carried in snapshots, so a node
//! that restarts or joins knows every peer.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel::NodeId;

use crate::request::RequestId;

/// How to reach a member, plus whatever the application attaches (for
/// example its client address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The peer-to-peer address (`host:port`).
    pub peer_address: String,
    /// Application data about the member, opaque to keel.
    pub metadata: Bytes,
}

/// Every known member's [`MemberInfo`], by id.
pub type AddressBook = BTreeMap<NodeId, MemberInfo>;

/// Limits that keep a malformed context or snapshot from allocating
/// without bound.
const MEMBERS_MAX: u32 = 4096;
const FIELD_BYTES_MAX: u32 = 64 * 1024;

fn put_members(buffer: &mut BytesMut, members: &AddressBook) {
    buffer.put_u32_le(members.len() as u32);
    for (id, info) in members {
        buffer.put_u64_le(id.get());
        buffer.put_u32_le(info.peer_address.len() as u32);
        buffer.put_slice(info.peer_address.as_bytes());
        buffer.put_u32_le(info.metadata.len() as u32);
        buffer.put_slice(&info.metadata);
    }
}

fn get_u32(data: &mut Bytes) -> Option<u32> {
    (data.remaining() >= 4).then(|| data.get_u32_le())
}

fn get_u64(data: &mut Bytes) -> Option<u64> {
    (data.remaining() >= 8).then(|| data.get_u64_le())
}

fn get_field(data: &mut Bytes) -> Option<Bytes> {
    let length = get_u32(data)?;
    if length > FIELD_BYTES_MAX || data.remaining() < length as usize {
        return None;
    }
    Some(data.split_to(length as usize))
}

fn get_members(data: &mut Bytes) -> Option<AddressBook> {
    let count = get_u32(data)?;
    if count > MEMBERS_MAX {
        return None;
    }
    let mut members = AddressBook::new();
    for _ in 0..count {
        let id = NodeId::new(get_u64(data)?);
        let peer_address = String::from_utf8(get_field(data)?.to_vec()).ok()?;
        let metadata = get_field(data)?;
        members.insert(
            id,
            MemberInfo {
                peer_address,
                metadata,
            },
        );
    }
    Some(members)
}

/// The context of a membership change proposed through a node: who asked
/// (to answer them) and the addresses of the members it adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangeContext {
    pub(crate) origin: NodeId,
    pub(crate) request: RequestId,
    pub(crate) added: AddressBook,
}

impl ChangeContext {
    pub(crate) fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::new();
        buffer.put_u64_le(self.origin.get());
        self.request.put(&mut buffer);
        put_members(&mut buffer, &self.added);
        buffer.freeze()
    }

    /// `None` for a context this node did not write (for example an empty
    /// one from an automatic leave of a joint configuration). A context
    /// logged before ids carried an incarnation decodes with the legacy
    /// one (see [`RequestId::take`]).
    pub(crate) fn decode(mut data: Bytes) -> Option<Self> {
        let origin = NodeId::new(get_u64(&mut data)?);
        let (request, rest) = RequestId::take(&data)?;
        let consumed = data.len() - rest.len();
        data.advance(consumed);
        let added = get_members(&mut data)?;
        Some(ChangeContext {
            origin,
            request,
            added,
        })
    }
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELSNAP";
const SNAPSHOT_VERSION: u32 = 1;

/// The prefix of every snapshot's data: the address book. The state
/// machine's own data follows it.
pub(crate) fn snapshot_prefix(members: &AddressBook) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_slice(SNAPSHOT_MAGIC);
    buffer.put_u32_le(SNAPSHOT_VERSION);
    let mut body = BytesMut::new();
    put_members(&mut body, members);
    buffer.put_u32_le(body.len() as u32);
    buffer.put_slice(&body);
    buffer.freeze()
}

/// Reads the prefix off a snapshot stream, leaving the state machine's
/// data to read.
pub(crate) fn read_snapshot_prefix(reader: &mut dyn Read) -> Result<AddressBook, String> {
    let mut header = [0u8; 16];
    reader
        .read_exact(&mut header)
        .map_err(|error| format!("reading the snapshot header: {error}"))?;
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err("not a keel snapshot".to_string());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unknown snapshot version {version}"));
    }
    let length = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if length > MEMBERS_MAX * (FIELD_BYTES_MAX * 2 + 16) {
        return Err("snapshot address book too large".to_string());
    }
    let mut body = vec![0u8; length as usize];
    reader
        .read_exact(&mut body)
        .map_err(|error| format!("reading the snapshot address book: {error}"))?;
    let mut body = Bytes::from(body);
    let members = get_members(&mut body).ok_or("malformed snapshot address book")?;
    if body.has_remaining() {
        return Err("trailing bytes after the snapshot address book".to_string());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Incarnation, RequestIds};

    fn book() -> AddressBook {
        let mut members = AddressBook::new();
        members.insert(
            NodeId::new(1),
            MemberInfo {
                peer_address: "127.0.0.1:7001".into(),
                metadata: Bytes::from_static(b"client=127.0.0.1:8001"),
            },
        );
        members
    }

    #[test]
    fn change_context_round_trips_and_rejects_garbage() {
        let context = ChangeContext {
            origin: NodeId::new(3),
            request: RequestIds::new(Incarnation::draw().unwrap()).next(),
            added: book(),
        };
        assert_eq!(ChangeContext::decode(context.encode()), Some(context.clone()));
        let encoded = context.encode();
        for cut in 0..encoded.len() {
            assert_eq!(ChangeContext::decode(encoded.slice(..cut)), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_change_context_logged_before_incarnations_decodes_to_the_legacy_life() {
        let mut old = BytesMut::new();
        old.put_u64_le(3);
        old.put_u64_le(42);
        put_members(&mut old, &book());
        let decoded = ChangeContext::decode(old.freeze()).unwrap();
        let legacy = RequestId {
            incarnation: Incarnation::LEGACY,
            sequence: 42,
        };
        assert_eq!(
            decoded,
            ChangeContext {
                origin: NodeId::new(3),
                request: legacy,
                added: book(),
            }
        );
    }

    #[test]
    fn snapshot_prefix_round_trips_and_leaves_the_rest() {
        let mut data = snapshot_prefix(&book()).to_vec();
        data.extend_from_slice(b"state");
        let mut reader = std::io::Cursor::new(data);
        assert_eq!(read_snapshot_prefix(&mut reader).unwrap(), book());
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "state");
        assert!(read_snapshot_prefix(&mut std::io::Cursor::new(b"garbage garbage!".to_vec())).is_err());
    }
}
