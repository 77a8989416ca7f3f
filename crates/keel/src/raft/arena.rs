//! Packs the leader's small proposal payloads into shared buffers.
//!
//! A payload handed to `propose` is usually a `Bytes` built from a `Vec`.
//! The first time such a `Bytes` is cloned — and the leader clones every
//! entry, into each follower's message and into storage — the `bytes` crate
//! allocates a reference-count header for it: one allocation per entry, and
//! its free later, on the hottest path of the library. Copying a small
//! payload into a shared chunk instead costs a `memcpy` of the payload, and
//! the caller's buffer is freed at once (while it is still hot in the
//! allocator's cache).
//!
//! A batch is copied in, then sealed: the chunk's filled part is frozen once
//! and each entry gets its slice of it, so the per-entry cost is a copy and
//! a reference-count increment.
//!
//! The price is that entries of neighbouring small proposals share one
//! chunk, which lives until the last of them is dropped. A state machine
//! that keeps entry data for long should copy what it keeps (entries that
//! arrive over the network share their receive buffer in the same way).

use bytes::{Bytes, BytesMut};

use crate::types::Index;

/// Payloads longer than this are kept as given: copying them would cost
/// more than the allocation it saves.
pub(crate) const SMALL_PAYLOAD_BYTES_MAX: usize = 1024;

/// Size of each shared chunk: 16 small entries at the least, and little
/// memory kept alive by one entry that outlives its neighbours.
const CHUNK_BYTES: usize = 16 * 1024;

/// The chunk small payloads are copied into, and the copies not yet sealed.
#[derive(Debug, Default)]
pub(crate) struct PayloadArena {
    /// `chunk[..len]` holds the pending copies, in order; its spare
    /// capacity is where the next one goes.
    chunk: BytesMut,
    /// The entries whose payloads are in `chunk`, with their lengths.
    /// Invariant: the lengths sum to `chunk.len()`; empty between calls.
    pending: Vec<(Index, usize)>,
}

impl PayloadArena {
    /// Whether `data` should be copied in rather than kept.
    pub(crate) fn wants(data: &[u8]) -> bool {
        !data.is_empty() && data.len() <= SMALL_PAYLOAD_BYTES_MAX
    }

    /// Whether `length` more bytes fit before the chunk must be sealed.
    pub(crate) fn has_room(&self, length: usize) -> bool {
        self.chunk.capacity() - self.chunk.len() >= length
    }

    /// Copies the payload of the entry at `index` in. The caller checked
    /// [`PayloadArena::has_room`] (or sealed first).
    pub(crate) fn copy_in(&mut self, index: Index, data: &[u8]) {
        if !self.has_room(data.len()) {
            assert!(
                self.pending.is_empty(),
                "copy_in without room while copies are pending"
            );
            self.chunk = BytesMut::with_capacity(CHUNK_BYTES);
        }
        self.chunk.extend_from_slice(data);
        self.pending.push((index, data.len()));
    }

    /// Freezes the pending copies and yields each entry's payload.
    pub(crate) fn seal(&mut self) -> impl Iterator<Item = (Index, Bytes)> + '_ {
        let frozen = self.chunk.split().freeze();
        let mut start = 0;
        self.pending.drain(..).map(move |(index, length)| {
            let data = frozen.slice(start..start + length);
            start += length;
            (index, data)
        })
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if !self.pending.is_empty() || !self.chunk.is_empty() {
            return Err(format!(
                "{} payload copies ({} bytes) left unsealed",
                self.pending.len(),
                self.chunk.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies `payloads` in as entries 1, 2, ..., sealing whenever the
    /// chunk is full, as the leader does; returns what each entry got.
    fn store_all(arena: &mut PayloadArena, payloads: &[Vec<u8>]) -> Vec<(Index, Bytes)> {
        let mut stored = Vec::new();
        for (position, payload) in payloads.iter().enumerate() {
            assert!(PayloadArena::wants(payload));
            if !arena.has_room(payload.len()) {
                stored.extend(arena.seal());
            }
            arena.copy_in(Index::new(position as u64 + 1), payload);
        }
        stored.extend(arena.seal());
        arena.check_invariants().unwrap();
        stored
    }

    #[test]
    fn sealed_payloads_are_intact_and_in_order_across_chunks() {
        let mut arena = PayloadArena::default();
        let mut payloads = Vec::new();
        for length in [1usize, 7, 100, SMALL_PAYLOAD_BYTES_MAX, 3, 900, 1000] {
            for round in 0..40u8 {
                payloads.push((0..length).map(|at| (at as u8) ^ round).collect::<Vec<u8>>());
            }
        }
        let stored = store_all(&mut arena, &payloads);
        assert_eq!(stored.len(), payloads.len());
        for (position, (index, data)) in stored.iter().enumerate() {
            assert_eq!(index.get(), position as u64 + 1);
            assert_eq!(&data[..], &payloads[position][..]);
        }
    }

    #[test]
    fn neighbouring_payloads_share_a_chunk() {
        let mut arena = PayloadArena::default();
        let stored = store_all(&mut arena, &[vec![1u8; 100], vec![2u8; 100]]);
        // Contiguous in one buffer: the second starts where the first ends.
        assert_eq!(stored[0].1.as_ptr().wrapping_add(100), stored[1].1.as_ptr());
    }

    #[test]
    fn only_small_non_empty_payloads_are_wanted() {
        assert!(!PayloadArena::wants(&[]));
        assert!(PayloadArena::wants(&[0; SMALL_PAYLOAD_BYTES_MAX]));
        assert!(!PayloadArena::wants(&[0; SMALL_PAYLOAD_BYTES_MAX + 1]));
    }
}
