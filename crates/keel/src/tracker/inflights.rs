//! The append messages in flight to one follower.

use std::collections::VecDeque;

use crate::types::Index;

/// The unacknowledged append messages sent to one follower, oldest first,
/// each remembered by its last index and its size. Bounded by a message
/// count and a byte total from [`Config`](crate::Config): when either is
/// reached the follower is paused until acknowledgements free room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    /// `(last index, bytes)` per message. Invariant: last indexes strictly
    /// increase front to back; `len() <= max_messages`.
    messages: VecDeque<(Index, u64)>,
    /// Invariant: the sum of the byte sizes in `messages`.
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window holding at most `max_messages` messages and
    /// `max_bytes` bytes.
    pub fn new(max_messages: usize, max_bytes: u64) -> Self {
        Inflights {
            messages: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Records a sent message whose last entry is `last_index`.
    ///
    /// # Panics
    /// If the window is full or `last_index` is not above the newest message
    /// in flight: the caller must check [`Inflights::is_full`] and send in
    /// order.
    pub fn add(&mut self, last_index: Index, bytes: u64) {
        assert!(!self.is_full(), "add to a full inflights window");
        if let Some((newest, _)) = self.messages.back() {
            assert!(last_index > *newest, "inflight {last_index} not after {newest}");
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Forgets every message whose last index is at or below `index`: the
    /// follower has acknowledged them.
    pub fn free_up_to(&mut self, index: Index) {
        while let Some((last_index, bytes)) = self.messages.front().copied() {
            if last_index > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
        if self.messages.is_empty() && self.messages.capacity() > 2 * self.max_messages.min(64) {
            // Give back a window that grew during a burst.
            self.messages.shrink_to(self.max_messages.min(64));
        }
    }

    /// Forgets the oldest message, if any.
    pub fn free_oldest(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    /// Whether no more messages may be sent.
    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    /// The number of messages in flight.
    pub fn count(&self) -> usize {
        self.messages.len()
    }

    /// The bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks the invariants listed on the fields.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let sum: u64 = self.messages.iter().map(|(_, bytes)| bytes).sum();
        if sum != self.bytes {
            return Err(format!("inflight bytes {} != sum {}", self.bytes, sum));
        }
        if self.messages.len() > self.max_messages {
            return Err(format!(
                "{} inflight messages > max {}",
                self.messages.len(),
                self.max_messages
            ));
        }
        let ordered = self
            .messages
            .iter()
            .zip(self.messages.iter().skip(1))
            .all(|(a, b)| a.0 < b.0);
        if !ordered {
            return Err("inflight indexes not increasing".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_acknowledgement_frees_room() {
        let mut inflights = Inflights::new(2, 1000);
        inflights.add(Index::new(5), 100);
        inflights.add(Index::new(9), 100);
        assert!(inflights.is_full());
        inflights.free_up_to(Index::new(5));
        assert!(!inflights.is_full());
        assert_eq!(inflights.count(), 1);
    }

    #[derive(Clone, Debug)]
    enum InflightOperation {
        Add(u64),
        FreeUpTo(u64),
        FreeOldest,
        Reset,
    }

    fn inflight_operation() -> impl Strategy<Value = InflightOperation> {
        prop_oneof![
            4 => (1u64..200).prop_map(InflightOperation::Add),
            2 => (0u64..60).prop_map(InflightOperation::FreeUpTo),
            1 => Just(InflightOperation::FreeOldest),
            1 => Just(InflightOperation::Reset),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The window behaves like a simple queue with count and byte limits.
        #[test]
        fn inflights_behave_like_a_bounded_queue(
            max_messages in 1usize..8,
            max_bytes in 1u64..600,
            operations in proptest::collection::vec(inflight_operation(), 0..80),
        ) {
            let mut inflights = Inflights::new(max_messages, max_bytes);
            let mut model: VecDeque<(u64, u64)> = VecDeque::new();
            let mut next_index = 1u64;
            for operation in operations {
                match operation {
                    InflightOperation::Add(bytes) => {
                        let model_bytes: u64 = model.iter().map(|(_, bytes)| bytes).sum();
                        let full = model.len() >= max_messages || model_bytes >= max_bytes;
                        prop_assert_eq!(inflights.is_full(), full);
                        if !full {
                            inflights.add(Index::new(next_index), bytes);
                            model.push_back((next_index, bytes));
                        }
                        next_index += 1 + bytes % 3;
                    }
                    InflightOperation::FreeUpTo(index) => {
                        inflights.free_up_to(Index::new(index));
                        while model.front().is_some_and(|(last, _)| *last <= index) {
                            model.pop_front();
                        }
                    }
                    InflightOperation::FreeOldest => {
                        inflights.free_oldest();
                        model.pop_front();
                    }
                    InflightOperation::Reset => {
                        inflights.reset();
                        model.clear();
                    }
                }
                prop_assert_eq!(inflights.count(), model.len());
                prop_assert_eq!(inflights.bytes(), model.iter().map(|(_, bytes)| bytes).sum::<u64>());
                // Never more than the limits allow (bytes may overshoot by the
                // last message, which is what lets one large message through).
                prop_assert!(inflights.count() <= max_messages);
                prop_assert!(inflights.check_invariants().is_ok());
            }
        }
    }
}
