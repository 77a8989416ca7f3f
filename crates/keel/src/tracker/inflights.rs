//! The append messages in flight to one follower.

use std::collections::VecDeque;

use crate::types::Index;

/// The unacknowledged append messages sent to one follower, oldest first,
/// each remembered by its last index and its size. Bounded by a message
/// count and a byte total from [`Config`](crate::Config): when either is
/// reached the follower is paused until acknowledgements free room.
///
/// ```
/// use keel::tracker::Inflights;
/// use keel::Index;
/// let mut inflights = Inflights::new(2, 1000);
/// inflights.add(Index::new(5), 100);
/// inflights.add(Index::new(9), 100);
/// assert!(inflights.is_full());
/// inflights.free_up_to(Index::new(5));
/// assert!(!inflights.is_full());
/// assert_eq!(inflights.count(), 1);
/// ```
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
