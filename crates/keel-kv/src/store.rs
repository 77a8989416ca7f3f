//! The replicated state machine: an ordered map from UTF-8 keys to byte
//! values, with put, delete and compare-and-set, and snapshots streamed
//! entry by entry.
//!
//! The map sits behind an [`Arc`] so that a snapshot can walk it while the
//! applier keeps applying: a snapshot holds a reference, and the first
//! write after it copies the map only if the snapshot is still being read
//! (copy on write through [`Arc::make_mut`]).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Bound;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel::Index;
use keel_node::{CommandError, RestoreError, StateMachine};

/// The longest key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;

/// The largest value the state machine accepts at all, whatever the
/// server's configured limit: a bound on what a decoded command or a
/// snapshot entry may make this node allocate.
pub const VALUE_BYTES_HARD_MAX: usize = 64 * 1024 * 1024;

/// A change to the map, carried in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` (`None`: removes it) if it holds `expected`
    /// (`None`: if it is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<Bytes>,
        /// The value to set.
        value: Option<Bytes>,
    },
}

/// What applying a [`Command`] returns to the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A put was applied at this index.
    Put {
        /// The entry's index.
        index: u64,
    },
    /// A delete was applied at this index.
    Delete {
        /// The entry's index.
        index: u64,
        /// Whether the key existed.
        deleted: bool,
    },
    /// A compare-and-set was applied at this index.
    Cas {
        /// The entry's index.
        index: u64,
        /// `Ok(())` if the swap happened, else the key's current value.
        outcome: Result<(), Option<Bytes>>,
    },
}

/// A question about the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The value of a key.
    Get(String),
    /// How many keys the map holds.
    Len,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResponse {
    /// The value, `None` if absent.
    Value(Option<Bytes>),
    /// The number of keys.
    Len(u64),
}

/// Why a key is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The key is too long.
    #[error("the key is {0} bytes long; at most {KEY_BYTES_MAX} are allowed")]
    TooLong(usize),
}

/// Checks a key's length.
///
/// # Errors
/// [`KeyError`] for an empty or too long key.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    match key.len() {
        0 => Err(KeyError::Empty),
        length if length > KEY_BYTES_MAX => Err(KeyError::TooLong(length)),
        _ => Ok(()),
    }
}

