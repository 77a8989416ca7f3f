//! The replicated state machine: a key-value register per key, with client
//! sessions for exactly-once application.
//!
//! Commands travel in entry data, tagged with the client and its request
//! number so that a completion can be matched to its invocation. A command
//! can reach the log twice (a forwarded proposal duplicated by the network,
//! a client's retry), so the store remembers each client's latest request
//! and applies a request at most once (Raft thesis §6.3).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

/// A client of the simulated service.
pub type ClientId = u32;
/// A key: the simulator uses a handful, so that operations collide.
pub type Key = u8;
/// A value written by a put or a compare-and-set.
pub type Value = u64;

/// What a client asks the service to do on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Key,
        /// The new value.
        value: Value,
    },
    /// Read `key` (through the log, or by ReadIndex when not logged).
    Get {
        /// The key.
        key: Key,
    },
    /// Set `key` to `new` if it currently holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Key,
        /// The value the key must hold.
        expected: Option<Value>,
        /// The value to set.
        new: Value,
    },
}

impl Operation {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match *self {
            Operation::Put { key, .. } | Operation::Get { key } | Operation::Cas { key, .. } => key,
        }
    }

    /// Whether the operation can change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Operation::Get { .. })
    }
}

/// The result of applying an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put was applied.
    Written,
    /// The value read (`None`: the key is absent).
    Value(Option<Value>),
    /// Whether a compare-and-set took effect.
    CasSucceeded(bool),
}

/// A client's request as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client.
    pub client: ClientId,
    /// The client's request number, increasing per client.
    pub request: u64,
    /// What to do.
    pub operation: Operation,
}

/// Why entry data is not a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data is shorter than its operation needs.
    #[error("command data is truncated")]
    Truncated,
    /// The first byte is not the command marker.
    #[error("command data has a bad marker byte {0:#x}")]
    BadMarker(u8),
    /// The operation tag is unknown.
    #[error("command data has an unknown operation tag {0}")]
    UnknownOperation(u8),
    /// Bytes follow the command.
    #[error("command data has {0} trailing bytes")]
    Trailing(usize),
}

const COMMAND_MARKER: u8 = 0xC7;
const TAG_PUT: u8 = 1;
const TAG_GET: u8 = 2;
const TAG_CAS_ABSENT: u8 = 3;
const TAG_CAS_PRESENT: u8 = 4;
/// The largest encoded command: marker, client, request, tag, key, two values.
const COMMAND_BYTES_MAX: usize = 1 + 4 + 8 + 1 + 1 + 8 + 8;

impl Command {
    /// Encodes the command as entry data.
    pub fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::with_capacity(COMMAND_BYTES_MAX);
        buffer.put_u8(COMMAND_MARKER);
        buffer.put_u32_le(self.client);
        buffer.put_u64_le(self.request);
        match self.operation {
            Operation::Put { key, value } => {
                buffer.put_u8(TAG_PUT);
                buffer.put_u8(key);
                buffer.put_u64_le(value);
            }
            Operation::Get { key } => {
                buffer.put_u8(TAG_GET);
                buffer.put_u8(key);
            }
            Operation::Cas {
                key,
                expected: None,
                new,
            } => {
                buffer.put_u8(TAG_CAS_ABSENT);
                buffer.put_u8(key);
                buffer.put_u64_le(new);
            }
            Operation::Cas {
                key,
                expected: Some(expected),
                new,
            } => {
                buffer.put_u8(TAG_CAS_PRESENT);
                buffer.put_u8(key);
                buffer.put_u64_le(expected);
                buffer.put_u64_le(new);
            }
        }
        debug_assert!(buffer.len() <= COMMAND_BYTES_MAX);
        buffer.freeze()
    }

    /// Decodes entry data written by [`Command::encode`].
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        let mut reader = Reader { data };
        let marker = reader.u8()?;
        if marker != COMMAND_MARKER {
            return Err(DecodeError::BadMarker(marker));
        }
        let client = u32::from_le_bytes(reader.array()?);
        let request = u64::from_le_bytes(reader.array()?);
        let tag = reader.u8()?;
        let key = reader.u8()?;
        let operation = match tag {
            TAG_PUT => Operation::Put {
                key,
                value: reader.u64()?,
            },
            TAG_GET => Operation::Get { key },
            TAG_CAS_ABSENT => Operation::Cas {
                key,
                expected: None,
                new: reader.u64()?,
            },
            TAG_CAS_PRESENT => Operation::Cas {
                key,
                expected: Some(reader.u64()?),
                new: reader.u64()?,
            },
            other => return Err(DecodeError::UnknownOperation(other)),
        };
        if !reader.data.is_empty() {
            return Err(DecodeError::Trailing(reader.data.len()));
        }
        Ok(Command {
            client,
            request,
            operation,
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.data.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.data = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// What applying a command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command took effect (or was a read) and produced `Output`.
    Fresh(Output),
    /// The same request was applied before; this is its recorded output.
    Repeat(Output),
    /// An older request of a client that has since moved on: ignored.
    Superseded,
}

/// The key-value store with client sessions. Cloning it is how snapshots
/// are taken; [`KvStore::digest`] summarises it for convergence checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: BTreeMap<Key, Value>,
    /// Each client's latest applied request and its output.
    sessions: BTreeMap<ClientId, (u64, Output)>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        KvStore::default()
    }

    /// The value of `key`, for reads served outside the log (ReadIndex).
    pub fn get(&self, key: Key) -> Option<Value> {
        self.values.get(&key).copied()
    }

    /// Applies a command once per client request.
    pub fn apply(&mut self, command: &Command) -> Applied {
        if let Some(&(request, output)) = self.sessions.get(&command.client) {
            if command.request == request {
                return Applied::Repeat(output);
            }
            if command.request < request {
                return Applied::Superseded;
            }
        }
        let output = match command.operation {
            Operation::Put { key, value } => {
                self.values.insert(key, value);
                Output::Written
            }
            Operation::Get { key } => Output::Value(self.get(key)),
            Operation::Cas { key, expected, new } => {
                let succeeded = self.get(key) == expected;
                if succeeded {
                    self.values.insert(key, new);
                }
                Output::CasSucceeded(succeeded)
            }
        };
        self.sessions.insert(command.client, (command.request, output));
        Applied::Fresh(output)
    }

    /// A 64-bit summary of the whole store (values and sessions).
    pub fn digest(&self) -> u64 {
        let mut hasher = crate::trace::TraceHasher::new();
        for (key, value) in &self.values {
            hasher.write_u64(u64::from(*key));
            hasher.write_u64(*value);
        }
        for (client, (request, _)) in &self.sessions {
            hasher.write_u64(u64::from(*client));
            hasher.write_u64(*request);
        }
        hasher.finish()
    }
}

