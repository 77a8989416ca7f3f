//! The raft loop's clock: how many ticks the monotonic clock owes the core.
//!
//! The core counts time in ticks, and a leader's lease is a number of its
//! own ticks (thesis §6.4.1). Ticks are therefore *measured*, not counted
//! as timer wake-ups: a timer that fires late — the process was stopped
//! (SIGSTOP), the machine stalled, the thread was not scheduled — skips
//! wake-ups, and a lease counted in wake-ups would outlive the real time
//! it stands for. The loop asks [`TickClock::owed_ticks`] before it handles
//! any input and charges the answer with
//! [`RawNode::tick_by`](keel::RawNode::tick_by); the timer only wakes it.
//!
//! `tokio::time::Instant` is the monotonic clock, so that tests with
//! tokio's paused clock drive it.

use std::time::Duration;

use tokio::time::Instant;

/// Tick `n` falls due `n` tick intervals after the start; a tick is owed
/// once it has fallen due and has not been charged yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickClock {
    started: Instant,
    tick_interval_nanos: u128,
    /// Ticks handed out by `owed_ticks` so far.
    // Invariant: `charged_ticks` <= ticks fallen due at the last `now`.
    charged_ticks: u64,
    next_tick_at: Instant,
}

impl TickClock {
    /// A clock whose first tick falls due one `tick_interval` after
    /// `started`.
    ///
    /// # Panics
    /// If `tick_interval` is zero.
    pub(crate) fn new(started: Instant, tick_interval: Duration) -> Self {
        assert!(!tick_interval.is_zero(), "the tick interval must not be zero");
        TickClock {
            started,
            tick_interval_nanos: tick_interval.as_nanos(),
            charged_ticks: 0,
            next_tick_at: started + tick_interval,
        }
    }

    /// The ticks fallen due by `now` and not yet charged; they count as
    /// charged from here on. Zero when `now` is before the next tick (or
    /// earlier than a `now` already seen: the clock never runs backwards).
    pub(crate) fn owed_ticks(&mut self, now: Instant) -> u64 {
        if now < self.next_tick_at {
            // The common case (woken by an input between two ticks): one
            // comparison, no division.
            return 0;
        }
        let elapsed_nanos = now.saturating_duration_since(self.started).as_nanos();
        let due_ticks = u64::try_from(elapsed_nanos / self.tick_interval_nanos).unwrap_or(u64::MAX);
        let owed = due_ticks.saturating_sub(self.charged_ticks);
        self.charged_ticks = self.charged_ticks.max(due_ticks);
        // The next tick falls due at the next multiple of the interval, so
        // the ticks stay in phase with `started` however late a wake-up is.
        let into_tick_nanos = elapsed_nanos % self.tick_interval_nanos;
        let to_next_tick_nanos = self.tick_interval_nanos - into_tick_nanos;
        self.next_tick_at = now + Duration::from_nanos(u64::try_from(to_next_tick_nanos).unwrap_or(u64::MAX));
        owed
    }

    /// When the next tick falls due: the loop sleeps until then at most.
    pub(crate) fn next_tick_at(&self) -> Instant {
        self.next_tick_at
    }

    /// Every tick handed out so far.
    #[cfg(test)]
    pub(crate) fn charged_ticks(&self) -> u64 {
        self.charged_ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn nothing_is_owed_before_the_first_tick_falls_due() {
        let started = Instant::now();
        let mut clock = TickClock::new(started, TICK);
        assert_eq!(clock.owed_ticks(started), 0);
        assert_eq!(clock.owed_ticks(started + TICK - Duration::from_nanos(1)), 0);
        assert_eq!(clock.next_tick_at(), started + TICK);
        assert_eq!(clock.owed_ticks(started + TICK), 1);
    }

    /// The bug this clock fixes (issue 12, bug 3): a pause of N tick
    /// intervals is N ticks, not the one a late timer wake-up would count.
    #[test]
    fn a_jump_of_n_tick_intervals_is_owed_as_n_ticks_once() {
        let started = Instant::now();
        let mut clock = TickClock::new(started, TICK);
        assert_eq!(clock.owed_ticks(started + TICK), 1);
        let after_pause = started + TICK * 61 + Duration::from_millis(30);
        assert_eq!(clock.owed_ticks(after_pause), 60);
        assert_eq!(clock.owed_ticks(after_pause), 0, "charged once");
        assert_eq!(clock.charged_ticks(), 61);
        // Back in phase with the start, not with the late wake-up.
        assert_eq!(clock.next_tick_at(), started + TICK * 62);
        assert_eq!(clock.owed_ticks(started + TICK * 62), 1);
    }

    #[test]
    fn ticks_are_owed_by_elapsed_time_not_by_calls() {
        let started = Instant::now();
        let mut clock = TickClock::new(started, TICK);
        let mut total = 0;
        // Woken every 30 ms for 10 s: exactly 100 ticks in all.
        for step in 1..=(10_000 / 30) {
            total += clock.owed_ticks(started + Duration::from_millis(30 * step));
        }
        assert_eq!(total, 99, "9.99 s elapsed");
        total += clock.owed_ticks(started + Duration::from_secs(10));
        assert_eq!(total, 100);
    }

    #[test]
    fn a_clock_reading_from_the_past_owes_nothing() {
        let started = Instant::now();
        let mut clock = TickClock::new(started, TICK);
        assert_eq!(clock.owed_ticks(started + TICK * 5), 5);
        assert_eq!(clock.owed_ticks(started + TICK * 2), 0);
        assert_eq!(clock.owed_ticks(started + TICK * 6), 1);
    }
}