/// The key-value store.
#[derive(Clone, Debug, Default)]
pub struct KvStore {
    map: Arc<BTreeMap<String, Bytes>>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        KvStore::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

fn put_field(buffer: &mut BytesMut, field: &[u8]) {
    buffer.put_u32_le(field.len() as u32);
    buffer.put_slice(field);
}

fn put_optional(buffer: &mut BytesMut, field: Option<&Bytes>) {
    match field {
        None => buffer.put_u8(ABSENT),
        Some(value) => {
            buffer.put_u8(PRESENT);
            put_field(buffer, value);
        }
    }
}

fn check_value(value: &[u8]) -> Result<(), CommandError> {
    if value.len() > VALUE_BYTES_HARD_MAX {
        return Err(CommandError::new(format!(
            "the value is {} bytes long; at most {VALUE_BYTES_HARD_MAX} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// Reads commands off entry data, never reading past its end.
struct Decoder {
    data: Bytes,
}

impl Decoder {
    fn u8(&mut self) -> Result<u8, CommandError> {
        if self.data.remaining() < 1 {
            return Err(CommandError::new("truncated command"));
        }
        Ok(self.data.get_u8())
    }

    fn field(&mut self, limit: usize) -> Result<Bytes, CommandError> {
        if self.data.remaining() < 4 {
            return Err(CommandError::new("truncated command"));
        }
        let length = self.data.get_u32_le() as usize;
        if length > limit || self.data.remaining() < length {
            return Err(CommandError::new("bad field length in command"));
        }
        Ok(self.data.split_to(length))
    }

    fn key(&mut self) -> Result<String, CommandError> {
        let bytes = self.field(KEY_BYTES_MAX)?;
        let key = String::from_utf8(bytes.to_vec()).map_err(|_| CommandError::new("key is not UTF-8"))?;
        check_key(&key).map_err(|error| CommandError::new(error.to_string()))?;
        Ok(key)
    }

    fn optional(&mut self) -> Result<Option<Bytes>, CommandError> {
        match self.u8()? {
            ABSENT => Ok(None),
            PRESENT => Ok(Some(self.field(VALUE_BYTES_HARD_MAX)?)),
            other => Err(CommandError::new(format!("bad presence flag {other}"))),
        }
    }

    fn finish<T>(self, value: T) -> Result<T, CommandError> {
        if self.data.has_remaining() {
            return Err(CommandError::new("trailing bytes after command"));
        }
        Ok(value)
    }
}

impl StateMachine for KvStore {
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type QueryResponse = QueryResponse;

    fn encode_command(command: &Command) -> Result<Bytes, CommandError> {
        let mut buffer = BytesMut::new();
        match command {
            Command::Put { key, value } => {
                check_key(key).map_err(|error| CommandError::new(error.to_string()))?;
                check_value(value)?;
                buffer.reserve(1 + 8 + key.len() + value.len());
                buffer.put_u8(TAG_PUT);
                put_field(&mut buffer, key.as_bytes());
                put_field(&mut buffer, value);
            }
            Command::Delete { key } => {
                check_key(key).map_err(|error| CommandError::new(error.to_string()))?;
                buffer.put_u8(TAG_DELETE);
                put_field(&mut buffer, key.as_bytes());
            }
            Command::Cas { key, expected, value } => {
                check_key(key).map_err(|error| CommandError::new(error.to_string()))?;
                for field in [expected, value].into_iter().flatten() {
                    check_value(field)?;
                }
                buffer.put_u8(TAG_CAS);
                put_field(&mut buffer, key.as_bytes());
                put_optional(&mut buffer, expected.as_ref());
                put_optional(&mut buffer, value.as_ref());
            }
        }
        Ok(buffer.freeze())
    }

    fn decode_command(data: &[u8]) -> Result<Command, CommandError> {
        let mut decoder = Decoder {
            data: Bytes::copy_from_slice(data),
        };
        match decoder.u8()? {
            TAG_PUT => {
                let key = decoder.key()?;
                let value = decoder.field(VALUE_BYTES_HARD_MAX)?;
                decoder.finish(Command::Put { key, value })
            }
            TAG_DELETE => {
                let key = decoder.key()?;
                decoder.finish(Command::Delete { key })
            }
            TAG_CAS => {
                let key = decoder.key()?;
                let expected = decoder.optional()?;
                let value = decoder.optional()?;
                decoder.finish(Command::Cas { key, expected, value })
            }
            other => Err(CommandError::new(format!("unknown command tag {other}"))),
        }
    }

    fn apply(&mut self, index: Index, command: Command) -> Response {
        let index = index.get();
        let map = Arc::make_mut(&mut self.map);
        match command {
            Command::Put { key, value } => {
                map.insert(key, value);
                Response::Put { index }
            }
            Command::Delete { key } => Response::Delete {
                index,
                deleted: map.remove(&key).is_some(),
            },
            Command::Cas { key, expected, value } => {
                let current = map.get(&key);
                if current != expected.as_ref() {
                    let outcome = Err(current.cloned());
                    return Response::Cas { index, outcome };
                }
                match value {
                    Some(value) => map.insert(key, value),
                    None => map.remove(&key),
                };
                Response::Cas {
                    index,
                    outcome: Ok(()),
                }
            }
        }
    }

    fn query(&self, query: &Query) -> QueryResponse {
        match query {
            Query::Get(key) => QueryResponse::Value(self.map.get(key).cloned()),
            Query::Len => QueryResponse::Len(self.map.len() as u64),
        }
    }

    fn snapshot(&self) -> Box<dyn Read + Send> {
        Box::new(SnapshotReader::new(self.map.clone()))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        self.map = Arc::new(read_snapshot(snapshot)?);
        Ok(())
    }
}

/// Snapshot format: `MAGIC`, then per entry `u32 key length | key | u32
/// value length | value`, then `u32::MAX` as the end marker and the entry
/// count as a `u64`. All integers little-endian.
const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELKV01";
const END_MARKER: u32 = u32::MAX;
/// How much a snapshot reader encodes ahead of its consumer.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// Streams a map as a snapshot, a chunk of entries at a time.
struct SnapshotReader {
    map: Arc<BTreeMap<String, Bytes>>,
    /// The last key encoded; the next chunk starts after it.
    resume_after: Option<String>,
    buffer: Vec<u8>,
    position: usize,
    entries_written: u64,
    finished: bool,
}

impl SnapshotReader {
    fn new(map: Arc<BTreeMap<String, Bytes>>) -> Self {
        SnapshotReader {
            map,
            resume_after: None,
            buffer: SNAPSHOT_MAGIC.to_vec(),
            position: 0,
            entries_written: 0,
            finished: false,
        }
    }

    /// Encodes the next chunk of entries (or the trailer) into the buffer.
    fn refill(&mut self) {
        self.buffer.clear();
        self.position = 0;
        let start = match &self.resume_after {
            None => Bound::Unbounded,
            Some(key) => Bound::Excluded(key.as_str()),
        };
        let mut last = None;
        for (key, value) in self.map.range::<str, _>((start, Bound::Unbounded)) {
            self.buffer.extend_from_slice(&(key.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(key.as_bytes());
            self.buffer.extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(value);
            self.entries_written += 1;
            last = Some(key);
            if self.buffer.len() >= SNAPSHOT_CHUNK_BYTES {
                break;
            }
        }
        match last {
            Some(key) => self.resume_after = Some(key.clone()),
            None => {
                self.buffer.extend_from_slice(&END_MARKER.to_le_bytes());
                self.buffer.extend_from_slice(&self.entries_written.to_le_bytes());
                self.finished = true;
            }
        }
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, output: &mut [u8]) -> io::Result<usize> {
        if self.position == self.buffer.len() {
            if self.finished {
                return Ok(0);
            }
            self.refill();
        }
        let available = &self.buffer[self.position..];
        let count = available.len().min(output.len());
        output[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

fn read_u32(reader: &mut dyn Read) -> Result<u32, RestoreError> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_exact_bytes(reader: &mut dyn Read, length: usize) -> Result<Vec<u8>, RestoreError> {
    let mut bytes = vec![0u8; length];
    reader.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn read_snapshot(reader: &mut dyn Read) -> Result<BTreeMap<String, Bytes>, RestoreError> {
    let magic = read_exact_bytes(reader, SNAPSHOT_MAGIC.len())?;
    if magic != SNAPSHOT_MAGIC {
        return Err(RestoreError::Invalid("not a keel-kv snapshot".to_string()));
    }
    let mut map = BTreeMap::new();
    loop {
        let key_length = read_u32(reader)?;
        if key_length == END_MARKER {
            break;
        }
        if key_length as usize > KEY_BYTES_MAX {
            return Err(RestoreError::Invalid(format!("key length {key_length}")));
        }
        let key = String::from_utf8(read_exact_bytes(reader, key_length as usize)?)
            .map_err(|_| RestoreError::Invalid("a key is not UTF-8".to_string()))?;
        check_key(&key).map_err(|error| RestoreError::Invalid(error.to_string()))?;
        let value_length = read_u32(reader)? as usize;
        if value_length > VALUE_BYTES_HARD_MAX {
            return Err(RestoreError::Invalid(format!("value length {value_length}")));
        }
        let value = Bytes::from(read_exact_bytes(reader, value_length)?);
        if map.insert(key, value).is_some() {
            return Err(RestoreError::Invalid("a key appears twice".to_string()));
        }
    }
    let mut count = [0u8; 8];
    reader.read_exact(&mut count)?;
    if u64::from_le_bytes(count) != map.len() as u64 {
        return Err(RestoreError::Invalid("entry count does not match".to_string()));
    }
    let mut rest = [0u8; 1];
    if reader.read(&mut rest)? != 0 {
        return Err(RestoreError::Invalid(
            "trailing bytes after the snapshot".to_string(),
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.to_string(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    #[test]
    fn commands_round_trip_and_garbage_is_rejected() {
        let commands = [
            put("a", "1"),
            Command::Delete { key: "k".into() },
            Command::Cas {
                key: "c".into(),
                expected: None,
                value: Some(Bytes::from_static(b"x")),
            },
            Command::Cas {
                key: "c".into(),
                expected: Some(Bytes::from_static(b"x")),
                value: None,
            },
        ];
        for command in commands {
            let encoded = KvStore::encode_command(&command).unwrap();
            assert_eq!(KvStore::decode_command(&encoded).unwrap(), command);
            for cut in 0..encoded.len() {
                assert!(KvStore::decode_command(&encoded[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(KvStore::encode_command(&put("", "x")).is_err());
        assert!(KvStore::encode_command(&put(&"k".repeat(1025), "x")).is_err());
        assert!(KvStore::decode_command(&[9, 0, 0]).is_err());
    }

    #[test]
    fn put_delete_and_cas_follow_the_contract() {
        let mut store = KvStore::new();
        assert_eq!(
            store.apply(Index::new(1), put("a", "1")),
            Response::Put { index: 1 }
        );
        let swap = |expected: Option<&'static [u8]>, value: Option<&'static [u8]>| Command::Cas {
            key: "a".into(),
            expected: expected.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
        };
        assert_eq!(
            store.apply(Index::new(2), swap(None, Some(b"2"))),
            Response::Cas {
                index: 2,
                outcome: Err(Some(Bytes::from_static(b"1")))
            }
        );
        assert_eq!(
            store.apply(Index::new(3), swap(Some(b"1"), Some(b"2"))),
            Response::Cas {
                index: 3,
                outcome: Ok(())
            }
        );
        assert_eq!(
            store.apply(Index::new(4), swap(Some(b"2"), None)),
            Response::Cas {
                index: 4,
                outcome: Ok(())
            }
        );
        assert_eq!(store.get("a"), None);
        assert_eq!(
            store.apply(Index::new(5), Command::Delete { key: "a".into() }),
            Response::Delete {
                index: 5,
                deleted: false
            }
        );
    }

    #[test]
    fn snapshots_stream_and_restore_exactly() {
        let mut store = KvStore::new();
        for number in 0..5000u64 {
            store.apply(
                Index::new(number + 1),
                put(&format!("key-{number}"), &"v".repeat(40)),
            );
        }
        let mut reader = store.snapshot();
        // Writes after the snapshot was taken do not show up in it.
        store.apply(Index::new(9999), put("late", "x"));
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        let mut restored = KvStore::new();
        restored.restore(&mut data.as_slice()).unwrap();
        assert_eq!(restored.len(), 5000);
        assert_eq!(restored.get("key-4999").unwrap().len(), 40);
        assert!(restored.get("late").is_none());
        for cut in [0, 7, 8, 100, data.len() - 1] {
            assert!(KvStore::new().restore(&mut &data[..cut]).is_err(), "cut at {cut}");
        }
        let mut empty = Vec::new();
        KvStore::new().snapshot().read_to_end(&mut empty).unwrap();
        let mut restored = KvStore::new();
        restored.restore(&mut empty.as_slice()).unwrap();
        assert!(restored.is_empty());
    }
}
