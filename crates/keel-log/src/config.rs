//! The store's configuration.

use crate::error::LogError;

/// How a [`LogStore`](crate::LogStore) lays out and caches the log.
///
/// ```
/// use keel_log::LogConfig;
/// let config = LogConfig::default()
///     .with_segment_size_bytes(16 << 20)
///     .with_entry_cache_size_bytes(4 << 20);
/// assert_eq!(config.segment_size_bytes(), 16 << 20);
/// config.validate()?;
/// # Ok::<(), keel_log::LogError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    segment_size_bytes: u64,
    entry_cache_size_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: 64 << 20,
            entry_cache_size_bytes: 16 << 20,
        }
    }
}

impl LogConfig {
    /// The smallest accepted segment size.
    pub const SEGMENT_SIZE_BYTES_MIN: u64 = 256;

    /// The size at which a segment is closed and a new one started (default
    /// 64 MiB). A batch is never split across segments, so a segment can
    /// exceed this by one batch. Smaller segments let compaction free disk
    /// space sooner; larger ones mean fewer files and directory syncs (one
    /// per new segment).
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    /// Sets [`LogConfig::segment_size_bytes`].
    pub fn with_segment_size_bytes(mut self, segment_size_bytes: u64) -> Self {
        self.segment_size_bytes = segment_size_bytes;
        self
    }

    /// The bound on the memory held by the cache of the most recent entries
    /// (default 16 MiB, counted with `Entry::size_bytes`). Reads of entries
    /// in the cache never touch the disk; a leader replicating to followers
    /// that keep up reads only from it. Zero disables the cache.
    pub fn entry_cache_size_bytes(&self) -> u64 {
        self.entry_cache_size_bytes
    }

    /// Sets [`LogConfig::entry_cache_size_bytes`].
    pub fn with_entry_cache_size_bytes(mut self, entry_cache_size_bytes: u64) -> Self {
        self.entry_cache_size_bytes = entry_cache_size_bytes;
        self
    }

    /// Checks the bounds documented on each field.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_size_bytes < Self::SEGMENT_SIZE_BYTES_MIN {
            return Err(LogError::Config(format!(
                "segment_size_bytes is {}, below the minimum of {}",
                self.segment_size_bytes,
                Self::SEGMENT_SIZE_BYTES_MIN
            )));
        }
        Ok(())
    }
}
