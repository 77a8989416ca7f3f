//! Errors of the log store and the snapshot store.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use keel::{Index, StorageError};

/// What to do about a log that refuses to open, for messages: the member
/// must be restored from its peers, as the README's "Restoring a damaged
/// member" describes.
///
/// ```
/// assert!(keel_log::RESTORE_ADVICE.contains("crates/keel-log/README.md"));
/// ```
pub const RESTORE_ADVICE: &str = "This member's data cannot be trusted and must not be repaired in place: \
     stop the node, move its data directory aside, remove the member from the cluster and add it back \
     with an empty data directory (it catches up from the leader's snapshot); \
     see \"Restoring a damaged member\" in keel-log's README (crates/keel-log/README.md)";

/// Everything a [`LogStore`](crate::LogStore) or
/// [`SnapshotStore`](crate::SnapshotStore) call can fail with.
///
/// "Request rejected" errors ([`LogError::Compacted`],
/// [`LogError::Unavailable`], [`LogError::InvalidWrite`]) change nothing and
/// leave the store usable. Any other error from a write makes the store
/// refuse every later write ([`LogError::WritesRefused`]): after a failed
/// write or `fsync` the disk's state is unknown, and the only safe way on is
/// to reopen, which recovers from what is really on disk.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operation on a file or directory failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done (`"fdatasync"`, `"append to"`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The data on disk is damaged or inconsistent; the store refuses to open
    /// rather than drop entries that may have been acknowledged. The message
    /// ends with what to do next ([`RESTORE_ADVICE`]).
    ///
    /// ```
    /// use keel_log::LogError;
    /// let error = LogError::Corruption {
    ///     path: "/data/log/00000000000000000001.wal".into(),
    ///     offset: 4096,
    ///     reason: "checksum mismatch".into(),
    /// };
    /// let message = error.to_string();
    /// assert!(message.starts_with("corrupt log at /data/log/00000000000000000001.wal, offset 4096"));
    /// assert!(message.contains("Restoring a damaged member"));
    /// ```
    #[error("corrupt log at {}, offset {offset}: {reason}. {RESTORE_ADVICE}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset in the file where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed, so the store refuses writes; reopen it.
    #[error("the store refuses writes after an earlier failure: {reason}")]
    WritesRefused {
        /// The earlier failure.
        reason: Arc<str>,
    },
    /// The index is compacted (or older than the current snapshot).
    #[error("index {0} is compacted")]
    Compacted(Index),
    /// The index is beyond the last entry (a write would leave a gap).
    #[error("index {0} is beyond the last entry")]
    Unavailable(Index),
    /// The write is malformed (for example entries that are not contiguous);
    /// nothing was written.
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            operation,
            path,
            source,
        }
    }

    /// Whether the store is still usable after this error from a write.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            LogError::Compacted(_) | LogError::Unavailable(_) | LogError::InvalidWrite(_)
        )
    }
}

impl From<LogError> for StorageError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Compacted(index) => StorageError::Compacted(index),
            LogError::Unavailable(index) => StorageError::Unavailable(index),
            other => StorageError::Failed(other.to_string().into()),
        }
    }
}
