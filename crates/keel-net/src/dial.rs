//! The dialling side of a connection: TCP, TLS if configured, and the
//! handshake, within the handshake timeout.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use keel::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{
    self, ConnectionKind, Handshake, HandshakeStatus, FRAME_HEADER_BYTES, HANDSHAKE_REPLY_BYTES,
    PROTOCOL_VERSION,
};
use crate::frame::FrameReader;
use crate::network::Shared;

/// A byte stream, plain TCP or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub(crate) type BoxStream = Box<dyn Stream>;

/// Why dialling a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connect and handshake took longer than {0:?}")]
    Timeout(Duration),
    #[error("peer refused the handshake: {reason} (its protocol version {version})", reason = describe_refusal(*.0), version = .1)]
    Refused(HandshakeStatus, u16),
    #[error("bad handshake reply: {0}")]
    Protocol(String),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("the peer's certificate does not name {0} (keel-node-<id>)")]
    Identity(NodeId),
}

/// Why a listener refused us, in the operator's words.
fn describe_refusal(status: HandshakeStatus) -> &'static str {
    match status {
        HandshakeStatus::Accepted => "accepted",
        HandshakeStatus::UnsupportedVersion => "it speaks another protocol version",
        HandshakeStatus::WrongCluster => "it belongs to another cluster (its cluster id differs from ours)",
        HandshakeStatus::WrongNode => {
            "it is not the node we meant to reach, or does not accept our id or certificate"
        }
        HandshakeStatus::NotMember => "we are not a member as far as it knows (not added yet, or removed)",
    }
}

impl Shared {
    /// Dials `address`, runs TLS if configured and the handshake, and
    /// returns the stream ready for frames.
    pub(crate) async fn connect(
        &self,
        address: &str,
        to: NodeId,
        kind: ConnectionKind,
    ) -> Result<FrameReader<BoxStream>, ConnectError> {
        let timeout = self.handshake_timeout();
        tokio::time::timeout(timeout, self.connect_unbounded(address, to, kind))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    async fn connect_unbounded(
        &self,
        address: &str,
        to: NodeId,
        kind: ConnectionKind,
    ) -> Result<FrameReader<BoxStream>, ConnectError> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let mut stream: BoxStream = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = host_of(address);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| ConnectError::ServerName(host.to_string()))?;
                let stream = tls.connector.connect(name, tcp).await?;
                if tls.require_node_names
                    && !crate::tls::names_node(stream.get_ref().1.peer_certificates(), to)
                {
                    return Err(ConnectError::Identity(to));
                }
                Box::new(stream)
            }
        };
        let handshake = Handshake {
            version: PROTOCOL_VERSION,
            kind,
            cluster_id: self.config.cluster_id,
            from: self.config.node_id,
            to,
            advertised_address: self.advertised_address(),
        };
        let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + handshake.encoded_bytes());
        out.put_u32(handshake.encoded_bytes() as u32);
        codec::encode_handshake(&handshake, &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut frames = FrameReader::new(stream, HANDSHAKE_REPLY_BYTES as u32);
        let reply = match frames.next_frame().await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(ConnectError::Protocol("closed before replying".into())),
            Err(error) => return Err(ConnectError::Protocol(error.to_string())),
        };
        let (version, status) = codec::decode_handshake_reply(reply)
            .map_err(|error| ConnectError::Protocol(error.to_string()))?;
        if status != HandshakeStatus::Accepted {
            return Err(ConnectError::Refused(status, version));
        }
        frames.set_max_frame_bytes(self.config.max_frame_bytes);
        Ok(frames)
    }
}

/// The host part of `host:port` (brackets stripped from an IPv6 literal).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("localhost:7000"), "localhost");
    }

    #[test]
    fn refusals_are_described_for_the_operator() {
        let error = ConnectError::Refused(HandshakeStatus::WrongCluster, PROTOCOL_VERSION);
        assert!(error.to_string().contains("another cluster"), "{error}");
        let error = ConnectError::Refused(HandshakeStatus::NotMember, PROTOCOL_VERSION);
        assert!(error.to_string().contains("not a member"), "{error}");
    }
}
