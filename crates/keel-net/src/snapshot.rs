//! Snapshot streaming, each transfer on a connection of its own.
//!
//! After the handshake (kind `Snapshot`) the sender writes one message frame
//! holding the [`keel::Message::Snapshot`] envelope, then data frames, then
//! an end frame:
//!
//! ```text
//! data:  0x00 bytes...            (at most snapshot_chunk_bytes of data)
//! end:   0x01 total_bytes:u64 BE  (the sum of the data frames' bytes)
//! ```
//!
//! The receiver spools the data to a `.partial` file in `snapshot_dir`,
//! checks the total, fsyncs, renames the file to `.snap`, answers with one
//! frame `0x00`, and only then hands the file to the runtime. Anything else
//! (a broken connection, a bad frame, a wrong total, a disk error) removes
//! the partial file and closes the connection, and the sender reports
//! `Failed`. A failed transfer is not resumed: the core asks for a new one,
//! which starts over on a new connection.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use keel::{Envelope, Message, SnapshotOutcome};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::codec::{self, ConnectionKind, Handshake, FRAME_HEADER_BYTES};
use crate::dial::BoxStream;
use crate::frame::FrameReader;
use crate::listener::{check_route, frame_error_reason};
use crate::network::{stopped, Shared};
use crate::Inbound;

const CHUNK_DATA: u8 = 0;
const CHUNK_END: u8 = 1;
const SNAPSHOT_ACCEPTED: u8 = 0;

/// How long the sender waits, after the last byte, for the receiver to
/// fsync and acknowledge.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks read ahead of the socket: bounds the sender's memory to this many
/// chunks.
const CHUNKS_READ_AHEAD: usize = 2;

/// Streams one snapshot and reports the outcome.
pub(crate) async fn send(
    shared: Arc<Shared>,
    address: Option<String>,
    envelope: Envelope,
    data: Box<dyn Read + Send>,
) {
    let to = envelope.to;
    let mut shutdown = shared.shutdown.subscribe();
    let result = match address {
        None => Err("the peer has no address".to_string()),
        Some(address) => tokio::select! {
            _ = stopped(&mut shutdown) => Err("the transport is shutting down".to_string()),
            result = stream(&shared, &address, &envelope, data) => result,
        },
    };
    let outcome = match result {
        Ok(total_bytes) => {
            info!(node = %shared.config.node_id, peer = %to, total_bytes, "snapshot delivered");
            SnapshotOutcome::Delivered
        }
        Err(reason) => {
            warn!(node = %shared.config.node_id, peer = %to, "snapshot transfer failed: {reason}");
            SnapshotOutcome::Failed
        }
    };
    let report = Inbound::SnapshotSent { to, outcome };
    if *shutdown.borrow() {
        let _ = shared.inbound.try_send(report);
        return;
    }
    tokio::select! {
        _ = stopped(&mut shutdown) => {}
        _ = shared.inbound.send(report) => {}
    }
}

