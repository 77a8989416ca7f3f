//! [`Consistency`]: how fresh a read must be.

/// How fresh a read must be.
///
/// ```no_run
/// # async fn run(node: keel_node::NodeHandle<impl keel_node::StateMachine<Query = ()>>) {
/// use keel_node::Consistency;
/// let answer = node.read((), Consistency::Linearizable).await;
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Linearizable: confirmed by a heartbeat round to a quorum (ReadIndex).
    Linearizable,
    /// Linearizable under a clock assumption: served by the leader within
    /// its lease without a round trip (falls back to `Linearizable`).
    ///
    /// The lease is counted in the leader's ticks (thesis §6.4.1), and
    /// holds only while:
    ///
    /// - **tick rates differ by at most
    ///   [`keel::Config::max_clock_drift_percent`]** (default 10%) between
    ///   any two nodes: the leader shortens its lease by that much, so a
    ///   follower whose clock runs faster still refuses other candidates
    ///   for as long as the lease lasts. Machines whose clocks can drift
    ///   further (or a configured `tick_interval` that differs between
    ///   nodes) break the assumption: use `Linearizable` there.
    /// - **ticks are measured by a monotonic clock**: the raft loop owes
    ///   the core one tick per `tick_interval` elapsed on tokio's monotonic
    ///   [`Instant`](tokio::time::Instant), whether or not its timer fired;
    /// - **pauses are charged**: time during which the loop did not run (a
    ///   process stopped by SIGSTOP, a VM stall, a starved thread) is
    ///   charged as ticks before anything else is handled, and again right
    ///   before each lease read, so a leader paused past its lease refuses
    ///   to serve from it (it steps down, or falls back to a ReadIndex
    ///   round). A pause the monotonic clock does not count is not
    ///   charged: on Linux, `CLOCK_MONOTONIC` stands still while the whole
    ///   machine is suspended, so do not suspend a machine that serves
    ///   lease reads.
    Lease,
    /// Whatever this node has applied, with no round trip: may be stale.
    Stale,
}
