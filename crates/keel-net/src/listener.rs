//! The listening side: accepting connections into the unauthenticated
//! budget, judging handshakes against the cluster id and the membership,
//! giving members their slots, and reading members' frames.
//!
//! See [`admission`](crate::admission) for the budgets. Every refusal is
//! logged through the rate limit of [`refusals`](crate::refusals), so that
//! no peer, however it misbehaves, can flood the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use keel::{Envelope, NodeId};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::{debug, info, warn};

use crate::admission::PromoteError;
use crate::codec::{
    self, ConnectionKind, Handshake, HandshakeStatus, FRAME_HEADER_BYTES, HANDSHAKE_BYTES_MAX,
    HANDSHAKE_REPLY_BYTES, PROTOCOL_VERSION,
};
use crate::dial::BoxStream;
use crate::frame::{BufferGauge, FrameError, FrameReader};
use crate::network::{lock, set_peer_address, stopped, Shared, INBOUND_CONNECTIONS_LIMIT};
use crate::refusals::{RefusalKind, Subject};
use crate::stats::count;
use crate::{snapshot, Inbound, NetworkConfig, TlsConfig};

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => admit(&shared, stream, remote),
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin.
                warn!(node = %shared.config.node_id, %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Starts serving a new connection in the unauthenticated budget, closing
/// the oldest unauthenticated connection if the budget is full.
fn admit(shared: &Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    let Ok(task_permit) = shared.inbound_tasks.clone().try_acquire_owned() else {
        shared.log_limited(
            RefusalKind::Overloaded,
            Subject::Address(remote.ip()),
            remote,
            || format!("refusing connection: {INBOUND_CONNECTIONS_LIMIT} inbound connections held"),
        );
        return;
    };
    let unauthenticated_max = shared.config.unauthenticated_connections_max;
    let evicted = lock(&shared.admission).start_handshake(remote, unauthenticated_max, |sequence| {
        let task = serve_inbound(shared.clone(), stream, remote, sequence, task_permit);
        shared.runtime.spawn(task).abort_handle()
    });
    if let Some(evicted) = evicted {
        evicted.handle.abort();
        count(&shared.counters.unauthenticated_evicted);
        let subject = Subject::Address(evicted.remote.ip());
        shared.log_limited(RefusalKind::Evicted, subject, evicted.remote, || {
            format!("closing a connection before its handshake to make room: {unauthenticated_max} unauthenticated connections held (unauthenticated_connections_max)")
        });
    }
}

/// A connection refused, or closed before it belonged to a member.
struct Refusal {
    kind: RefusalKind,
    subject: Subject,
    reason: String,
}

impl Refusal {
    fn malformed(remote: SocketAddr, reason: String) -> Refusal {
        Refusal {
            kind: RefusalKind::Malformed,
            subject: Subject::Address(remote.ip()),
            reason,
        }
    }
}

/// Frees a connection's place in the admission state when its task ends,
/// however it ends (aborted included).
struct Registration {
    shared: Arc<Shared>,
    sequence: u64,
    /// The member slot it holds once its handshake is accepted.
    slot: Option<(NodeId, ConnectionKind)>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.shared.admission).finish(self.sequence, self.slot);
    }
}

