//! The on-disk record format.
//!
//! ```text
//! record  = length:u32le  crc:u32le  type:u8  payload[length]
//! crc     = CRC32C(length:u32le ++ type ++ payload)
//! ```
//!
//! The checksum covers the length too, so a flipped length bit is caught as
//! surely as a flipped payload bit. Type 0 is never written: a run of zeros
//! (a file whose size reached the disk before its data) never parses. All
//! integers are little-endian; a `LogId` is `term:u64 index:u64`.

use keel::{ConfState, Entry, EntryKind, HardState, Index, LogId, NodeId, SnapshotMetadata, Term};

/// Bytes before the payload: length, checksum, type.
pub(crate) const HEADER_BYTES: usize = 9;

/// Bytes of an entry record's payload before the entry data: term, index, kind.
pub(crate) const ENTRY_PREFIX_BYTES: usize = 17;

/// The kinds of record in a segment. Each one is applied in order on replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordType {
    /// One log entry.
    Entry = 1,
    /// Entries from `index` on are discarded (a conflicting suffix); the
    /// entries that follow in the same batch replace them.
    Truncate = 2,
    /// The hard state from here on.
    HardState = 3,
    /// The membership from here on.
    ConfState = 4,
    /// The application took a snapshot (`StorageWrite::create_snapshot`).
    Snapshot = 5,
    /// Entries through a `LogId` are discarded.
    Compact = 6,
    /// The log was replaced by a snapshot (`StorageWrite::apply_snapshot`).
    InstallSnapshot = 7,
    /// The first record of every segment: the whole non-entry state, so
    /// older segments can be deleted, and a cross-check on replay.
    Checkpoint = 8,
}

impl RecordType {
    fn from_code(code: u8) -> Option<RecordType> {
        Some(match code {
            1 => RecordType::Entry,
            2 => RecordType::Truncate,
            3 => RecordType::HardState,
            4 => RecordType::ConfState,
            5 => RecordType::Snapshot,
            6 => RecordType::Compact,
            7 => RecordType::InstallSnapshot,
            8 => RecordType::Checkpoint,
            _ => return None,
        })
    }
}

/// The state a segment starts from; see [`RecordType::Checkpoint`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) segment_sequence: u64,
    pub(crate) compacted: LogId,
    pub(crate) last: LogId,
    pub(crate) hard_state: HardState,
    pub(crate) conf_state: ConfState,
    pub(crate) snapshot: SnapshotMetadata,
}

/// An entry record's header fields (the data stays where it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub(crate) term: Term,
    pub(crate) index: Index,
    pub(crate) kind: EntryKind,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Entry(EntryHeader),
    Truncate(Index),
    HardState(HardState),
    ConfState(ConfState),
    Snapshot(SnapshotMetadata),
    Compact(LogId),
    InstallSnapshot(SnapshotMetadata),
    Checkpoint(Checkpoint),
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A record whose checksum matches.
    Valid {
        record_type: u8,
        payload: &'a [u8],
        total_bytes: usize,
    },
    /// The bytes end before the record does.
    Incomplete,
    /// The record is damaged (checksum, type).
    Invalid(&'static str),
}

/// Parses the record at the start of `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Parsed<'_> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Parsed::Incomplete;
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let record_type = header[8];
    if record_type == 0 {
        return Parsed::Invalid("record type 0 (zeroed bytes)");
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + length) else {
        return Parsed::Incomplete;
    };
    if checksum(&header[..4], record_type, payload) != stored_crc {
        return Parsed::Invalid("checksum mismatch");
    }
    Parsed::Valid {
        record_type,
        payload,
        total_bytes: HEADER_BYTES + length,
    }
}

/// Whether `bytes` — from a record's start to the end of its file, fewer
/// than its length field claims — are one whole record whose length field
/// alone is damaged: the checksum matches once the length is taken as the
/// bytes really there. A write cut short never passes this (the checksum
/// covers the length it was written with), so it tells a flipped length bit
/// in synced data from a torn write.
pub(crate) fn is_whole_with_damaged_length(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return false;
    };
    let Ok(actual_length) = u32::try_from(bytes.len() - HEADER_BYTES) else {
        return false;
    };
    let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    checksum(&actual_length.to_le_bytes(), header[8], &bytes[HEADER_BYTES..]) == stored_crc
}

