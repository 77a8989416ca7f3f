//! Why the transport could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration field is out of range.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A TLS file could not be loaded or used.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot directory could not be created.
    #[error("cannot create snapshot directory {path}: {source}")]
    SnapshotDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
