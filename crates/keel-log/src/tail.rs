//! Telling a torn write from damaged synced data at the end of the log.
//!
//! A crash during a write that was never synced leaves the end of the last
//! segment in one of two shapes, because a disk writes whole sectors and a
//! file system never shows data that did not reach it:
//!
//! - **cut short**: the file ends before the record does (the header is
//!   incomplete, or its length runs past the end of the file);
//! - **zero-filled**: the file's new size reached the disk but some of its
//!   sectors did not, and those read back as zeros; or the record's header
//!   stopped before its type byte, which is never zero in a written record
//!   (type 0 does not exist), and nothing after it reached the disk.
//!
//! A record whose full length is present, with no zeroed sector, and whose
//! checksum fails was not torn: its bytes reached the disk and changed
//! afterwards. Cutting it off as a torn write would silently drop a record
//! that was synced, and so possibly acknowledged (a vote, or an entry a
//! leader counted towards a commit). It is corruption. etcd's WAL draws the
//! same line (`isTornEntry`: a checksum failure is torn only if one of the
//! record's sectors is all zeros).
//!
//! One case stays ambiguous: damage that happens to zero a whole sector of
//! the last record (or the record's part of its first or last sector), or
//! its type byte when all its bytes after that are zeros, looks exactly like
//! a zero-filled torn write, and is cut off as one.

use crate::record::{self, HEADER_BYTES};

/// The unit a disk writes atomically; a torn write loses whole sectors.
/// 512 bytes is the smallest sector in use, so page-sized (4 KiB) tears are
/// caught too: their edges are sector edges.
const SECTOR_BYTES: usize = 512;

/// Where a record's type byte sits in its header (after length and checksum).
const TYPE_OFFSET: usize = 8;

/// What the damaged record at the end of the last segment is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DamagedTail {
    /// A write that never fully reached the disk: cut it off.
    Torn,
    /// Synced data that changed afterwards: refuse to open.
    Corrupt(String),
}

/// Classifies the damaged record at `offset` of the last segment's
/// `contents`. The caller has checked that no intact record follows it.
pub(crate) fn classify(contents: &[u8], offset: usize) -> DamagedTail {
    // Invariant (caller): the record at `offset` failed to parse.
    debug_assert!(offset < contents.len());
    let Some(header) = contents.get(offset..offset + HEADER_BYTES) else {
        return DamagedTail::Torn;
    };
    let length_bytes = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let record_end = offset + HEADER_BYTES + length_bytes;
    if record_end > contents.len() {
        if record::is_whole_with_damaged_length(&contents[offset..]) {
            return DamagedTail::Corrupt(
                "the last record's length field is damaged (the whole record is there: its checksum matches \
                 the bytes to the end of the file), so synced data changed; not a torn write"
                    .into(),
            );
        }
        return DamagedTail::Torn;
    }
    if has_zeroed_sector(contents, offset, record_end) || header_stops_before_its_type(contents, offset) {
        return DamagedTail::Torn;
    }
    DamagedTail::Corrupt(format!(
        "the last record ({} bytes) is complete but its checksum does not match, and none of its sectors \
         is zeroed: data that was synced changed afterwards; not a torn write",
        record_end - offset
    ))
}

/// Whether some sector the record `[start, end)` occupies reads as zeros
/// from where the record begins to where the sector (or the file) ends.
///
/// The piece checked runs past the record's end to its sector's end: an
/// unwritten sector is zero throughout, so a record whose last few bytes
/// are zero by chance, followed by more bytes in the same sector, is not
/// taken for a tear.
fn has_zeroed_sector(contents: &[u8], start: usize, end: usize) -> bool {
    let mut sector_start = start / SECTOR_BYTES * SECTOR_BYTES;
    while sector_start < end {
        let piece_start = sector_start.max(start);
        let piece_end = (sector_start + SECTOR_BYTES).min(contents.len());
        if contents[piece_start..piece_end].iter().all(|&byte| byte == 0) {
            return true;
        }
        sector_start += SECTOR_BYTES;
    }
    false
}