/// The context bytes of a ReadIndex request by `client`.
pub(crate) fn read_context(client: ClientId, request: u64) -> Bytes {
    let mut context = Vec::with_capacity(12);
    context.extend_from_slice(&client.to_le_bytes());
    context.extend_from_slice(&request.to_le_bytes());
    Bytes::from(context)
}

/// Decodes [`read_context`].
pub(crate) fn parse_read_context(context: &[u8]) -> Option<(ClientId, u64)> {
    let client = u32::from_le_bytes(context.get(..4)?.try_into().ok()?);
    let request = u64::from_le_bytes(context.get(4..12)?.try_into().ok()?);
    Some((client, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_round_trips_and_bad_data_is_refused() {
        let operations = [
            Operation::Put { key: 2, value: 7 },
            Operation::Get { key: 1 },
            Operation::Cas {
                key: 0,
                expected: None,
                new: 3,
            },
            Operation::Cas {
                key: 4,
                expected: Some(9),
                new: u64::MAX,
            },
        ];
        for operation in operations {
            let command = Command {
                client: 3,
                request: 99,
                operation,
            };
            let data = command.encode();
            assert_eq!(Command::decode(&data), Ok(command));
            assert_eq!(
                Command::decode(&data[..data.len() - 1]),
                Err(DecodeError::Truncated)
            );
        }
        assert_eq!(Command::decode(b""), Err(DecodeError::Truncated));
        assert_eq!(Command::decode(b"x"), Err(DecodeError::BadMarker(b'x')));
        let mut trailing = Command {
            client: 1,
            request: 1,
            operation: Operation::Get { key: 0 },
        }
        .encode()
        .to_vec();
        trailing.push(0);
        assert_eq!(Command::decode(&trailing), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn requests_apply_once_and_cas_compares() {
        let mut store = KvStore::new();
        let command = |request, operation| Command {
            client: 1,
            request,
            operation,
        };
        let cas = Operation::Cas {
            key: 0,
            expected: None,
            new: 5,
        };
        assert_eq!(
            store.apply(&command(1, cas)),
            Applied::Fresh(Output::CasSucceeded(true))
        );
        assert_eq!(
            store.apply(&command(1, cas)),
            Applied::Repeat(Output::CasSucceeded(true))
        );
        assert_eq!(store.get(0), Some(5));
        assert_eq!(
            store.apply(&command(2, cas)),
            Applied::Fresh(Output::CasSucceeded(false))
        );
        assert_eq!(
            store.apply(&command(1, Operation::Put { key: 0, value: 1 })),
            Applied::Superseded
        );
        assert_eq!(store.get(0), Some(5));
        assert_eq!(
            store.apply(&command(3, Operation::Get { key: 0 })),
            Applied::Fresh(Output::Value(Some(5)))
        );
        let copy = store.clone();
        assert_eq!(copy.digest(), store.digest());
        store.apply(&command(4, Operation::Put { key: 1, value: 1 }));
        assert_ne!(copy.digest(), store.digest());
    }
}