fn checksum(length_bytes: &[u8], record_type: u8, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(length_bytes);
    let crc = crc32c::crc32c_append(crc, &[record_type]);
    crc32c::crc32c_append(crc, payload)
}

/// Decodes a valid record's payload.
pub(crate) fn decode(record_type: u8, payload: &[u8]) -> Result<Record, &'static str> {
    let record_type = RecordType::from_code(record_type).ok_or("unknown record type")?;
    let mut reader = Reader { bytes: payload };
    let record = match record_type {
        RecordType::Entry => {
            let term = Term::new(reader.u64()?);
            let index = Index::new(reader.u64()?);
            let kind = EntryKind::from_code(reader.u8()?).ok_or("unknown entry kind")?;
            // The data is the rest of the payload.
            reader.bytes = &[];
            Record::Entry(EntryHeader { term, index, kind })
        }
        RecordType::Truncate => Record::Truncate(Index::new(reader.u64()?)),
        RecordType::HardState => Record::HardState(reader.hard_state()?),
        RecordType::ConfState => Record::ConfState(reader.conf_state()?),
        RecordType::Snapshot => Record::Snapshot(reader.snapshot_metadata()?),
        RecordType::Compact => Record::Compact(reader.log_id()?),
        RecordType::InstallSnapshot => Record::InstallSnapshot(reader.snapshot_metadata()?),
        RecordType::Checkpoint => Record::Checkpoint(Checkpoint {
            segment_sequence: reader.u64()?,
            compacted: reader.log_id()?,
            last: reader.log_id()?,
            hard_state: reader.hard_state()?,
            conf_state: reader.conf_state()?,
            snapshot: reader.snapshot_metadata()?,
        }),
    };
    if !reader.bytes.is_empty() {
        return Err("trailing bytes after the record's fields");
    }
    Ok(record)
}

/// Decodes the full entry from an entry record's payload.
pub(crate) fn decode_entry(payload: &bytes::Bytes) -> Result<Entry, &'static str> {
    let Record::Entry(header) = decode(RecordType::Entry as u8, payload)? else {
        return Err("not an entry record");
    };
    Ok(Entry::new(
        header.term,
        header.index,
        header.kind,
        payload.slice(ENTRY_PREFIX_BYTES..),
    ))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.bytes.split_at_checked(N).ok_or("record payload too short")?;
        self.bytes = rest;
        head.try_into().map_err(|_| "record payload too short")
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn log_id(&mut self) -> Result<LogId, &'static str> {
        let term = Term::new(self.u64()?);
        let index = Index::new(self.u64()?);
        Ok(LogId::new(term, index))
    }

    fn hard_state(&mut self) -> Result<HardState, &'static str> {
        let term = Term::new(self.u64()?);
        let vote = match self.u64()? {
            0 => None,
            id => Some(NodeId::new(id)),
        };
        let commit = Index::new(self.u64()?);
        Ok(HardState { term, vote, commit })
    }

    fn node_set(&mut self) -> Result<std::collections::BTreeSet<NodeId>, &'static str> {
        let count = self.u32()?;
        if count as usize > self.bytes.len() / 8 {
            return Err("node set count exceeds the record");
        }
        (0..count).map(|_| self.u64().map(NodeId::new)).collect()
    }

    fn conf_state(&mut self) -> Result<ConfState, &'static str> {
        let voters = self.node_set()?;
        let learners = self.node_set()?;
        let voters_outgoing = self.node_set()?;
        let learners_next = self.node_set()?;
        let auto_leave = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err("auto_leave is neither 0 nor 1"),
        };
        ConfState::joint(voters, learners, voters_outgoing, learners_next, auto_leave)
            .map_err(|_| "the membership breaks its invariants")
    }

    fn snapshot_metadata(&mut self) -> Result<SnapshotMetadata, &'static str> {
        Ok(SnapshotMetadata {
            last: self.log_id()?,
            conf_state: self.conf_state()?,
        })
    }
}

