//! Quorum arithmetic: pure functions over a configuration and what each
//! voter acknowledged. No state, no IO; property-tested against a naive
//! reference.
//!
//! A *majority configuration* is a set of voters; a *joint configuration* is
//! two of them (incoming and outgoing), and a decision needs a majority of
//! each (§6 of the Raft paper). An empty majority configuration agrees to
//! everything, so a joint configuration with an empty outgoing half behaves
//! exactly like its incoming half.

mod joint;
mod majority;
#[cfg(test)]
mod properties;

pub use joint::JointConfig;
pub use majority::MajorityConfig;
pub(crate) use majority::{quorum_index, STACK_VOTERS};

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteResult {
    /// Not decided yet: the missing votes could still go either way.
    Pending,
    /// A quorum has rejected.
    Lost,
    /// A quorum has granted.
    Won,
}
