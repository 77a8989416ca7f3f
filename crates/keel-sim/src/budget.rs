//! Budgets: every loop of a run has a bound, and running out of one is a
//! failure of the seed ([`Property::Budget`]) with its replay, never a hang.
//!
//! The fault phase is bounded by its step count (one event per step); the
//! linearizability search by its own step budget. What is left are the
//! loops that run "until quiet" — a node's `Ready` loop and the liveness
//! phase's drains — where a protocol bug (a message storm, a `Ready` that
//! never drains) would otherwise spin for hours. Their budgets count work,
//! not wall-clock time, so a failing seed fails at the same step on every
//! machine and replays exactly.

use crate::checker::{Property, Violation};

/// The most `Ready`s a node hands out after one input. A `Ready` loop that
/// never drains is a bug of the core or of the runtime loop.
pub const READY_ROUNDS_MAX: u64 = 1_000;

/// The most deliveries and disk steps between two ticks of the liveness
/// phase. Above the network's in-flight bound, which the first drain may
/// meet (messages held for a paused node); otherwise a healthy cluster goes
/// quiet within a few hundred (2,000 seeds at 3,000 steps: at most 1,562,
/// on the first drain). Far more without the clock moving is a storm.
pub const QUIET_TICK_WORK_MAX: u64 = 2 * crate::network::IN_FLIGHT_MAX as u64 + 10_000;

/// The most deliveries and disk steps of the whole liveness phase (2,000
/// seeds at 3,000 steps: at most 1,613): a storm spread over many ticks.
pub const LIVENESS_WORK_MAX: u64 = 200_000;

/// Work counted against a limit.
#[derive(Clone, Debug)]
pub struct Budget {
    /// What is being counted, for the failure report.
    name: &'static str,
    spent: u64,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` units of `name`.
    pub fn new(name: &'static str, limit: u64) -> Self {
        Budget {
            name,
            spent: 0,
            limit,
        }
    }

    /// Spends one unit.
    ///
    /// # Errors
    /// A [`Property::Budget`] violation once more than the limit is spent.
    pub fn spend(&mut self) -> Result<(), Violation> {
        self.spent += 1;
        if self.spent > self.limit {
            return Err(Violation::new(
                Property::Budget,
                format!("{} ran out of its budget of {}", self.name, self.limit),
            ));
        }
        Ok(())
    }

    /// Units spent so far.
    pub fn spent(&self) -> u64 {
        self.spent
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spending_past_the_limit_is_a_budget_violation() {
        let mut budget = Budget::new("test work", 2);
        assert!(budget.spend().is_ok() && budget.spend().is_ok());
        assert_eq!(budget.spent(), 2);
        let violation = budget.spend().unwrap_err();
        assert_eq!(violation.property, Property::Budget);
        assert!(violation.detail.contains("test work"), "{}", violation.detail);
    }
}