/// Appends records to a buffer: each `encode_*` writes one whole record.
pub(crate) struct Encoder<'a> {
    buffer: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(buffer: &'a mut Vec<u8>) -> Self {
        Encoder { buffer }
    }

    /// Writes a record whose payload `write_payload` appends; returns the
    /// record's offset in the buffer and its total length.
    fn record(
        &mut self,
        record_type: RecordType,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) -> (usize, usize) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&[0; HEADER_BYTES]);
        write_payload(self.buffer);
        let payload_length = self.buffer.len() - start - HEADER_BYTES;
        // Entry sizes are checked against this bound before encoding.
        assert!(payload_length <= u32::MAX as usize, "record payload exceeds u32");
        let length_bytes = (payload_length as u32).to_le_bytes();
        let crc = checksum(
            &length_bytes,
            record_type as u8,
            &self.buffer[start + HEADER_BYTES..],
        );
        self.buffer[start..start + 4].copy_from_slice(&length_bytes);
        self.buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.buffer[start + 8] = record_type as u8;
        (start, HEADER_BYTES + payload_length)
    }

    pub(crate) fn entry(&mut self, entry: &Entry) -> (usize, usize) {
        self.record(RecordType::Entry, |buffer| {
            put_u64(buffer, entry.term.get());
            put_u64(buffer, entry.index.get());
            buffer.push(entry.kind.code());
            buffer.extend_from_slice(&entry.data);
        })
    }

    pub(crate) fn truncate(&mut self, from: Index) {
        self.record(RecordType::Truncate, |buffer| put_u64(buffer, from.get()));
    }

    pub(crate) fn hard_state(&mut self, hard_state: &HardState) {
        self.record(RecordType::HardState, |buffer| put_hard_state(buffer, hard_state));
    }

    pub(crate) fn conf_state(&mut self, conf_state: &ConfState) {
        self.record(RecordType::ConfState, |buffer| put_conf_state(buffer, conf_state));
    }

    pub(crate) fn snapshot(&mut self, metadata: &SnapshotMetadata) {
        self.record(RecordType::Snapshot, |buffer| {
            put_snapshot_metadata(buffer, metadata)
        });
    }

    pub(crate) fn compact(&mut self, through: LogId) {
        self.record(RecordType::Compact, |buffer| put_log_id(buffer, through));
    }

    pub(crate) fn install_snapshot(&mut self, metadata: &SnapshotMetadata) {
        self.record(RecordType::InstallSnapshot, |buffer| {
            put_snapshot_metadata(buffer, metadata)
        });
    }

    pub(crate) fn checkpoint(&mut self, checkpoint: &Checkpoint) {
        self.record(RecordType::Checkpoint, |buffer| {
            put_u64(buffer, checkpoint.segment_sequence);
            put_log_id(buffer, checkpoint.compacted);
            put_log_id(buffer, checkpoint.last);
            put_hard_state(buffer, &checkpoint.hard_state);
            put_conf_state(buffer, &checkpoint.conf_state);
            put_snapshot_metadata(buffer, &checkpoint.snapshot);
        });
    }
}

fn put_u64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_log_id(buffer: &mut Vec<u8>, log_id: LogId) {
    put_u64(buffer, log_id.term.get());
    put_u64(buffer, log_id.index.get());
}

fn put_hard_state(buffer: &mut Vec<u8>, hard_state: &HardState) {
    put_u64(buffer, hard_state.term.get());
    put_u64(buffer, hard_state.vote.map_or(0, NodeId::get));
    put_u64(buffer, hard_state.commit.get());
}

fn put_conf_state(buffer: &mut Vec<u8>, conf_state: &ConfState) {
    for set in [
        conf_state.voters(),
        conf_state.learners(),
        conf_state.voters_outgoing(),
        conf_state.learners_next(),
    ] {
        buffer.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for id in set {
            put_u64(buffer, id.get());
        }
    }
    buffer.push(u8::from(conf_state.auto_leave()));
}

