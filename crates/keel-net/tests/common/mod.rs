//! Helpers shared by the integration tests: nodes on loopback with fast
//! backoff, waiting for inbound events with a deadline, raw handshakes for
//! hostile peers, and capturing the warnings the transport logs.

#![allow(dead_code)] // each test binary uses a subset

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use keel::{Append, Entry, EntryKind, Envelope, Heartbeat, Index, LogId, Message, NodeId, Term};
use keel_net::codec::{self, ConnectionKind, Handshake, HandshakeStatus, PROTOCOL_VERSION};
use keel_net::{Inbound, Network, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

pub const WAIT: Duration = Duration::from_secs(5);

pub fn config(cluster_id: u64, id: u64, dir: &Path) -> NetworkConfig {
    let mut config = NetworkConfig::new(
        cluster_id,
        NodeId::new(id),
        "127.0.0.1:0".parse().expect("loopback address"),
        dir.join(format!("snapshots-{id}")),
    );
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 100;
    config.handshake_timeout_ms = 2_000;
    config
}

pub struct Node {
    pub network: Network,
    pub inbound: mpsc::Receiver<Inbound>,
}

pub async fn start(config: NetworkConfig) -> Node {
    let (sender, inbound) = mpsc::channel(4096);
    let network = Network::start(config, sender).await.expect("network starts");
    Node { network, inbound }
}

impl Node {
    pub fn addr(&self) -> String {
        self.network.local_addr().to_string()
    }

    /// The first event that `want` accepts within `WAIT`, skipping others.
    pub async fn expect<T>(&mut self, mut want: impl FnMut(Inbound) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.inbound.recv())
                .await
                .expect("event within the deadline")
                .expect("inbound channel open");
            if let Some(found) = want(event) {
                return found;
            }
        }
    }

    pub async fn expect_message(&mut self) -> Envelope {
        self.expect(|event| match event {
            Inbound::Message(envelope) => Some(envelope),
            _ => None,
        })
        .await
    }

    pub async fn expect_unreachable(&mut self, peer: u64) {
        self.expect(|event| match event {
            Inbound::Unreachable(id) if id == NodeId::new(peer) => Some(()),
            _ => None,
        })
        .await
    }

    /// Asserts that no message arrives for `quiet`.
    pub async fn expect_no_message(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.inbound.recv()).await {
            if let Some(Inbound::Message(envelope)) = event {
                panic!("unexpected message {envelope:?}");
            }
        }
    }
}

pub fn heartbeat(from: u64, to: u64, commit: u64) -> Envelope {
    Envelope::new(
        NodeId::new(from),
        NodeId::new(to),
        Term::new(1),
        Message::Heartbeat(Heartbeat {
            commit: Index::new(commit),
            read_round: None,
        }),
    )
}

pub fn append(from: u64, to: u64, first_index: u64, count: u64, payload_bytes: usize) -> Envelope {
    let payload = Bytes::from(vec![0xab; payload_bytes]);
    Envelope::new(
        NodeId::new(from),
        NodeId::new(to),
        Term::new(2),
        Message::Append(Append {
            prev: LogId::new(Term::new(2), Index::new(first_index - 1)),
            entries: (first_index..first_index + count)
                .map(|index| {
                    Entry::new(
                        Term::new(2),
                        Index::new(index),
                        EntryKind::Normal,
                        payload.clone(),
                    )
                })
                .collect(),
            commit: Index::new(first_index - 1),
        }),
    )
}

/// Dials `addr` and sends a handshake as node `from` (of `cluster_id`) to
/// node `to`; returns the stream and the listener's answer.
pub async fn raw_handshake(
    addr: &str,
    cluster_id: u64,
    from: u64,
    to: u64,
    kind: ConnectionKind,
) -> (TcpStream, HandshakeStatus) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let handshake = Handshake {
        version: PROTOCOL_VERSION,
        kind,
        cluster_id,
        from: NodeId::new(from),
        to: NodeId::new(to),
        advertised_address: "127.0.0.1:9".to_string(),
    };
    let mut out = BytesMut::new();
    out.put_u32(handshake.encoded_bytes() as u32);
    codec::encode_handshake(&handshake, &mut out);
    stream.write_all(&out).await.expect("write handshake");
    let mut reply = [0u8; 4 + codec::HANDSHAKE_REPLY_BYTES];
    stream.read_exact(&mut reply).await.expect("handshake reply");
    let (_, status) =
        codec::decode_handshake_reply(Bytes::copy_from_slice(&reply[4..])).expect("reply decodes");
    (stream, status)
}

/// Asserts the peer closes the connection within `WAIT`.
pub async fn assert_closed(mut stream: TcpStream) {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "connection still open: {read:?}");
}

/// Whether the peer has closed the connection, without waiting.
pub async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// The lines logged at INFO and above on this thread while the guard
/// lives (a current-thread tokio test runs the transport's tasks on it
/// too), each as `LEVEL field=value ...`.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::registry().with(logs.clone());
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// The warnings so far that contain `needle`.
    pub fn warnings(&self, needle: &str) -> Vec<String> {
        self.containing(&["WARN ", needle])
    }

    /// The lines so far that contain every one of `needles`.
    pub fn containing(&self, needles: &[&str]) -> Vec<String> {
        let lines = self.lines.lock().expect("logs lock");
        lines
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .cloned()
            .collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Logs {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::INFO {
            return;
        }
        let mut line = format!("{level} ");
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                line.push_str(&format!("{}={value:?} ", field.name()));
            },
        );
        self.lines.lock().expect("logs lock").push(line);
    }
}
