//! A small HTTP/1.1 client with keep-alive, the one the load generator uses
//! for keel-kv and etcd alike, so that neither server is measured through a
//! different client stack.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body accepted (the benchmarks read 256-byte values).
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// Largest header section accepted.
const HEADER_LINES_MAX: usize = 100;

/// A response: status and body.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    address: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl Connection {
    /// A connection to `address`, opened on first use.
    pub fn new(address: SocketAddr) -> Self {
        Connection {
            address,
            stream: None,
            request: Vec::with_capacity(1024),
        }
    }

    /// The server this connection talks to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends one request and reads its response, reconnecting first if the
    /// previous response closed the connection. On an IO error the connection
    /// is dropped (the next request reconnects). `timeout` bounds the whole
    /// exchange.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<Response> {
        match tokio::time::timeout(timeout, self.exchange(method, path, content_type, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.stream = None;
                Err(error)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        self.request.clear();
        self.request.extend_from_slice(method.as_bytes());
        self.request.push(b' ');
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.request
            .extend_from_slice(self.address.to_string().as_bytes());
        self.request.extend_from_slice(b"\r\nContent-Length: ");
        self.request.extend_from_slice(body.len().to_string().as_bytes());
        if let Some(content_type) = content_type {
            self.request.extend_from_slice(b"\r\nContent-Type: ");
            self.request.extend_from_slice(content_type.as_bytes());
        }
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(body);
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        stream.get_mut().write_all(&self.request).await?;
        let (response, keep_alive) = read_response(stream).await?;
        if !keep_alive {
            self.stream = None;
        }
        Ok(response)
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> io::Result<(Response, bool)> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for _ in 0..HEADER_LINES_MAX {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in headers",
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            let body = if chunked {
                read_chunked(stream).await?
            } else {
                let length = content_length.unwrap_or(0);
                if length > RESPONSE_BYTES_MAX {
                    return Err(invalid("response too large"));
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await?;
                body
            };
            return Ok((Response { status, body }, keep_alive));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("bad header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    Err(invalid("too many headers"))
}

async fn read_chunked(stream: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        if body.len() + size > RESPONSE_BYTES_MAX {
            return Err(invalid("response too large"));
        }
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await?;
        line.clear();
        stream.read_line(&mut line).await?;
    }
}

/// Standard base64 (with padding), as etcd's JSON gateway wants its keys and
/// values.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut output = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let word = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                let sextet = (word >> (18 - 6 * position)) & 0x3F;
                output.push(char::from(ALPHABET[sextet as usize]));
            } else {
                output.push('=');
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
