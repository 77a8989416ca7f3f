//! Reading length-prefixed frames from a byte stream, within a size limit,
//! with the memory held counted and silence bounded.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, Sleep};

use crate::codec::FRAME_HEADER_BYTES;

/// How much the reader asks the socket for at a time when it holds no
/// partial frame: large enough to take a whole batch in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer declared a frame larger than the limit.
    #[error("frame of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The declared body length.
        declared: u32,
        /// The limit in force.
        limit: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Nothing arrived for a whole idle period (see
    /// [`NetworkConfig::inbound_idle_timeout_ms`](crate::NetworkConfig::inbound_idle_timeout_ms)).
    #[error("no bytes arrived for {0:?}")]
    Idle(Duration),
    /// The stream failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts one reader's buffer capacity into a total shared by many readers,
/// so that what all connections of a kind hold can be observed (and its
/// bound checked in tests). Updated only when the capacity changes, before
/// a socket read: never per message.
pub(crate) struct BufferGauge {
    total_bytes: Arc<AtomicU64>,
    counted_bytes: u64,
}

impl BufferGauge {
    pub(crate) fn new(total_bytes: Arc<AtomicU64>) -> Self {
        BufferGauge {
            total_bytes,
            counted_bytes: 0,
        }
    }

    fn set(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes > self.counted_bytes {
            self.total_bytes
                .fetch_add(bytes - self.counted_bytes, Ordering::Relaxed);
        } else if bytes < self.counted_bytes {
            self.total_bytes
                .fetch_sub(self.counted_bytes - bytes, Ordering::Relaxed);
        }
        self.counted_bytes = bytes;
    }
}

impl Drop for BufferGauge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Ends a read when no byte has arrived for a whole period. One timer per
/// connection, re-armed once per period rather than per read (re-arming
/// registers with the timer wheel, which takes a lock): so a silent
/// connection is closed after between one and two periods.
struct IdleWatch {
    period: Duration,
    timer: Pin<Box<Sleep>>,
    read_since_armed: bool,
}

impl IdleWatch {
    fn new(period: Duration) -> Self {
        IdleWatch {
            period,
            timer: Box::pin(tokio::time::sleep(period)),
            read_since_armed: false,
        }
    }

    /// One read of `reader` into `buffer`, or `Idle` once a whole period
    /// passed without any read completing. Cancel-safe.
    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<usize, FrameError> {
        loop {
            let read = tokio::select! {
                biased;
                read = reader.read_buf(buffer) => Some(read),
                () = &mut self.timer => None,
            };
            match read {
                Some(read) => {
                    self.read_since_armed = true;
                    return Ok(read?);
                }
                None if self.read_since_armed => {
                    self.read_since_armed = false;
                    self.timer.as_mut().reset(Instant::now() + self.period);
                }
                None => return Err(FrameError::Idle(self.period)),
            }
        }
    }
}

/// Splits a byte stream into frames. Frames are slices of one read buffer,
/// so their bodies (and the entry payloads decoded from them) are not copied.
///
/// Memory: the buffer grows with the bytes that actually arrive, never with
/// the length a peer declares, so it holds at most about twice the partial
/// frame received so far plus one read chunk (and never more than the
/// frame limit allows). Under a small limit (a handshake) the read chunk
/// shrinks to the limit too.
pub(crate) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    max_frame_bytes: u32,
    gauge: Option<BufferGauge>,
    idle: Option<IdleWatch>,
    went_idle: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R, max_frame_bytes: u32) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            max_frame_bytes,
            gauge: None,
            idle: None,
            went_idle: false,
        }
    }

    /// Changes the frame limit (handshakes are read under a tiny one).
    pub(crate) fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Counts this reader's buffer into `gauge` from now on (and out of the
    /// previous one).
    pub(crate) fn set_gauge(&mut self, mut gauge: BufferGauge) {
        gauge.set(self.buffer.capacity());
        self.gauge = Some(gauge);
    }

    /// Ends reads with [`FrameError::Idle`] once no byte arrived for
    /// between one and two `period`s.
    pub(crate) fn set_idle_timeout(&mut self, period: Duration) {
        self.idle = Some(IdleWatch::new(period));
    }

    /// Whether a read ended with [`FrameError::Idle`].
    pub(crate) fn went_idle(&self) -> bool {
        self.went_idle
    }

    /// The underlying stream, to write replies on.
    pub(crate) fn stream_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// The underlying stream. Bytes already buffered are discarded: call it
    /// only where the peer must not have sent anything more.
    pub(crate) fn into_inner(self) -> R {
        self.reader
    }

    /// The bytes to ask the socket for at a time: a chunk, or less when the
    /// limit allows only small frames (an unauthenticated peer gets a
    /// buffer the size of a handshake, no more).
    fn read_chunk_bytes(&self) -> usize {
        READ_CHUNK_BYTES.min(FRAME_HEADER_BYTES + self.max_frame_bytes as usize)
    }

    /// The next frame body, or `None` when the stream ends cleanly between
    /// frames. Cancel-safe: a partial frame stays in the buffer.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if let Some(gauge) = &mut self.gauge {
                gauge.set(self.buffer.capacity());
            }
            let read = match &mut self.idle {
                None => self.reader.read_buf(&mut self.buffer).await?,
                Some(idle) => idle
                    .read(&mut self.reader, &mut self.buffer)
                    .await
                    .inspect_err(|error| self.went_idle = matches!(error, FrameError::Idle(_)))?,
            };
            if read == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::Truncated);
            }
        }
    }

    /// A whole frame from the buffer if one is there; otherwise reserves room
    /// for more of the current frame (its length checked against the limit
    /// first).
    fn take_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let chunk_bytes = self.read_chunk_bytes();
        if self.buffer.len() < FRAME_HEADER_BYTES {
            self.buffer.reserve(chunk_bytes);
            return Ok(None);
        }
        let declared = u32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]);
        if declared > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                declared,
                limit: self.max_frame_bytes,
            });
        }
        let frame_bytes = FRAME_HEADER_BYTES + declared as usize;
        if self.buffer.len() >= frame_bytes {
            self.buffer.advance(FRAME_HEADER_BYTES);
            return Ok(Some(self.buffer.split_to(declared as usize).freeze()));
        }
        // Grow with what has arrived, not with what was declared: a peer
        // that declares 16 MiB and then stalls pins what it sent, not 16
        // MiB. Doubling with the bytes received keeps a large frame to a
        // few reallocations.
        let missing = frame_bytes - self.buffer.len();
        self.buffer
            .reserve(missing.min(chunk_bytes.max(self.buffer.len())));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8], limit: u32) -> Vec<Result<Option<Bytes>, String>> {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime,
            Err(error) => panic!("runtime: {error}"),
        };
        runtime.block_on(async {
            let mut reader = FrameReader::new(bytes, limit);
            let mut out = Vec::new();
            loop {
                let next = reader.next_frame().await.map_err(|error| error.to_string());
                let stop = !matches!(next, Ok(Some(_)));
                out.push(next);
                if stop {
                    return out;
                }
            }
        })
    }

    #[test]
    fn frames_at_the_limit_pass_and_over_it_fail() {
        // Goal: a body of exactly `max_frame_bytes` is read; one byte more is
        // refused from the header alone.
        let mut at_limit = vec![0, 0, 0, 8];
        at_limit.extend_from_slice(&[7; 8]);
        let read = frames(&at_limit, 8);
        assert_eq!(read[0], Ok(Some(Bytes::from_static(&[7; 8]))));
        assert_eq!(read[1], Ok(None));

        let over = [0, 0, 0, 9];
        let read = frames(&over, 8);
        assert_eq!(
            read[0],
            Err("frame of 9 bytes exceeds the limit of 8 bytes".to_string())
        );
    }

    #[test]
    fn a_huge_declared_length_allocates_nothing() {
        let read = frames(&[0xff, 0xff, 0xff, 0xff], 16 * 1024 * 1024);
        assert!(read[0].is_err());
    }

    fn paused_runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => panic!("runtime: {error}"),
        }
    }

    #[test]
    fn a_declared_length_is_not_allocated_before_its_bytes_arrive() {
        // Goal: a peer that declares 16 MiB and sends 1,000 bytes makes the
        // reader hold one read chunk, not 16 MiB.
        let mut bytes = vec![0, 0, 0, 0];
        bytes[..4].copy_from_slice(&(16u32 << 20).to_be_bytes());
        bytes.extend_from_slice(&[1; 1_000]);
        let runtime = paused_runtime();
        let mut reader = FrameReader::new(&bytes[..], 16 << 20);
        let read = runtime.block_on(reader.next_frame());
        assert!(matches!(read, Err(FrameError::Truncated)), "{read:?}");
        assert!(
            reader.buffer.capacity() <= 2 * READ_CHUNK_BYTES,
            "{}",
            reader.buffer.capacity()
        );
    }

    #[test]
    fn the_read_chunk_shrinks_to_a_small_limit() {
        // Goal: under a handshake's limit, a stalled peer pins a handshake's
        // worth of buffer.
        let reader = FrameReader::new(&[][..], 296);
        assert_eq!(reader.read_chunk_bytes(), 300);
        let reader = FrameReader::new(&[][..], 16 << 20);
        assert_eq!(reader.read_chunk_bytes(), READ_CHUNK_BYTES);
    }

    #[test]
    fn silence_ends_a_read_after_one_to_two_periods_and_trickling_does_not() {
        const PERIOD: Duration = Duration::from_millis(100);
        let runtime = paused_runtime();
        runtime.block_on(async {
            // A frame whose bytes arrive one every 60 ms: slower than a
            // frame per period, but never a silent period.
            let (mut sender, receiver) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(receiver, 1024);
            reader.set_idle_timeout(PERIOD);
            let trickle = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for byte in [0u8, 0, 0, 3, 7, 8, 9] {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    let _ = sender.write_all(&[byte]).await;
                }
                sender
            });
            let frame = reader.next_frame().await;
            assert_eq!(frame.ok().flatten(), Some(Bytes::from_static(&[7, 8, 9])));
            assert!(!reader.went_idle());
            // Then silence, with the sender still connected.
            let _sender = trickle.await;
            let silent_from = Instant::now();
            let read = reader.next_frame().await;
            let silent = silent_from.elapsed();
            assert!(matches!(read, Err(FrameError::Idle(PERIOD))), "{read:?}");
            assert!(reader.went_idle());
            assert!(silent >= PERIOD && silent <= 2 * PERIOD, "{silent:?}");
        });
    }

    #[test]
    fn a_gauge_counts_the_buffer_and_forgets_it_when_dropped() {
        let total = Arc::new(AtomicU64::new(0));
        let runtime = paused_runtime();
        let bytes = [0, 0, 0, 9, 1, 2];
        let mut reader = FrameReader::new(&bytes[..], 1024);
        reader.set_gauge(BufferGauge::new(total.clone()));
        let _ = runtime.block_on(reader.next_frame());
        assert!(total.load(Ordering::Relaxed) >= 6);
        assert_eq!(total.load(Ordering::Relaxed), reader.buffer.capacity() as u64);
        drop(reader);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn truncated_frames_and_headers_are_errors() {
        assert!(frames(&[0, 0, 0, 4, 1, 2], 16)[0].is_err());
        assert!(frames(&[0, 0], 16)[0].is_err());
    }

    #[test]
    fn several_frames_in_one_read_are_split() {
        let bytes = [0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 2, 5, 6];
        let read = frames(&bytes, 16);
        assert_eq!(read[0], Ok(Some(Bytes::from_static(&[9]))));
        assert_eq!(read[1], Ok(Some(Bytes::new())));
        assert_eq!(read[2], Ok(Some(Bytes::from_static(&[5, 6]))));
        assert_eq!(read[3], Ok(None));
    }
}
