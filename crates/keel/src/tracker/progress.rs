//! What the leader knows about one follower's log.

use std::fmt;

use crate::tracker::Inflights;
use crate::types::Index;

/// How the leader is sending to a follower, as [`PeerStatus::state`]
/// reports it.
///
/// [`PeerStatus::state`]: crate::PeerStatus::state
///
/// ```
/// use keel::{Index, ProgressState};
/// assert_eq!(ProgressState::Probe.to_string(), "probe");
/// assert_eq!(ProgressState::Snapshot { index: Index::new(7) }.to_string(), "snapshot(7)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches; it sends
    /// one append at a time and waits for the answer.
    Probe,
    /// The follower matches; the leader streams appends optimistically
    /// (pipelining), bounded by the inflights window.
    Replicate,
    /// The follower needs a snapshot, which is in flight; nothing else is
    /// sent until it is reported done or failed.
    Snapshot {
        /// The index of the snapshot being sent.
        index: Index,
    },
}

impl fmt::Display for ProgressState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressState::Probe => formatter.write_str("probe"),
            ProgressState::Replicate => formatter.write_str("replicate"),
            ProgressState::Snapshot { index } => write!(formatter, "snapshot({})", index.get()),
        }
    }
}

/// The leader's view of one member's log (the `nextIndex` and `matchIndex`
/// of Figure 2, plus flow control).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The highest index known to match the leader's log and be durable on
    /// the member. Invariant: `matched < next`.
    matched: Index,
    /// The next index to send.
    next: Index,
    state: ProgressState,
    /// In probe state: an append was sent and no answer came yet, so do not
    /// send another before the next heartbeat response.
    probe_sent: bool,
    /// Whether the member was heard from during the current check-quorum
    /// period.
    recent_active: bool,
    /// The highest commit index sent to the member.
    sent_commit: Index,
    inflights: Inflights,
    is_learner: bool,
    /// The member's election priority, as last reported.
    priority: u64,
}

impl Progress {
    pub(crate) fn new(
        next: Index,
        max_inflight_messages: usize,
        max_inflight_bytes: u64,
        is_learner: bool,
    ) -> Self {
        assert!(next > Index::ZERO, "next index starts at 1");
        Progress {
            matched: Index::ZERO,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            sent_commit: Index::ZERO,
            inflights: Inflights::new(max_inflight_messages, max_inflight_bytes),
            is_learner,
            priority: 0,
        }
    }

    /// The highest index known to be replicated to the member.
    pub fn matched(&self) -> Index {
        self.matched
    }

    /// The next index the leader will send.
    pub fn next(&self) -> Index {
        self.next
    }

    /// How the leader sends to the member.
    pub fn state(&self) -> ProgressState {
        self.state
    }

    /// Whether the member was heard from recently.
    pub fn recent_active(&self) -> bool {
        self.recent_active
    }

    /// Whether the member is a learner.
    pub fn is_learner(&self) -> bool {
        self.is_learner
    }

    /// The append messages in flight.
    pub fn inflights(&self) -> &Inflights {
        &self.inflights
    }

    /// The member's election priority, as last reported.
    pub fn priority(&self) -> u64 {
        self.priority
    }

    pub(crate) fn set_priority(&mut self, priority: u64) {
        self.priority = priority;
    }

    pub(crate) fn set_learner(&mut self, is_learner: bool) {
        self.is_learner = is_learner;
    }

    pub(crate) fn set_recent_active(&mut self, active: bool) {
        self.recent_active = active;
    }

    pub(crate) fn sent_commit(&self) -> Index {
        self.sent_commit
    }

    pub(crate) fn set_sent_commit(&mut self, commit: Index) {
        self.sent_commit = self.sent_commit.max(commit);
    }

    /// Whether the leader must not send appends now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, probe from just past it: the follower either has
        // installed it or will reject and back off.
        let next = match self.state {
            ProgressState::Snapshot { index } => (self.matched.next()).max(index.next()),
            _ => self.matched.next(),
        };
        self.reset_state(ProgressState::Probe);
        self.next = next;
    }

    /// The snapshot in flight failed: probe from what the member is known
    /// to have.
    pub(crate) fn abort_snapshot(&mut self) {
        self.reset_state(ProgressState::Probe);
        self.next = self.matched.next();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot {
            index: snapshot_index,
        });
    }

    /// Records that entries up to `last_index` were sent in a message of
    /// `bytes` entry bytes (`last_index < next` for an empty message).
    pub(crate) fn on_entries_sent(&mut self, last_index: Index, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next {
                    self.inflights.add(last_index, bytes);
                    self.next = last_index.next();
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {
                debug_assert!(false, "sending entries to a follower in snapshot state")
            }
        }
    }

    /// The member acknowledged everything up to `index`. Returns whether
    /// that was news (`matched` grew).
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        self.inflights.free_up_to(index);
        updated
    }

    /// The member rejected an append whose previous index was `rejected`,
    /// hinting that its log may match at `hint_index`. Returns whether the
    /// rejection was news (not a stale or duplicated answer).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, hint_index: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // Pipelined appends: only a rejection of what we would send now
            // after `matched` counts; older ones are stale.
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched.next();
            return true;
        }
        // Probe (or snapshot): only the answer to the latest probe counts.
        if self.next.prev() != rejected {
            return false;
        }
        self.next = rejected.min(hint_index.next()).max(self.matched.next());
        self.probe_sent = false;
        true
    }

    /// The member answered a heartbeat: it is alive, so probe again.
    pub(crate) fn resume_probe(&mut self) {
        self.probe_sent = false;
    }

    pub(crate) fn inflights_mut(&mut self) -> &mut Inflights {
        &mut self.inflights
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.matched >= self.next {
            return Err(format!("progress match {} >= next {}", self.matched, self.next));
        }
        if self.state != ProgressState::Replicate && self.inflights.count() != 0 {
            return Err(format!(
                "{} inflights in state {}",
                self.inflights.count(),
                self.state
            ));
        }
        self.inflights.check_invariants()
    }
}
