//! The one random number generator that drives a simulation.
//!
//! Every random choice of a run — which event comes next, which message is
//! lost, how long a node stays down, each node's election-timeout seed —
//! is drawn from one [`SimRng`] seeded by the run's seed, so a seed replays
//! exactly. Probabilities are integers in parts per million, never floats,
//! so that no platform's rounding can change a replay.

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Parts per million: `1_000_000` is certainty.
pub type PartsPerMillion = u32;

/// Certainty, in parts per million.
pub const CERTAIN: PartsPerMillion = 1_000_000;

/// A seeded, reproducible random number generator.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: Xoshiro256PlusPlus,
}

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng {
            inner: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniformly random number in `0..bound`.
    ///
    /// # Panics
    /// If `bound` is zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value to return");
        // Lemire's multiply-shift: unbiased enough for a simulator (the bias
        // is below 2^-32 for the small bounds used here) and branch-free.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A uniformly random number in `low..=high`.
    ///
    /// # Panics
    /// If `low > high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "between({low}, {high}) is empty");
        low + self.below(high - low + 1)
    }

    /// True with probability `chance` parts per million.
    pub fn chance(&mut self, chance: PartsPerMillion) -> bool {
        chance > 0 && self.below(u64::from(CERTAIN)) < u64::from(chance)
    }

    /// An index into a slice of `length` items, or `None` if it is empty.
    pub fn index(&mut self, length: usize) -> Option<usize> {
        (length > 0).then(|| self.below(length as u64) as usize)
    }

    /// A random item of `items`, or `None` if it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        self.index(items.len()).map(|position| &items[position])
    }

    /// Picks a position with probability proportional to its weight, or
    /// `None` if every weight is zero.
    pub fn weighted(&mut self, weights: &[u64]) -> Option<usize> {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut target = self.below(total);
        for (position, weight) in weights.iter().enumerate() {
            if target < *weight {
                return Some(position);
            }
            target -= weight;
        }
        unreachable!("target < total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut first = SimRng::new(7);
        let mut second = SimRng::new(7);
        for _ in 0..1000 {
            let value = first.below(10);
            assert_eq!(value, second.below(10));
            assert!(value < 10);
            let ranged = first.between(3, 5);
            assert_eq!(ranged, second.between(3, 5));
            assert!((3..=5).contains(&ranged));
        }
        assert_ne!(SimRng::new(1).next_u64(), SimRng::new(2).next_u64());
    }

    #[test]
    fn chance_and_weights_follow_their_extremes() {
        let mut rng = SimRng::new(1);
        assert!((0..100).all(|_| rng.chance(CERTAIN)));
        assert!((0..100).all(|_| !rng.chance(0)));
        assert_eq!(rng.weighted(&[0, 0]), None);
        assert!((0..100).all(|_| rng.weighted(&[0, 5, 0]) == Some(1)));
        let ones = (0..10_000).filter(|_| rng.chance(CERTAIN / 2)).count();
        assert!((4_500..5_500).contains(&ones), "{ones} of 10000 at 50%");
    }
}