/// Runs one inbound connection to its end; every way it ends is logged
/// (refusals through the rate limit).
async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    sequence: u64,
    _task_permit: OwnedSemaphorePermit,
) {
    let mut registration = Registration {
        shared: shared.clone(),
        sequence,
        slot: None,
    };
    let mut shutdown = shared.shutdown.subscribe();
    let timeout = shared.handshake_timeout();
    let accepted = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        accepted = tokio::time::timeout(timeout, handshake(&shared, stream, remote, &mut registration)) => accepted,
    };
    let (mut frames, handshake) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) if refusal.kind == RefusalKind::Evicted => return, // logged by the evictor
        Ok(Err(refusal)) => {
            count(&shared.counters.handshakes_refused);
            shared.log_limited(refusal.kind, refusal.subject, remote, || {
                format!("refusing connection: {}", refusal.reason)
            });
            return;
        }
        Err(_) => {
            count(&shared.counters.handshakes_refused);
            shared.log_limited(
                RefusalKind::Timeout,
                Subject::Address(remote.ip()),
                remote,
                || format!("closing connection: no handshake within {timeout:?}"),
            );
            return;
        }
    };
    debug!(node = %shared.config.node_id, %remote, peer = %handshake.from, kind = ?handshake.kind, "accepted connection");
    // A member may send frames up to the limit; a silent one is let go.
    frames.set_max_frame_bytes(shared.config.max_frame_bytes);
    frames.set_gauge(BufferGauge::new(shared.counters.member_buffered_bytes.clone()));
    frames.set_idle_timeout(shared.inbound_idle_timeout());
    learn_peer_address(&shared, &handshake);
    let result = match handshake.kind {
        ConnectionKind::Messages => receive_messages(&shared, &mut frames, &handshake, &mut shutdown).await,
        ConnectionKind::Snapshot => snapshot::receive(&shared, &mut frames, &handshake, &mut shutdown).await,
    };
    match result {
        Ok(()) => debug!(node = %shared.config.node_id, %remote, peer = %handshake.from, "connection closed"),
        Err(reason) if frames.went_idle() => {
            count(&shared.counters.idle_connections_closed);
            debug!(node = %shared.config.node_id, %remote, peer = %handshake.from, "closing idle connection: {reason}");
        }
        Err(reason) => shared.log_limited(
            RefusalKind::BadInput,
            Subject::Node(handshake.from),
            remote,
            || format!("closing connection from {}: {reason}", handshake.from),
        ),
    }
}

/// TLS (if configured), then the handshake frame, judged, given a member's
/// slot if accepted, and answered.
async fn handshake(
    shared: &Shared,
    tcp: TcpStream,
    remote: SocketAddr,
    registration: &mut Registration,
) -> Result<(FrameReader<BoxStream>, Handshake), Refusal> {
    tcp.set_nodelay(true)
        .map_err(|error| Refusal::malformed(remote, format!("set_nodelay: {error}")))?;
    let (stream, vouched) = accept_tls(shared, tcp)
        .await
        .map_err(|reason| Refusal::malformed(remote, reason))?;
    // Before authentication: a buffer the size of a handshake, counted in
    // the unauthenticated total.
    let mut frames = FrameReader::new(stream, HANDSHAKE_BYTES_MAX as u32);
    frames.set_gauge(BufferGauge::new(
        shared.counters.unauthenticated_buffered_bytes.clone(),
    ));
    let body = match frames.next_frame().await {
        Ok(Some(body)) => body,
        Ok(None) => return Err(Refusal::malformed(remote, "closed before the handshake".into())),
        Err(error) => {
            return Err(Refusal::malformed(
                remote,
                format!("bad handshake frame: {error}"),
            ))
        }
    };
    let handshake = codec::decode_handshake(body)
        .map_err(|error| Refusal::malformed(remote, format!("bad handshake: {error}")))?;
    let mut status = judge(&shared.config, &handshake);
    let mut reason = None;
    if let Some(chain) = &vouched {
        if status == HandshakeStatus::Accepted && !crate::tls::names_node(Some(chain), handshake.from) {
            status = HandshakeStatus::WrongNode;
            reason = Some(format!(
                "node {}'s certificate does not name it ({})",
                handshake.from,
                TlsConfig::node_name(handshake.from)
            ));
        }
    }
    if status == HandshakeStatus::Accepted {
        status = match shared.promote(registration, &handshake, remote) {
            Ok(()) => HandshakeStatus::Accepted,
            Err(PromoteError::NotMember) => HandshakeStatus::NotMember,
            Err(PromoteError::Evicted) => {
                return Err(Refusal {
                    kind: RefusalKind::Evicted,
                    subject: Subject::Address(remote.ip()),
                    reason: String::new(),
                })
            }
        };
    }
    let mut reply = BytesMut::with_capacity(FRAME_HEADER_BYTES + HANDSHAKE_REPLY_BYTES);
    reply.put_u32(HANDSHAKE_REPLY_BYTES as u32);
    codec::encode_handshake_reply(status, &mut reply);
    let written = async {
        frames.stream_mut().write_all(&reply).await?;
        frames.stream_mut().flush().await
    }
    .await;
    if status != HandshakeStatus::Accepted {
        return Err(Refusal {
            kind: refusal_kind(status),
            subject: Subject::Node(handshake.from),
            reason: reason.unwrap_or_else(|| refusal_reason(&shared.config, &handshake, status)),
        });
    }
    written.map_err(|error| Refusal::malformed(remote, format!("handshake reply failed: {error}")))?;
    Ok((frames, handshake))
}

