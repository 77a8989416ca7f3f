//! The sending side: one writer task per peer that dials when there is
//! something to send, batches its queue into writes, and backs off after
//! failures.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keel::{Envelope, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codec::{self, ConnectionKind};
use crate::dial::{BoxStream, ConnectError};
use crate::network::{stopped, Shared};

/// Jittered exponential backoff.
struct Backoff {
    delay_ms_min: u64,
    delay_ms_max: u64,
    delay_ms_next: u64,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    fn new(delay_ms_min: u64, delay_ms_max: u64) -> Self {
        Backoff {
            delay_ms_min,
            delay_ms_max,
            delay_ms_next: delay_ms_min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The next delay: the current step less a random part of up to half of
    /// it; the step then doubles, up to the maximum.
    fn next_delay(&mut self) -> Duration {
        let step = self.delay_ms_next;
        self.delay_ms_next = step.saturating_mul(2).min(self.delay_ms_max);
        self.draws += 1;
        let jitter = self.random.hash_one(self.draws) % (step / 2 + 1);
        Duration::from_millis(step - jitter)
    }

    fn reset(&mut self) {
        self.delay_ms_next = self.delay_ms_min;
    }
}

/// Why a connected writer went back to dialling.
enum Disconnect {
    /// The transport stopped or the peer was removed: end the task.
    Stop,
    /// The connection failed; back off before the next dial.
    Failed,
    /// The listener closed the connection cleanly (its idle timeout, or a
    /// restart); dial again at the next message.
    Closed,
    /// The peer's address changed: dial the new one right away.
    AddressChanged,
}

/// Owns the connection to one peer: dials when there is something to send,
/// batches the queue into writes, and backs off (dropping what arrives
/// meanwhile) after failures.
pub(crate) async fn peer_writer(
    shared: Arc<Shared>,
    id: NodeId,
    mut queue: mpsc::Receiver<Envelope>,
    mut address: watch::Receiver<String>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(
        shared.config.reconnect_backoff_ms_min,
        shared.config.reconnect_backoff_ms_max,
    );
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            next = queue.recv() => match next {
                Some(envelope) => envelope,
                None => return,
            },
        };
        let target = address.borrow_and_update().clone();
        let stream = match shared.connect(&target, id, ConnectionKind::Messages).await {
            Ok(frames) => frames.into_inner(),
            Err(error) => {
                warn!(node = %shared.config.node_id, peer = %id, address = %target, %error, "cannot connect to peer");
                if let ConnectError::Refused(status, _) = &error {
                    shared.report_refused(id, *status);
                }
                shared.report_unreachable(id);
                if !drop_during_backoff(&shared, id, &mut queue, &mut shutdown, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        debug!(node = %shared.config.node_id, peer = %id, address = %target, "connected to peer");
        backoff.reset();
        let connected_at = Instant::now();
        let outcome = write_batches(
            &shared,
            id,
            stream,
            first,
            &mut queue,
            &mut address,
            &mut shutdown,
            &mut batch,
        )
        .await;
        // A connection that served for a while and was closed cleanly was
        // most likely idle (the listener let it go): nothing to back off
        // from. One closed soon after it opened may be a listener refusing
        // us after all, so it backs off like a failure.
        let lived = connected_at.elapsed() >= Duration::from_millis(shared.config.reconnect_backoff_ms_max);
        match outcome {
            Disconnect::Stop => return,
            Disconnect::AddressChanged => {}
            Disconnect::Closed if lived => {}
            Disconnect::Failed | Disconnect::Closed => {
                if !drop_during_backoff(&shared, id, &mut queue, &mut shutdown, backoff.next_delay()).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps for `delay`, dropping (and reporting) every message that arrives
/// meanwhile. Returns false if the task should end.
async fn drop_during_backoff(
    shared: &Shared,
    id: NodeId,
    queue: &mut mpsc::Receiver<Envelope>,
    shutdown: &mut watch::Receiver<bool>,
    delay: Duration,
) -> bool {
    // Whatever is queued was meant for the failed connection: drop it now
    // rather than deliver it stale.
    let mut dropped = false;
    while queue.try_recv().is_ok() {
        dropped = true;
    }
    if dropped {
        shared.report_unreachable(id);
    }
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = stopped(shutdown) => return false,
            next = queue.recv() => match next {
                Some(_) => shared.report_unreachable(id),
                None => return false,
            },
        }
    }
}

/// Writes batches to one connection until it fails or the task must stop.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn write_batches(
    shared: &Shared,
    id: NodeId,
    stream: BoxStream,
    first: Envelope,
    queue: &mut mpsc::Receiver<Envelope>,
    address: &mut watch::Receiver<String>,
    shutdown: &mut watch::Receiver<bool>,
    batch: &mut BytesMut,
) -> Disconnect {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut next = Some(first);
    let mut probe = [0u8; 1];
    loop {
        batch.clear();
        let mut messages = 0usize;
        if let Some(envelope) = next.take() {
            messages += push_frame(shared, id, batch, &envelope);
        }
        while batch.len() < shared.config.batch_bytes_max {
            match queue.try_recv() {
                Ok(envelope) => messages += push_frame(shared, id, batch, &envelope),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let written = async {
                writer.write_all(batch).await?;
                writer.flush().await
            }
            .await;
            if let Err(error) = written {
                warn!(node = %shared.config.node_id, peer = %id, %error, messages, "write to peer failed; dropping the batch");
                shared.report_unreachable(id);
                return Disconnect::Failed;
            }
        }
        tokio::select! {
            _ = stopped(shutdown) => return Disconnect::Stop,
            received = queue.recv() => match received {
                Some(envelope) => next = Some(envelope),
                None => return Disconnect::Stop,
            },
            changed = address.changed() => {
                if changed.is_err() {
                    return Disconnect::Stop;
                }
                info!(node = %shared.config.node_id, peer = %id, "peer address changed; reconnecting");
                return Disconnect::AddressChanged;
            }
            // The listener never writes after the handshake: any readable
            // event is the connection closing (or a broken peer).
            read = reader.read(&mut probe) => {
                match read {
                    Ok(0) => {
                        debug!(node = %shared.config.node_id, peer = %id, "peer closed the connection");
                        return Disconnect::Closed;
                    }
                    Ok(_) => warn!(node = %shared.config.node_id, peer = %id, "peer sent unexpected bytes; reconnecting"),
                    Err(error) => debug!(node = %shared.config.node_id, peer = %id, %error, "connection to peer failed"),
                }
                return Disconnect::Failed;
            }
        }
    }
}

/// Appends one frame to the batch; a message over the frame limit is
/// dropped and reported. Returns the number of messages added (0 or 1).
fn push_frame(shared: &Shared, id: NodeId, batch: &mut BytesMut, envelope: &Envelope) -> usize {
    let start = batch.len();
    let body_bytes = codec::encode_framed(envelope, batch);
    if body_bytes > shared.config.max_frame_bytes as usize {
        batch.truncate(start);
        warn!(
            node = %shared.config.node_id,
            peer = %id,
            kind = envelope.message.kind_name(),
            body_bytes,
            limit = shared.config.max_frame_bytes,
            "dropping a message larger than max_frame_bytes"
        );
        shared.report_unreachable(id);
        return 0;
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        // Goal: each delay lies in [step/2, step], and the step doubles to
        // the maximum, then resets.
        let mut backoff = Backoff::new(100, 1_000);
        for step in [100u64, 200, 400, 800, 1_000, 1_000] {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(delay <= step && delay >= step - step / 2, "{delay} vs {step}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