fn put_snapshot_metadata(buffer: &mut Vec<u8>, metadata: &SnapshotMetadata) {
    put_log_id(buffer, metadata.last);
    put_conf_state(buffer, &metadata.conf_state);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;

    fn round_trip(encode: impl FnOnce(&mut Encoder<'_>)) -> Record {
        let mut buffer = Vec::new();
        encode(&mut Encoder::new(&mut buffer));
        let Parsed::Valid {
            record_type,
            payload,
            total_bytes,
        } = parse(&buffer)
        else {
            panic!("record does not parse");
        };
        assert_eq!(total_bytes, buffer.len());
        decode(record_type, payload).unwrap()
    }

    #[test]
    fn every_record_type_round_trips() {
        let conf_state = ConfState::joint(
            [1, 2].map(NodeId::new),
            [3].map(NodeId::new),
            [1, 4].map(NodeId::new),
            [4].map(NodeId::new),
            true,
        )
        .unwrap();
        let metadata = SnapshotMetadata {
            last: LogId::new(Term::new(3), Index::new(9)),
            conf_state: conf_state.clone(),
        };
        let hard_state = HardState {
            term: Term::new(5),
            vote: Some(NodeId::new(2)),
            commit: Index::new(4),
        };
        let checkpoint = Checkpoint {
            segment_sequence: 7,
            compacted: LogId::new(Term::new(1), Index::new(2)),
            last: LogId::new(Term::new(4), Index::new(12)),
            hard_state,
            conf_state: conf_state.clone(),
            snapshot: metadata.clone(),
        };
        assert_eq!(
            round_trip(|encoder| encoder.truncate(Index::new(4))),
            Record::Truncate(Index::new(4))
        );
        assert_eq!(
            round_trip(|encoder| encoder.hard_state(&hard_state)),
            Record::HardState(hard_state)
        );
        assert_eq!(
            round_trip(|encoder| encoder.hard_state(&HardState::default())),
            Record::HardState(HardState::default())
        );
        assert_eq!(
            round_trip(|encoder| encoder.conf_state(&conf_state)),
            Record::ConfState(conf_state.clone())
        );
        assert_eq!(
            round_trip(|encoder| encoder.snapshot(&metadata)),
            Record::Snapshot(metadata.clone())
        );
        assert_eq!(
            round_trip(|encoder| encoder.install_snapshot(&metadata)),
            Record::InstallSnapshot(metadata.clone())
        );
        assert_eq!(
            round_trip(|encoder| encoder.compact(metadata.last)),
            Record::Compact(metadata.last)
        );
        assert_eq!(
            round_trip(|encoder| encoder.checkpoint(&checkpoint)),
            Record::Checkpoint(checkpoint)
        );
    }

    #[test]
    fn entry_round_trips_with_its_data() {
        let entry = Entry::new(
            Term::new(2),
            Index::new(8),
            EntryKind::ConfChange,
            Bytes::from_static(b"abc"),
        );
        let mut buffer = Vec::new();
        Encoder::new(&mut buffer).entry(&entry);
        let payload = Bytes::copy_from_slice(&buffer[HEADER_BYTES..]);
        assert_eq!(decode_entry(&payload).unwrap(), entry);
    }

    #[test]
    fn an_entry_of_the_retired_joint_change_kind_reads_as_a_conf_change() {
        // Goal: logs written before the two conf-change kinds merged hold
        // joint changes as kind 2; they must read back as `ConfChange`.
        let mut payload = Vec::new();
        put_u64(&mut payload, 2);
        put_u64(&mut payload, 8);
        payload.push(2);
        payload.extend_from_slice(b"abc");
        let expected = Entry::new(
            Term::new(2),
            Index::new(8),
            EntryKind::ConfChange,
            Bytes::from_static(b"abc"),
        );
        assert_eq!(decode_entry(&Bytes::from(payload)).unwrap(), expected);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let entry = Entry::new(
            Term::new(2),
            Index::new(8),
            EntryKind::Normal,
            Bytes::from_static(b"payload"),
        );
        let mut buffer = Vec::new();
        Encoder::new(&mut buffer).entry(&entry);
        for byte in 0..buffer.len() {
            for bit in 0..8 {
                let mut damaged = buffer.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(parse(&damaged), Parsed::Valid { .. }),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_and_short_buffers_never_parse() {
        assert_eq!(parse(&[0; 64]), Parsed::Invalid("record type 0 (zeroed bytes)"));
        assert_eq!(parse(&[1, 0, 0]), Parsed::Incomplete);
        let mut buffer = Vec::new();
        Encoder::new(&mut buffer).truncate(Index::new(3));
        assert_eq!(parse(&buffer[..buffer.len() - 1]), Parsed::Incomplete);
    }
}
