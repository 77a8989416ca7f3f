//! The trace of a run: a running hash of every event (for the determinism
//! self-check) and a bounded ring of the latest events (printed when a
//! check fails).

use std::collections::VecDeque;
use std::fmt;

use keel::{Envelope, Message, NodeId, Term};

/// A 64-bit running hash over words (FNV-1a's prime with a 64-bit word
/// step). Not cryptographic: it only has to differ when two runs differ.
#[derive(Clone, Copy, Debug)]
pub struct TraceHasher {
    state: u64,
}

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher::new()
    }
}

impl TraceHasher {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        TraceHasher { state: Self::OFFSET }
    }

    /// Mixes one word in.
    pub fn write_u64(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(Self::PRIME).rotate_left(29);
    }

    /// Mixes bytes in.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        // A final avalanche so that nearby states print far apart.
        let mut state = self.state;
        state ^= state >> 33;
        state = state.wrapping_mul(0xff51_afd7_ed55_8ccd);
        state ^= state >> 33;
        state
    }
}

/// One event of a run, as kept in the trace ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// The clock advanced to `tick`.
    Tick {
        /// The new time.
        tick: u64,
    },
    /// A message was delivered.
    Deliver {
        /// Sender.
        from: NodeId,
        /// Recipient.
        to: NodeId,
        /// The sender's term.
        term: Term,
        /// The message kind.
        kind: &'static str,
        /// A short summary of the message's content.
        detail: String,
    },
    /// A message was dropped on delivery (partition, recipient down).
    Drop {
        /// Sender.
        from: NodeId,
        /// Recipient.
        to: NodeId,
        /// The message kind.
        kind: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A node changed role or leader.
    Role {
        /// The node.
        node: NodeId,
        /// Its term.
        term: Term,
        /// The new role and leader.
        detail: String,
    },
    /// A client invoked or completed an operation.
    Client {
        /// A description.
        detail: String,
    },
    /// A fault or a recovery.
    Fault {
        /// A description.
        detail: String,
    },
    /// The asynchronous disk of a node completed a write or an apply.
    Disk {
        /// The node.
        node: NodeId,
        /// A description.
        detail: String,
    },
    /// A phase of the run began.
    Phase {
        /// The phase's name.
        name: &'static str,
    },
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceEvent::Tick { tick } => write!(formatter, "tick {tick}"),
            TraceEvent::Deliver {
                from,
                to,
                term,
                kind,
                detail,
            } => write!(formatter, "deliver {from}->{to} term {term} {kind} {detail}"),
            TraceEvent::Drop {
                from,
                to,
                kind,
                reason,
            } => write!(formatter, "drop {from}->{to} {kind} ({reason})"),
            TraceEvent::Role { node, term, detail } => {
                write!(formatter, "node {node} term {term}: {detail}")
            }
            TraceEvent::Client { detail } => write!(formatter, "client {detail}"),
            TraceEvent::Fault { detail } => write!(formatter, "fault {detail}"),
            TraceEvent::Disk { node, detail } => write!(formatter, "disk {node}: {detail}"),
            TraceEvent::Phase { name } => write!(formatter, "== phase {name}"),
        }
    }
}

/// The last `capacity` events of a run, each with its step number.
#[derive(Clone, Debug)]
pub struct TraceRing {
    capacity: usize,
    events: VecDeque<(u64, TraceEvent)>,
}

impl TraceRing {
    /// A ring that keeps `capacity` events (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        TraceRing {
            capacity,
            events: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    /// Whether events are kept at all; callers skip building them if not.
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Records an event of step `step`, forgetting the oldest beyond capacity.
    pub fn push(&mut self, step: u64, event: TraceEvent) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back((step, event));
    }

    /// The kept events, oldest first, one per line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (step, event) in &self.events {
            text.push_str(&format!("  [{step:>7}] {event}\n"));
        }
        text
    }
}

/// A short description of a message for the trace.
pub(crate) fn describe(message: &Message) -> String {
    match message {
        Message::Append(append) => format!(
            "prev {} entries {} commit {}",
            append.prev,
            append.entries.len(),
            append.commit
        ),
        Message::AppendResponse(response) => format!("{response:?}"),
        Message::Vote(request) => format!(
            "{:?} last {} {:?}",
            request.kind, request.last_log, request.reason
        ),
        Message::VoteResponse(response) => format!("{:?} granted {}", response.kind, response.granted),
        Message::Heartbeat(heartbeat) => {
            format!("commit {} round {:?}", heartbeat.commit, heartbeat.read_round)
        }
        Message::Snapshot(metadata) => format!("last {}", metadata.last),
        _ => String::new(),
    }
}

/// A word summarising a message, for the trace hash.
pub(crate) fn message_word(envelope: &Envelope) -> u64 {
    let detail = match &envelope.message {
        Message::Append(append) => {
            append.prev.index.get() << 20 | (append.entries.len() as u64) << 8 | append.commit.get() & 0xff
        }
        Message::AppendResponse(keel::AppendResponse::Accepted { last_index }) => last_index.get(),
        Message::AppendResponse(keel::AppendResponse::Rejected { rejected, hint }) => {
            rejected.get() << 16 | hint.index.get()
        }
        Message::VoteResponse(response) => u64::from(response.granted),
        Message::Heartbeat(heartbeat) => heartbeat.commit.get(),
        Message::Snapshot(metadata) => metadata.last.index.get(),
        _ => 0,
    };
    detail ^ Term::get(envelope.term) << 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_content() {
        let hash = |words: &[u64]| {
            let mut hasher = TraceHasher::new();
            words.iter().for_each(|word| hasher.write_u64(*word));
            hasher.finish()
        };
        assert_eq!(hash(&[1, 2]), hash(&[1, 2]));
        assert_ne!(hash(&[1, 2]), hash(&[2, 1]));
        assert_ne!(hash(&[0]), hash(&[0, 0]));
        let mut left = TraceHasher::new();
        left.write_bytes(b"abc");
        let mut right = TraceHasher::new();
        right.write_bytes(b"abd");
        assert_ne!(left.finish(), right.finish());
    }

    #[test]
    fn ring_keeps_the_latest_events() {
        let mut ring = TraceRing::new(2);
        for tick in 0..5 {
            ring.push(tick, TraceEvent::Tick { tick });
        }
        let text = ring.render();
        assert!(!text.contains("tick 2\n") && text.contains("tick 3") && text.contains("tick 4"));
        let mut off = TraceRing::new(0);
        off.push(1, TraceEvent::Tick { tick: 1 });
        assert!(off.render().is_empty() && !off.is_enabled());
    }
}
