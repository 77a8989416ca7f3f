//! JSON bodies for the answers hyper writes on its own.
//!
//! A request hyper cannot parse (a garbled request line or header, a head
//! over the buffer limit) never reaches a handler: hyper answers `400`,
//! `414` or `431` itself, with an empty body, and closes the connection.
//! The contract promises a JSON error for every error, so the connection's
//! writer is wrapped: an answer head with one of those statuses and
//! `content-length: 0` (which no handler writes: every handler error has a
//! JSON body) is replaced by the same status with the contract's body.
//! Every other byte passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::error_body;

/// A connection whose automatic parse-error answers carry JSON bodies.
#[derive(Debug)]
pub(crate) struct JsonParseErrors<T> {
    inner: T,
    /// A replacement answer still to be written, and how much of it was.
    pending: Vec<u8>,
    pending_written: usize,
}

impl<T> JsonParseErrors<T> {
    pub(crate) fn new(inner: T) -> Self {
        JsonParseErrors {
            inner,
            pending: Vec::new(),
            pending_written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes what is left of a replacement answer.
    fn poll_drain(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_written < self.pending.len() {
            let rest = &self.pending[self.pending_written..];
            let count = ready!(Pin::new(&mut self.inner).poll_write(context, rest))?;
            if count == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_written += count;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buffer` as written if it is an automatic answer, queuing its
    /// replacement instead.
    fn replaced(&mut self, context: &mut Context<'_>, buffer: &[u8]) -> Option<io::Result<usize>> {
        let replacement = json_answer(buffer)?;
        self.pending = replacement;
        self.pending_written = 0;
        // Written now if the socket takes it, else by the flush that
        // follows every answer.
        match self.poll_drain(context) {
            Poll::Ready(Err(error)) => Some(Err(error)),
            _ => Some(Ok(buffer.len())),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(context, buffer)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(context))?;
        if let Some(result) = this.replaced(context, buffer) {
            return Poll::Ready(result);
        }
        Pin::new(&mut this.inner).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(context))?;
        // hyper writes an answer's head as one buffer; an automatic answer
        // has nothing after it.
        let mut non_empty = buffers.iter().filter(|buffer| !buffer.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next()) {
            if let Some(result) = this.replaced(context, only) {
                return Poll::Ready(result);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(context))?;
        Pin::new(&mut this.inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(context))?;
        Pin::new(&mut this.inner).poll_shutdown(context)
    }
}

/// The JSON answer that replaces `head`, if `head` is hyper's automatic
/// answer to a request it could not parse: a complete head with status
/// 400, 414 or 431 and `content-length: 0`.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(head).ok()?;
    let lines = head.strip_suffix("\r\n\r\n")?;
    let mut lines = lines.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    let version = status_line
        .next()
        .filter(|version| version.starts_with("HTTP/1."))?;
    let status: u16 = status_line.next()?.parse().ok()?;
    let (code, message) = match status {
        400 => ("bad_request", "the request could not be parsed as HTTP/1.1"),
        414 => ("too_large", "the request's URL is over the limit"),
        431 => (
            "too_large",
            "the request's head (request line and headers) is over the limit",
        ),
        _ => return None,
    };
    let headers: Vec<&str> = lines.collect();
    let empty = headers
        .iter()
        .any(|header| header.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let reason = status_line.next().unwrap_or("");
    let body = error_body(code, message, None);
    let mut answer = format!(
        "{version} {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for header in headers.iter().filter(|header| {
        let name = header.split(':').next().unwrap_or("").trim();
        !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection")
    }) {
        answer.push_str(header);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_answers_get_the_contract_body_and_others_pass() {
        let automatic =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_answer(automatic).expect("replaced")).expect("utf-8");
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        assert!(answer.contains("content-type: application/json\r\n"), "{answer}");
        assert!(answer.contains("date: x\r\n"), "{answer}");
        assert!(answer.contains(r#""error":"too_large""#), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{answer}"
        );

        // A handler's answer has a body, and any other status passes.
        assert!(json_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 52\r\n\r\n").is_none());
        assert!(json_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
