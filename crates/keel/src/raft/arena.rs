//! Packs the leader's small proposal payloads into shared buffers.
//!
//! A payload handed to `propose` is usually a `Bytes` built from a `Vec`.
//! The first time such a `Bytes` is cloned — and the leader clones every
//! entry, into each follower's message and into storage — the `bytes` crate
//! allocates a reference-count header for it: one allocation per entry, and
//! its free later, on the hottest path of the library. Copying a small
//! payload into a shared chunk instead costs a `memcpy` of the payload and
//! an atomic increment, and the caller's buffer is freed at once (while it
//! is still hot in the allocator's cache).
//!
//! The price is that entries of neighbouring small proposals share one
//! chunk, which lives until the last of them is dropped. A state machine
//! that keeps entry data for long should copy what it keeps (entries that
//! arrive over the network share their receive buffer in the same way).

use bytes::{Bytes, BytesMut};

/// Payloads longer than this are kept as given: copying them would cost
/// more than the allocation it saves.
pub(crate) const SMALL_PAYLOAD_BYTES_MAX: usize = 1024;

/// Size of each shared chunk: 16 small entries at the least, and little
/// memory kept alive by one entry that outlives its neighbours.
const CHUNK_BYTES: usize = 16 * 1024;

/// The chunk small payloads are currently copied into.
#[derive(Debug, Default)]
pub(crate) struct PayloadArena {
    /// Invariant: `chunk.len() == 0`; its spare capacity is where the next
    /// payload goes.
    chunk: BytesMut,
}

impl PayloadArena {
    /// Returns `data`, or a copy of it in the current chunk if it is small.
    pub(crate) fn store(&mut self, data: Bytes) -> Bytes {
        if data.is_empty() || data.len() > SMALL_PAYLOAD_BYTES_MAX {
            return data;
        }
        if self.chunk.capacity() < data.len() {
            self.chunk = BytesMut::with_capacity(CHUNK_BYTES);
        }
        self.chunk.extend_from_slice(&data);
        let stored = self.chunk.split().freeze();
        debug_assert!(self.chunk.is_empty());
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_are_copied_intact_and_large_ones_kept() {
        let mut arena = PayloadArena::default();
        let mut stored = Vec::new();
        for length in [1usize, 7, 100, SMALL_PAYLOAD_BYTES_MAX, 3, 900, 1000] {
            for round in 0..40u8 {
                let payload: Vec<u8> = (0..length).map(|at| (at as u8) ^ round).collect();
                stored.push((payload.clone(), arena.store(Bytes::from(payload))));
            }
        }
        for (expected, data) in &stored {
            assert_eq!(&data[..], &expected[..]);
        }
        let large = Bytes::from(vec![1u8; SMALL_PAYLOAD_BYTES_MAX + 1]);
        let pointer = large.as_ptr();
        assert_eq!(
            arena.store(large).as_ptr(),
            pointer,
            "large payloads are not copied"
        );
        assert!(arena.store(Bytes::new()).is_empty());
    }

    #[test]
    fn neighbouring_payloads_share_a_chunk() {
        let mut arena = PayloadArena::default();
        let first = arena.store(Bytes::from(vec![1u8; 100]));
        let second = arena.store(Bytes::from(vec![2u8; 100]));
        // Contiguous in one buffer: the second starts where the first ends.
        assert_eq!(first.as_ptr().wrapping_add(100), second.as_ptr());
    }
}