/// The TLS handshake if configured. With node names required, also the
/// dialler's certificate chain, to check against the id it claims.
async fn accept_tls(
    shared: &Shared,
    tcp: TcpStream,
) -> Result<(BoxStream, Option<Vec<CertificateDer<'static>>>), String> {
    let Some(tls) = &shared.tls else {
        return Ok((Box::new(tcp), None));
    };
    let stream = tls
        .acceptor
        .accept(tcp)
        .await
        .map_err(|error| format!("TLS handshake failed: {error}"))?;
    let vouched = tls.require_node_names.then(|| {
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        chain.iter().map(|cert| cert.clone().into_owned()).collect()
    });
    Ok((Box::new(stream), vouched))
}

/// Whether a handshake may open a connection to this node, before the
/// membership is consulted.
fn judge(config: &NetworkConfig, handshake: &Handshake) -> HandshakeStatus {
    if handshake.version != PROTOCOL_VERSION {
        HandshakeStatus::UnsupportedVersion
    } else if handshake.cluster_id != config.cluster_id {
        HandshakeStatus::WrongCluster
    } else if handshake.to != config.node_id
        || handshake.from == NodeId::ZERO
        || handshake.from == config.node_id
    {
        HandshakeStatus::WrongNode
    } else {
        HandshakeStatus::Accepted
    }
}

fn refusal_kind(status: HandshakeStatus) -> RefusalKind {
    match status {
        HandshakeStatus::UnsupportedVersion => RefusalKind::UnsupportedVersion,
        HandshakeStatus::WrongCluster => RefusalKind::WrongCluster,
        HandshakeStatus::WrongNode | HandshakeStatus::Accepted => RefusalKind::WrongNode,
        HandshakeStatus::NotMember => RefusalKind::NotMember,
    }
}

/// What the operator needs to know about a refused handshake.
fn refusal_reason(config: &NetworkConfig, handshake: &Handshake, status: HandshakeStatus) -> String {
    let from = handshake.from;
    match status {
        HandshakeStatus::UnsupportedVersion => format!(
            "node {from} speaks protocol version {}, this node version {PROTOCOL_VERSION}",
            handshake.version
        ),
        HandshakeStatus::WrongCluster => format!(
            "node {from} belongs to cluster {:#018x}, this node to cluster {:#018x}: \
             nodes of different clusters never talk (was one of them founded with other \
             founders or another token, or is an address pointing at the wrong cluster?)",
            handshake.cluster_id, config.cluster_id
        ),
        HandshakeStatus::NotMember => {
            format!("node {from} is not a member as far as this node knows (not added yet, or removed)")
        }
        HandshakeStatus::WrongNode | HandshakeStatus::Accepted => format!(
            "the handshake from node {from} is for node {}, but this is node {}",
            handshake.to, config.node_id
        ),
    }
}