/// Connects, sends the message, the data and the end frame, and waits for
/// the acknowledgement. Returns the data size.
async fn stream(
    shared: &Shared,
    address: &str,
    envelope: &Envelope,
    data: Box<dyn Read + Send>,
) -> Result<u64, String> {
    if !matches!(envelope.message, Message::Snapshot(_)) {
        return Err(format!(
            "send_snapshot needs a snapshot message, not {}",
            envelope.message.kind_name()
        ));
    }
    let mut frames = shared
        .connect(address, envelope.to, ConnectionKind::Snapshot)
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let mut head = BytesMut::new();
    codec::encode_framed(envelope, &mut head);
    let connection = frames.stream_mut();
    connection
        .write_all(&head)
        .await
        .map_err(|error| format!("write failed: {error}"))?;

    let (chunks, mut receiver) = mpsc::channel(CHUNKS_READ_AHEAD);
    let chunk_bytes = shared.config.snapshot_chunk_bytes;
    tokio::task::spawn_blocking(move || read_chunks(data, chunk_bytes, chunks));
    let mut total_bytes: u64 = 0;
    while let Some(chunk) = receiver.recv().await {
        let chunk = chunk.map_err(|error| format!("reading the snapshot data failed: {error}"))?;
        write_chunk(connection, CHUNK_DATA, &chunk).await?;
        total_bytes += chunk.len() as u64;
    }
    write_chunk(connection, CHUNK_END, &total_bytes.to_be_bytes()).await?;
    connection
        .flush()
        .await
        .map_err(|error| format!("write failed: {error}"))?;

    frames.set_max_frame_bytes(1);
    let ack = tokio::time::timeout(ACK_TIMEOUT, frames.next_frame())
        .await
        .map_err(|_| format!("no acknowledgement within {ACK_TIMEOUT:?}"))?;
    match ack {
        Ok(Some(ack)) if ack.as_ref() == [SNAPSHOT_ACCEPTED] => Ok(total_bytes),
        Ok(Some(ack)) => Err(format!("receiver refused the snapshot: {ack:?}")),
        Ok(None) => Err("receiver closed the connection before acknowledging".into()),
        Err(error) => Err(format!("waiting for the acknowledgement: {error}")),
    }
}

async fn write_chunk(connection: &mut BoxStream, tag: u8, payload: &[u8]) -> Result<(), String> {
    let mut header = [0u8; FRAME_HEADER_BYTES + 1];
    let body_bytes =
        u32::try_from(payload.len() + 1).map_err(|_| "snapshot chunk larger than 4 GiB".to_string())?;
    header[..FRAME_HEADER_BYTES].copy_from_slice(&body_bytes.to_be_bytes());
    header[FRAME_HEADER_BYTES] = tag;
    let written = async {
        connection.write_all(&header).await?;
        connection.write_all(payload).await
    }
    .await;
    written.map_err(|error| format!("write failed: {error}"))
}

/// Reads `data` to its end in chunks (on a blocking thread), stopping early
/// if the sender gave up.
fn read_chunks(
    mut data: Box<dyn Read + Send>,
    chunk_bytes: usize,
    chunks: mpsc::Sender<std::io::Result<Bytes>>,
) {
    loop {
        let mut chunk = vec![0u8; chunk_bytes];
        let mut filled = 0;
        while filled < chunk_bytes {
            match data.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let _ = chunks.blocking_send(Err(error));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        chunk.truncate(filled);
        if chunks.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return;
        }
        if filled < chunk_bytes {
            return;
        }
    }
}

