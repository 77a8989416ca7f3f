//! Counters of what the listener holds and refuses, for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the transport's listener holds now and has refused since it
/// started: export them as metrics, or check them in
/// tests. Read with [`Network::stats`](crate::Network::stats).
///
/// The buffered bytes are the capacity of the transport's own read
/// buffers; TLS adds up to about one TLS record (16 KiB) per connection in
/// rustls's buffers, not counted here.
///
/// ```no_run
/// # async fn run(network: keel_net::Network) {
/// let stats = network.stats();
/// println!(
///     "{} member connections holding {} bytes; {} handshakes refused",
///     stats.member_connections, stats.member_buffered_bytes, stats.handshakes_refused
/// );
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkStats {
    /// Inbound connections that have not completed the handshake, now: at
    /// most `unauthenticated_connections_max`.
    pub unauthenticated_connections: u64,
    /// Inbound connections from members, now: at most one per member and
    /// connection kind (messages, snapshot).
    pub member_connections: u64,
    /// Bytes of read buffers held by unauthenticated connections, now: at
    /// most `unauthenticated_connections_max` times a handshake frame.
    pub unauthenticated_buffered_bytes: u64,
    /// Bytes of read buffers held by member connections, now.
    pub member_buffered_bytes: u64,
    /// Handshakes refused since start, for any reason (another cluster,
    /// not a member, malformed, too slow, ...).
    pub handshakes_refused: u64,
    /// Unauthenticated connections closed to make room for a newer one
    /// when `unauthenticated_connections_max` were open.
    pub unauthenticated_evicted: u64,
    /// Member connections closed because the same member opened a newer
    /// one of the same kind.
    pub member_connections_replaced: u64,
    /// Member connections closed after `inbound_idle_timeout_ms` without a
    /// byte.
    pub idle_connections_closed: u64,
    /// Refusals written to the log as warnings.
    pub refusals_logged: u64,
    /// Refusals not logged because the log was rate-limited.
    pub refusals_suppressed: u64,
}

/// The live counters behind [`NetworkStats`] (connection counts come from
/// the admission state instead).
#[derive(Default)]
pub(crate) struct Counters {
    /// Shared with the read buffers of unauthenticated connections.
    pub(crate) unauthenticated_buffered_bytes: Arc<AtomicU64>,
    /// Shared with the read buffers of member connections.
    pub(crate) member_buffered_bytes: Arc<AtomicU64>,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) unauthenticated_evicted: AtomicU64,
    pub(crate) member_connections_replaced: AtomicU64,
    pub(crate) idle_connections_closed: AtomicU64,
    pub(crate) refusals_logged: AtomicU64,
    pub(crate) refusals_suppressed: AtomicU64,
}

/// Adds one to a counter (statistics only: no ordering with other memory).
pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counters' values, with the connection counts filled in.
    pub(crate) fn snapshot(&self, unauthenticated_connections: u64, member_connections: u64) -> NetworkStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkStats {
            unauthenticated_connections,
            member_connections,
            unauthenticated_buffered_bytes: read(&self.unauthenticated_buffered_bytes),
            member_buffered_bytes: read(&self.member_buffered_bytes),
            handshakes_refused: read(&self.handshakes_refused),
            unauthenticated_evicted: read(&self.unauthenticated_evicted),
            member_connections_replaced: read(&self.member_connections_replaced),
            idle_connections_closed: read(&self.idle_connections_closed),
            refusals_logged: read(&self.refusals_logged),
            refusals_suppressed: read(&self.refusals_suppressed),
        }
    }
}