impl Shared {
    /// Gives a connection whose handshake was accepted its member's slot,
    /// closing the connection it replaces.
    fn promote(
        &self,
        registration: &mut Registration,
        handshake: &Handshake,
        remote: SocketAddr,
    ) -> Result<(), PromoteError> {
        let promoted = lock(&self.admission).promote(registration.sequence, handshake.from, handshake.kind);
        let replaced = promoted?;
        registration.slot = Some((handshake.from, handshake.kind));
        if let Some(replaced) = replaced {
            // Outside the lock: the replaced task's end takes it too.
            replaced.handle.abort();
            count(&self.counters.member_connections_replaced);
            self.log_limited(
                RefusalKind::Replaced,
                Subject::Node(handshake.from),
                replaced.remote,
                || {
                    format!(
                        "closing node {}'s {:?} connection: replaced by a newer one from {remote}",
                        handshake.from, handshake.kind
                    )
                },
            );
        }
        Ok(())
    }

    /// Logs a refused or closed connection as a warning, unless the rate
    /// limit leaves it out.
    pub(crate) fn log_limited(
        &self,
        kind: RefusalKind,
        subject: Subject,
        remote: SocketAddr,
        message: impl FnOnce() -> String,
    ) {
        let admitted = lock(&self.refusal_log).admit(kind, subject, Instant::now());
        let Some(left_out) = admitted else {
            count(&self.counters.refusals_suppressed);
            return;
        };
        count(&self.counters.refusals_logged);
        let message = message();
        if left_out == 0 {
            warn!(node = %self.config.node_id, %remote, reason = kind.name(), "{message}");
        } else {
            warn!(node = %self.config.node_id, %remote, reason = kind.name(), left_out, "{message} (and {left_out} similar lines left out)");
        }
    }
}

/// A member this node has no address for (it joined, or was told nothing
/// of the dialler) learns the dialler's advertised address, so it can
/// answer. A known address is never replaced: configuration wins over
/// hearsay. Only members get here, so strangers cannot grow the address
/// book.
fn learn_peer_address(shared: &Arc<Shared>, handshake: &Handshake) {
    if handshake.kind != ConnectionKind::Messages || handshake.advertised_address.is_empty() {
        return;
    }
    let known = lock(&shared.peers).contains_key(&handshake.from);
    if !known {
        info!(node = %shared.config.node_id, peer = %handshake.from, address = %handshake.advertised_address, "learned a member's address from its handshake");
        set_peer_address(shared, handshake.from, handshake.advertised_address.clone());
    }
}

/// Reads message frames until the peer closes; any bad frame ends the
/// connection with the reason.
async fn receive_messages(
    shared: &Shared,
    frames: &mut FrameReader<BoxStream>,
    handshake: &Handshake,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let frame = tokio::select! {
            _ = stopped(shutdown) => return Ok(()),
            frame = frames.next_frame() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) => return Err(frame_error_reason(&error)),
        };
        let envelope = codec::decode(frame).map_err(|error| format!("malformed message: {error}"))?;
        check_route(shared, handshake, &envelope)?;
        tokio::select! {
            _ = stopped(shutdown) => return Ok(()),
            sent = shared.inbound.send(Inbound::Message(envelope)) => {
                if sent.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

pub(crate) fn frame_error_reason(error: &FrameError) -> String {
    match error {
        FrameError::Idle(_) => error.to_string(),
        _ => format!("bad frame: {error}"),
    }
}

/// A message must come from the node that did the handshake and be for us.
pub(crate) fn check_route(shared: &Shared, handshake: &Handshake, envelope: &Envelope) -> Result<(), String> {
    if envelope.from != handshake.from || envelope.to != shared.config.node_id {
        return Err(format!(
            "refusing {} message from {} to {} on a connection from {} to {}",
            envelope.message.kind_name(),
            envelope.from,
            envelope.to,
            handshake.from,
            shared.config.node_id,
        ));
    }
    Ok(())
}
