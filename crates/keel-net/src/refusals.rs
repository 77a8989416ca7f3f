//! Refused and closed connections, logged at a bounded rate.
//!
//! A stranger that reconnects in a loop must not fill the log: each kind
//! of refusal is logged at most once per [`REFUSAL_LOG_INTERVAL`] per
//! subject (the node id the dialler claimed, or its IP address before it
//! claimed one), and at most [`REFUSAL_LOG_LINES_PER_INTERVAL`] lines per
//! interval in all, so a flood from many ids or addresses still gives a
//! handful of lines. The next line that gets through says how many were
//! left out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use keel::NodeId;

/// How long one subject's refusals of one kind stay out of the log after
/// one was logged.
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Refusal lines per [`REFUSAL_LOG_INTERVAL`], across all subjects.
pub(crate) const REFUSAL_LOG_LINES_PER_INTERVAL: u32 = 8;

/// Subjects remembered at most. With at most
/// [`REFUSAL_LOG_LINES_PER_INTERVAL`] new entries per interval and old ones
/// pruned, the table stays far smaller; this is the hard bound.
const REFUSAL_LOG_SUBJECTS_MAX: usize = 1024;

const _: () = assert!(REFUSAL_LOG_LINES_PER_INTERVAL as usize <= REFUSAL_LOG_SUBJECTS_MAX);

/// Why an inbound connection was refused, or closed before it belonged to
/// a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RefusalKind {
    /// The transport holds as many connections as it ever will.
    Overloaded,
    /// Closed unauthenticated to make room for a newer connection.
    Evicted,
    /// No handshake within `handshake_timeout_ms`.
    Timeout,
    /// TLS failed, or the handshake frame was missing, oversized or malformed.
    Malformed,
    /// Another protocol version.
    UnsupportedVersion,
    /// Another cluster id.
    WrongCluster,
    /// Meant for another node, an invalid id, or a certificate that does
    /// not name the id claimed.
    WrongNode,
    /// Not in this node's membership.
    NotMember,
    /// A member's connection closed on bad input after its handshake.
    BadInput,
    /// A member's connection closed because it opened a newer one.
    Replaced,
}

impl RefusalKind {
    /// The name logged in the `reason` field.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            RefusalKind::Overloaded => "overloaded",
            RefusalKind::Evicted => "evicted",
            RefusalKind::Timeout => "handshake timeout",
            RefusalKind::Malformed => "malformed handshake",
            RefusalKind::UnsupportedVersion => "unsupported version",
            RefusalKind::WrongCluster => "wrong cluster",
            RefusalKind::WrongNode => "wrong node",
            RefusalKind::NotMember => "not a member",
            RefusalKind::BadInput => "bad input",
            RefusalKind::Replaced => "replaced",
        }
    }
}

/// Who a refusal is about: the node id the dialler claimed, or, before it
/// claimed one, its IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    /// The id in the handshake.
    Node(NodeId),
    /// The remote IP address.
    Address(IpAddr),
}

/// Decides which refusals reach the log.
pub(crate) struct RefusalLog {
    last_logged: HashMap<(RefusalKind, Subject), Instant>,
    window_started: Instant,
    lines_in_window: u32,
    suppressed_since_last_line: u64,
}

impl RefusalLog {
    pub(crate) fn new(now: Instant) -> Self {
        RefusalLog {
            last_logged: HashMap::new(),
            window_started: now,
            lines_in_window: 0,
            suppressed_since_last_line: 0,
        }
    }

    /// Whether a refusal of `kind` about `subject` at `now` is logged:
    /// `Some(left_out)` with the number of refusals left out of the log
    /// since the last line, or `None` to leave this one out.
    pub(crate) fn admit(&mut self, kind: RefusalKind, subject: Subject, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.window_started) >= REFUSAL_LOG_INTERVAL {
            self.window_started = now;
            self.lines_in_window = 0;
        }
        let key = (kind, subject);
        let recent = self
            .last_logged
            .get(&key)
            .is_some_and(|last| now.saturating_duration_since(*last) < REFUSAL_LOG_INTERVAL);
        if recent || self.lines_in_window >= REFUSAL_LOG_LINES_PER_INTERVAL {
            self.suppressed_since_last_line += 1;
            return None;
        }
        if self.last_logged.len() >= REFUSAL_LOG_SUBJECTS_MAX {
            self.last_logged
                .retain(|_, last| now.saturating_duration_since(*last) < REFUSAL_LOG_INTERVAL);
        }
        if self.last_logged.len() < REFUSAL_LOG_SUBJECTS_MAX {
            self.last_logged.insert(key, now);
        }
        self.lines_in_window += 1;
        Some(std::mem::take(&mut self.suppressed_since_last_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stranger(id: u64) -> Subject {
        Subject::Node(NodeId::new(id))
    }

    #[test]
    fn one_subject_is_logged_once_per_interval() {
        // Goal: a stranger refused 60,000 times within an interval gives
        // one line; the first line of the next interval counts the rest.
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        assert_eq!(log.admit(RefusalKind::NotMember, stranger(99), start), Some(0));
        for attempt in 1..60_000u32 {
            let now = start + Duration::from_micros(u64::from(attempt) * 100);
            assert_eq!(log.admit(RefusalKind::NotMember, stranger(99), now), None);
        }
        let later = start + REFUSAL_LOG_INTERVAL;
        assert_eq!(
            log.admit(RefusalKind::NotMember, stranger(99), later),
            Some(59_999)
        );
    }

    #[test]
    fn another_kind_or_subject_is_logged_on_its_own() {
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        assert!(log.admit(RefusalKind::NotMember, stranger(99), start).is_some());
        assert!(log
            .admit(RefusalKind::WrongCluster, stranger(99), start)
            .is_some());
        assert!(log.admit(RefusalKind::NotMember, stranger(98), start).is_some());
        let address = Subject::Address(IpAddr::from([10, 0, 0, 1]));
        assert!(log.admit(RefusalKind::Timeout, address, start).is_some());
    }

    #[test]
    fn changing_subjects_still_give_a_handful_of_lines() {
        // Goal: a flood that claims a new id every time is capped by the
        // global budget per interval, and the table stays bounded.
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        let mut lines = 0;
        for id in 1..=60_000u64 {
            let now = start + Duration::from_micros(id * 100);
            if log.admit(RefusalKind::NotMember, stranger(id), now).is_some() {
                lines += 1;
            }
        }
        // 6 s of refusals: one interval.
        assert_eq!(lines, REFUSAL_LOG_LINES_PER_INTERVAL);
        assert!(log.last_logged.len() <= REFUSAL_LOG_SUBJECTS_MAX);
    }
}
