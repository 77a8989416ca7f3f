//! # keel-log
//!
//! Durable storage for [keel]: a segmented write-ahead log that holds
//! the entries, the hard state and the membership, and a store of snapshot
//! files. [`LogStore`] implements [`keel::Storage`] and
//! [`keel::StorageWrite`]; a runtime persists a whole `Ready` with one
//! [`LogStore::write`] — one `write`, one `fdatasync` (group commit) — and
//! learns from the returned [`DurableState`] exactly what is durable.
//!
//! ```
//! use keel::{HardState, Index, NodeId, Storage, Term};
//! use keel_log::{LogConfig, LogStore, WriteBatch};
//!
//! let directory = std::env::temp_dir().join(format!("keel-log-crate-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&directory);
//! let mut store = LogStore::open(&directory, LogConfig::default())?;
//! let entries = keel::testing::entries(1, 1, 3);
//! let hard_state = HardState { term: Term::new(1), vote: Some(NodeId::new(1)), commit: Index::new(2) };
//! let durable = store.write(&WriteBatch::new().with_entries(&entries).with_hard_state(hard_state))?;
//! assert_eq!(durable.last().index, Index::new(3));
//!
//! // After a restart everything acknowledged is back.
//! drop(store);
//! let store = LogStore::open(&directory, LogConfig::default())?;
//! assert_eq!(store.initial_state()?.hard_state, hard_state);
//! assert_eq!(store.entries(Index::new(1), Index::new(4), u64::MAX)?, entries);
//! # std::fs::remove_dir_all(&directory).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## On disk
//!
//! A log is a directory of segment files `00000000000000000001.wal`,
//! `…02.wal`, … Each holds records `length:u32 crc32c:u32 type:u8 payload`
//! (the checksum covers the length and type too). The record types are:
//! entry, truncate (a conflicting suffix is discarded), hard state,
//! membership, snapshot taken, compaction, snapshot installed, and
//! checkpoint. Every segment starts with a checkpoint: the whole non-entry
//! state (compacted id, last id, hard state, membership, snapshot) at the
//! moment the segment began.
//!
//! **Hard state and membership are log records, not files.** A `Ready`
//! usually carries both new entries and a new hard state (the commit index
//! moves on almost every one). As records, both reach the disk with the
//! batch's single `fdatasync`; as a separate file written the atomic way
//! (temporary file, fsync, rename, fsync the directory) every `Ready` would
//! pay three syncs instead of one, and the entries and the hard state could
//! be durable one without the other. The price is that the latest hard state
//! may sit in an old segment: the checkpoint at the head of every segment
//! carries it forward, so deleting old segments never loses it.
//!
//! **Truncation is a record too.** The conflicting suffix is discarded by a
//! truncate record written in the same batch, just before the entries that
//! replace it, and covered by the same `fdatasync`: the new entries can never
//! be durable without the truncation. The old entries stay in the file as
//! dead bytes until their segment is deleted.
//!
//! **Compaction deletes whole segments.** A compaction (or an installed
//! snapshot) is a record; afterwards every segment older than the oldest
//! one holding a live entry is deleted, oldest first, with a directory sync
//! after each deletion so the remaining segments always form a contiguous
//! run. The first remaining segment's checkpoint holds the state its
//! predecessors held; the entries they held must have been discarded by the
//! records that follow it, and replay checks that.
//!
//! A batch is never split across segments: a new segment is started (its
//! name made durable with a directory sync) before a batch once the active
//! one has reached [`LogConfig::segment_size_bytes`].
//!
//! ## Recovery
//!
//! [`LogStore::open`] replays every segment through the same code that
//! applies a batch when it is written, checking as it goes: each record's
//! checksum, that each segment starts with a checkpoint that names it and
//! agrees with the segments before it, that entry indexes follow one
//! another without gap or repeat (a repeat needs a truncate record before
//! it) and that terms never decrease.
//!
//! A crash during a batch that was never synced leaves the end of the
//! **last** segment torn: its last record cut short, or — where the file's
//! new size reached the disk before its data — some of the record's sectors
//! reading as zeros. Such a tail, with no intact record after it, is cut off
//! ([`LogStore::recovered_torn_tail`]); it was never acknowledged. Any other
//! damage refuses to open with [`LogError::Corruption`], naming the file and
//! the offset: entries that may have been acknowledged are never dropped
//! silently. That includes a last record whose full length is there, with
//! no zeroed sector, and whose checksum fails: no crash leaves that shape,
//! so its bytes reached the disk and changed afterwards. etcd's WAL draws
//! the same line. One case cannot be told apart from a torn write: damage
//! that zeroes a whole sector of the very last record (or its type byte,
//! when every byte after that is zero).
//!
//! A member whose log refuses to open must be restored from its peers, not
//! repaired in place: see "Restoring a damaged member" in the crate's
//! README, which [`LogError::Corruption`]'s message points to.
//!
//! ## Failures
//!
//! A failed write or `fdatasync` is fatal for the store: after it, what the
//! page cache holds and what the disk holds are unknown (Linux may drop the
//! dirty pages and report success to the next `fsync`). The store refuses
//! every later write with [`LogError::WritesRefused`] and says why; it
//! never retries. Reopening recovers from what is really on disk.
//!
//! ## Reads
//!
//! An in-memory index maps each log index to its segment, offset and term,
//! so [`keel::Storage::term`] never reads the disk, and a bounded cache
//! ([`LogConfig::entry_cache_size_bytes`]) holds the newest entries, so a
//! leader whose followers keep up never reads the disk either. Other reads
//! fetch runs of adjacent records with one positional read and check each
//! record's checksum.
//!
//! ## Snapshots
//!
//! [`SnapshotStore`] keeps the application's snapshot data in files written
//! atomically (temporary file, fsync, rename, directory fsync) and streams
//! it back through [`std::io::Read`]; older snapshots are deleted once a
//! newer one is durable.
//!
//! ## Testing
//!
//! Everything goes through the [`fs::FileSystem`] trait. With feature
//! `memory-fs`, `memory_fs::MemoryFileSystem` simulates a disk that
//! crashes at any write or sync boundary, tears unsynced writes at 512 B or
//! 4 KiB, flips bits, runs out of space and fails `fsync`.

#![forbid(unsafe_code)]

mod cache;
mod check;
mod config;
mod error;
pub mod fs;
#[cfg(feature = "memory-fs")]
pub mod memory_fs;
mod record;
mod recovery;
mod snapshot;
mod state;
mod store;
mod tail;

pub use check::{check, HealthReport};
pub use config::LogConfig;
pub use error::{LogError, RESTORE_ADVICE};
pub use recovery::{SegmentSummary, TornTail};
pub use snapshot::{SnapshotInfo, SnapshotReader, SnapshotStore};
pub use store::{DurableState, LogStore, WriteBatch};

/// The store is moved to a dedicated disk thread by the runtime.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LogStore>();
    assert_send::<SnapshotStore>();
};