/// Receives one snapshot on an accepted connection and hands it over.
pub(crate) async fn receive(
    shared: &Shared,
    frames: &mut FrameReader<BoxStream>,
    handshake: &Handshake,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let head = match frames.next_frame().await {
        Ok(Some(head)) => head,
        Ok(None) => return Err("closed before the snapshot message".into()),
        Err(error) => return Err(frame_error_reason(&error)),
    };
    let envelope = codec::decode(head).map_err(|error| format!("malformed message: {error}"))?;
    check_route(shared, handshake, &envelope)?;
    let Message::Snapshot(metadata) = &envelope.message else {
        return Err(format!(
            "expected a snapshot message, got {}",
            envelope.message.kind_name()
        ));
    };
    // Held until this snapshot is spooled (or given up).
    let Ok(_receiving) = shared.snapshot_receives.try_acquire() else {
        return Err(format!(
            "snapshot from {} refused: {} already being received (snapshot_receives_max)",
            handshake.from, shared.config.snapshot_receives_max
        ));
    };
    let sequence = shared.snapshot_sequence.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "snapshot-{}-{}-{}-{sequence}",
        handshake.from.get(),
        metadata.last.term.get(),
        metadata.last.index.get()
    );
    let partial = shared.config.snapshot_dir.join(format!("{name}.partial"));
    let complete = shared.config.snapshot_dir.join(format!("{name}.snap"));
    // From here the file is removed unless handed over, however this task
    // ends: a newer connection from the same peer aborts it mid-way.
    let mut unclaimed = Unclaimed {
        paths: [partial.clone(), complete.clone()],
        claimed: false,
    };
    let spooled = tokio::select! {
        _ = stopped(shutdown) => Err("the transport is shutting down".to_string()),
        spooled = spool(frames, &partial, &complete, shared.config.snapshot_bytes_max) => spooled,
    };
    let total_bytes =
        spooled.map_err(|reason| format!("snapshot from {} failed: {reason}", handshake.from))?;
    let mut ack = BytesMut::with_capacity(FRAME_HEADER_BYTES + 1);
    ack.put_u32(1);
    ack.put_u8(SNAPSHOT_ACCEPTED);
    // The data is durable: hand it over even if the ack does not get through
    // (the sender then reports failure and the core sends another).
    let _ = frames.stream_mut().write_all(&ack).await;
    let _ = frames.stream_mut().flush().await;
    info!(node = %shared.config.node_id, peer = %handshake.from, total_bytes, path = %complete.display(), "snapshot received");
    let report = Inbound::SnapshotReceived {
        envelope,
        data_path: complete,
    };
    tokio::select! {
        _ = stopped(shutdown) => {}
        sent = shared.inbound.send(report) => {
            unclaimed.claimed = sent.is_ok();
        }
    }
    Ok(())
}

/// A snapshot's files (partial and complete) until the runtime claims the
/// complete one: removed when dropped unclaimed. Dropping happens on every
/// way out, an aborted task included, so no half-received file is left in
/// `snapshot_dir`.
struct Unclaimed {
    paths: [PathBuf; 2],
    claimed: bool,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if self.claimed {
            return;
        }
        for path in &self.paths {
            // Small blocking calls, once per failed transfer.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes data frames to `partial` until the end frame, checks the total,
/// fsyncs and renames to `complete`. Returns the data size. More than
/// `bytes_max` bytes of data fail the transfer.
async fn spool(
    frames: &mut FrameReader<BoxStream>,
    partial: &PathBuf,
    complete: &PathBuf,
    bytes_max: u64,
) -> Result<u64, String> {
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|error| format!("cannot create {}: {error}", partial.display()))?;
    let mut total_bytes: u64 = 0;
    loop {
        let frame = match frames.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(format!("connection closed after {total_bytes} bytes")),
            Err(error) => return Err(frame_error_reason(&error)),
        };
        match frame.first() {
            Some(&CHUNK_DATA) => {
                let data_bytes = frame.len() as u64 - 1;
                if total_bytes + data_bytes > bytes_max {
                    return Err(format!(
                        "more than {bytes_max} bytes (snapshot_bytes_max): cut off"
                    ));
                }
                file.write_all(&frame[1..])
                    .await
                    .map_err(|error| format!("write to {}: {error}", partial.display()))?;
                total_bytes += data_bytes;
            }
            Some(&CHUNK_END) => {
                let declared: [u8; 8] = frame[1..]
                    .try_into()
                    .map_err(|_| format!("end frame of {} bytes", frame.len()))?;
                let declared = u64::from_be_bytes(declared);
                if declared != total_bytes {
                    return Err(format!("sender declared {declared} bytes but sent {total_bytes}"));
                }
                break;
            }
            Some(tag) => return Err(format!("unknown snapshot frame tag {tag}")),
            None => return Err("empty snapshot frame".into()),
        }
    }
    file.sync_all()
        .await
        .map_err(|error| format!("fsync {}: {error}", partial.display()))?;
    drop(file);
    tokio::fs::rename(partial, complete)
        .await
        .map_err(|error| format!("rename to {}: {error}", complete.display()))?;
    Ok(total_bytes)
}
