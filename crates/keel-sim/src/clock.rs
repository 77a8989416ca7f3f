//! Per-node clocks: each node's tick rate (drift) and phase (skew).
//!
//! The world keeps true time in micro-ticks ([`MICROTICKS_PER_TICK`] per
//! tick of the world's clock). A node's clock runs at its own rate and
//! started at its own instant, so nodes tick at different moments and, over
//! a long run, different numbers of times, as real machines do. The
//! runtime of a node charges its core the ticks its clock owes: one at a
//! time while it runs, all at once (`RawNode::tick_by`) after a pause.
//!
//! Arithmetic is integral (parts per million), so a replay is exact on
//! every platform.

use crate::rng::SimRng;

/// True time per world tick, in micro-ticks.
pub const MICROTICKS_PER_TICK: u64 = 1_000_000;

/// A clock rate of exactly one local tick per world tick, in parts per
/// million.
pub const NOMINAL_RATE_PPM: u64 = 1_000_000;

/// How node clock rates are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSpread {
    /// The farthest a rate may be from nominal, in parts per million.
    pub rate_ppm: u64,
    /// Every rate at one end or the other: the worst case of the spread.
    pub extremes: bool,
}

/// One node's clock (its "hardware" clock: it keeps running while the
/// process is paused or down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClock {
    /// Local ticks per million world ticks.
    rate_ppm: u64,
    /// The true time of the clock's tick 0, in micro-ticks: its phase.
    origin_microticks: u64,
}

impl NodeClock {
    /// A clock that ticks exactly with the world, on the world's ticks.
    pub const NOMINAL: NodeClock = NodeClock {
        rate_ppm: NOMINAL_RATE_PPM,
        origin_microticks: 0,
    };

    /// A clock of `rate_ppm` whose tick 0 is at `origin_microticks`.
    ///
    /// # Panics
    /// If the rate is zero (a stopped clock is a pause, not a clock).
    pub fn new(rate_ppm: u64, origin_microticks: u64) -> Self {
        assert!(rate_ppm > 0, "a clock rate must be positive");
        NodeClock {
            rate_ppm,
            origin_microticks,
        }
    }

    /// A clock whose rate is within `spread.rate_ppm` of nominal (at one
    /// end or the other if `spread.extremes`) and whose phase is anywhere
    /// within the first world tick.
    pub fn draw(rng: &mut SimRng, spread: ClockSpread) -> Self {
        let spread_ppm = spread.rate_ppm.min(NOMINAL_RATE_PPM - 1);
        let rate_ppm = if spread.extremes {
            if rng.chance(500_000) {
                NOMINAL_RATE_PPM - spread_ppm
            } else {
                NOMINAL_RATE_PPM + spread_ppm
            }
        } else {
            rng.between(NOMINAL_RATE_PPM - spread_ppm, NOMINAL_RATE_PPM + spread_ppm)
        };
        NodeClock::new(rate_ppm, rng.below(MICROTICKS_PER_TICK))
    }

    /// Local ticks per million world ticks.
    pub fn rate_ppm(&self) -> u64 {
        self.rate_ppm
    }

    /// How many ticks the clock shows at true time `now_microticks`.
    pub fn ticks_at(&self, now_microticks: u64) -> u64 {
        let elapsed = u128::from(now_microticks.saturating_sub(self.origin_microticks));
        let ticks = elapsed * u128::from(self.rate_ppm) / Self::scale();
        ticks as u64
    }

    /// The true time at which the clock shows `tick` (the first instant
    /// with `ticks_at(instant) >= tick`).
    pub fn time_of_tick(&self, tick: u64) -> u64 {
        let elapsed = (u128::from(tick) * Self::scale()).div_ceil(u128::from(self.rate_ppm));
        self.origin_microticks + elapsed as u64
    }

    /// The true time of the clock's next tick after `now_microticks`.
    pub fn next_tick_after(&self, now_microticks: u64) -> u64 {
        self.time_of_tick(self.ticks_at(now_microticks) + 1)
    }

    /// Micro-ticks per world tick times parts per million: the denominator
    /// of a rate applied to a duration.
    fn scale() -> u128 {
        u128::from(MICROTICKS_PER_TICK) * u128::from(NOMINAL_RATE_PPM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nominal_clock_ticks_with_the_world() {
        let clock = NodeClock::NOMINAL;
        assert_eq!(clock.ticks_at(0), 0);
        assert_eq!(clock.ticks_at(MICROTICKS_PER_TICK - 1), 0);
        assert_eq!(clock.ticks_at(7 * MICROTICKS_PER_TICK), 7);
        assert_eq!(clock.time_of_tick(7), 7 * MICROTICKS_PER_TICK);
        assert_eq!(
            clock.next_tick_after(7 * MICROTICKS_PER_TICK),
            8 * MICROTICKS_PER_TICK
        );
    }

    #[test]
    fn tick_times_and_counts_agree_at_any_rate_and_phase() {
        let mut rng = SimRng::new(5);
        for _ in 0..200 {
            let spread = ClockSpread {
                rate_ppm: 400_000,
                extremes: rng.chance(500_000),
            };
            let clock = NodeClock::draw(&mut rng, spread);
            for tick in [1, 2, 17, 1_000, 123_457] {
                let at = clock.time_of_tick(tick);
                assert_eq!(clock.ticks_at(at), tick, "{clock:?} tick {tick}");
                assert_eq!(clock.ticks_at(at - 1), tick - 1, "{clock:?} tick {tick}");
                assert!(clock.next_tick_after(at - 1) == at);
            }
        }
    }

    #[test]
    fn a_faster_clock_owes_more_ticks() {
        let fast = NodeClock::new(1_100_000, 0);
        let slow = NodeClock::new(900_000, 0);
        let later = 100 * MICROTICKS_PER_TICK;
        assert_eq!(fast.ticks_at(later), 110);
        assert_eq!(slow.ticks_at(later), 90);
    }
}