/// Whether the record at `start` has a zero type byte and nothing but zeros
/// after it to the end of the file: its header was being written when the
/// data stopped reaching the disk.
fn header_stops_before_its_type(contents: &[u8], start: usize) -> bool {
    contents[start + TYPE_OFFSET..].iter().all(|&byte| byte == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Encoder;
    use keel::{Entry, EntryKind, Index, Term};

    /// A segment of `prefix_bytes` of other data, then one entry record of
    /// `data_bytes` non-zero bytes; returns it and the record's offset.
    fn segment_ending_in_a_record(prefix_bytes: usize, data_bytes: usize) -> (Vec<u8>, usize) {
        let mut contents = vec![0xAB; prefix_bytes];
        let entry = Entry::new(
            Term::new(3),
            Index::new(0x0101_0101),
            EntryKind::Normal,
            vec![0x5A; data_bytes].into(),
        );
        Encoder::new(&mut contents).entry(&entry);
        (contents, prefix_bytes)
    }

    fn is_corrupt(outcome: &DamagedTail) -> bool {
        matches!(outcome, DamagedTail::Corrupt(_))
    }

    #[test]
    fn a_record_cut_short_is_torn() {
        let (contents, offset) = segment_ending_in_a_record(100, 2000);
        for length in [
            offset + 1,
            offset + HEADER_BYTES,
            offset + 600,
            contents.len() - 1,
        ] {
            assert_eq!(
                classify(&contents[..length], offset),
                DamagedTail::Torn,
                "cut at {length}"
            );
        }
    }

    #[test]
    fn a_complete_record_zero_filled_from_any_sector_edge_is_torn() {
        // Goal: every shape the memory file system's zero-filled tears take
        // (a prefix kept up to a sector edge, zeros to the file's length).
        let (contents, offset) = segment_ending_in_a_record(300, 2000);
        let mut edge = offset / SECTOR_BYTES * SECTOR_BYTES;
        while edge < contents.len() {
            let mut torn = contents.clone();
            torn[edge.max(offset)..].fill(0);
            assert_eq!(classify(&torn, offset), DamagedTail::Torn, "zeros from {edge}");
            edge += SECTOR_BYTES;
        }
    }

    #[test]
    fn a_complete_record_with_a_flipped_bit_is_corrupt() {
        let (contents, offset) = segment_ending_in_a_record(300, 2000);
        for position in offset..contents.len() {
            for bit in [0, 7] {
                let mut damaged = contents.clone();
                damaged[position] ^= 1 << bit;
                let outcome = classify(&damaged, offset);
                assert!(
                    is_corrupt(&outcome),
                    "flip of bit {bit} at {position}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn a_header_cut_before_its_type_byte_then_zeros_is_torn() {
        // The length and part of the checksum reached the disk; the type
        // byte and the rest read as zeros.
        let mut contents = vec![0xAB; 100];
        contents.extend_from_slice(&[40, 0, 0, 0, 9, 9]);
        contents.resize(100 + 49, 0);
        assert_eq!(classify(&contents, 100), DamagedTail::Torn);
        // Non-zero bytes after the zero type byte: a damaged written record.
        contents[100 + 20] = 1;
        assert!(is_corrupt(&classify(&contents, 100)));
    }

    #[test]
    fn zero_bytes_that_end_a_record_mid_sector_are_not_a_tear() {
        // The record's own last bytes are zero, but bytes follow it in the
        // same sector: an unwritten sector would be zero throughout.
        let (mut contents, offset) = segment_ending_in_a_record(0, 100);
        let end = contents.len();
        contents[end - 8..].fill(0);
        contents.extend_from_slice(&[0x77; 20]);
        assert!(is_corrupt(&classify(&contents, offset)));
    }
}
