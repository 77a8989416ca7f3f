//! [`SnapshotStore`]: snapshot files, written atomically and read back as a
//! stream.
//!
//! The core only deals in [`SnapshotMetadata`]; the data is the
//! application's, opaque bytes. A snapshot file is
//!
//! ```text
//! header   = one log record of type Snapshot holding the metadata (checksummed)
//! data     = the application's bytes
//! trailer  = data_length:u64le  data_crc32c:u32le  "KSND"
//! ```
//!
//! It is written as `NAME.tmp`, fsynced, renamed to `NAME`, and the
//! directory fsynced; only then are older snapshots deleted. A crash at any
//! point leaves the previous snapshot or the new one, never a mix: a file
//! with its final name is complete. Leftover `.tmp` files are removed on open.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel::{Index, SnapshotMetadata, Term};

use crate::error::LogError;
use crate::fs::{child, sync_parent_directory, FileSystem, ReadableFile, RealFileSystem};
use crate::record::{self, Encoder, Parsed, Record};

const TRAILER_MAGIC: &[u8; 4] = b"KSND";
const TRAILER_BYTES: u64 = 16;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".tmp";
const COPY_CHUNK_BYTES: usize = 1 << 20;

fn file_name(metadata: &SnapshotMetadata) -> String {
    format!(
        "{PREFIX}{:020}-{:020}{SUFFIX}",
        metadata.last.index.get(),
        metadata.last.term.get()
    )
}

/// Parses `snapshot-INDEX-TERM.snap` into (index, term).
fn parse_file_name(name: &str) -> Option<(Index, Term)> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (index, term) = middle.split_once('-')?;
    Some((Index::new(index.parse().ok()?), Term::new(term.parse().ok()?)))
}

/// A snapshot file found on disk and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    metadata: SnapshotMetadata,
    path: PathBuf,
    data_length_bytes: u64,
}

impl SnapshotInfo {
    /// What the snapshot covers.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the application's data.
    pub fn data_length_bytes(&self) -> u64 {
        self.data_length_bytes
    }
}

/// A directory of snapshot files that keeps the latest durable one.
///
/// ```
/// use std::io::Read;
/// use std::sync::Arc;
/// use keel::{ConfState, Index, LogId, NodeId, SnapshotMetadata, Term};
/// use keel_log::memory_fs::MemoryFileSystem;
/// use keel_log::SnapshotStore;
///
/// let file_system = Arc::new(MemoryFileSystem::new(1));
/// let mut store = SnapshotStore::open_with_file_system(file_system, "/snapshots")?;
/// let metadata = SnapshotMetadata {
///     last: LogId::new(Term::new(2), Index::new(10)),
///     conf_state: ConfState::with_voters([NodeId::new(1)]),
/// };
/// store.write(metadata.clone(), &mut &b"the state machine"[..])?;
/// let mut reader = store.read_latest()?.expect("a snapshot was written");
/// assert_eq!(reader.metadata(), &metadata);
/// let mut data = Vec::new();
/// reader.read_to_end(&mut data)?;
/// assert_eq!(data, b"the state machine");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SnapshotStore {
    file_system: Arc<dyn FileSystem>,
    directory: PathBuf,
    latest: Option<SnapshotInfo>,
    copy_buffer: Vec<u8>,
}

impl SnapshotStore {
    /// Opens (or creates) the snapshot directory on the real file system.
    pub fn open(directory: impl AsRef<Path>) -> Result<SnapshotStore, LogError> {
        SnapshotStore::open_with_file_system(Arc::new(RealFileSystem), directory)
    }

    /// Opens (or creates) the snapshot directory on `file_system`: removes
    /// leftover temporary files and snapshots older than the latest, and
    /// checks the latest one's header and trailer.
    ///
    /// # Errors
    /// [`LogError::Corruption`] if the latest snapshot file is damaged.
    pub fn open_with_file_system(
        file_system: Arc<dyn FileSystem>,
        directory: impl AsRef<Path>,
    ) -> Result<SnapshotStore, LogError> {
        let directory = directory.as_ref().to_path_buf();
        file_system
            .create_directory_all(&directory)
            .map_err(LogError::io("create directory", &directory))?;
        sync_parent_directory(file_system.as_ref(), &directory)?;
        let names = file_system
            .list_directory(&directory)
            .map_err(LogError::io("list directory", &directory))?;
        let mut found = Vec::new();
        let mut removed_any = false;
        for name in names {
            let path = child(&directory, &name);
            if name.starts_with(PREFIX) && name.ends_with(TEMPORARY_SUFFIX) {
                file_system
                    .remove_file(&path)
                    .map_err(LogError::io("remove", &path))?;
                removed_any = true;
            } else if let Some(key) = parse_file_name(&name) {
                found.push((key, path));
            }
        }
        found.sort();
        let latest = match found.pop() {
            Some((_, path)) => Some(inspect(file_system.as_ref(), &path)?),
            None => None,
        };
        for (_, path) in found {
            file_system
                .remove_file(&path)
                .map_err(LogError::io("remove", &path))?;
            removed_any = true;
        }
        if removed_any {
            file_system
                .sync_directory(&directory)
                .map_err(LogError::io("fsync directory", &directory))?;
        }
        Ok(SnapshotStore {
            file_system,
            directory,
            latest,
            copy_buffer: Vec::new(),
        })
    }

    /// The latest durable snapshot, if any.
    pub fn latest(&self) -> Option<&SnapshotInfo> {
        self.latest.as_ref()
    }

    /// Writes a snapshot whose data is read from `data` to its end, makes it
    /// durable, then deletes older snapshots. Returns its description.
    ///
    /// # Errors
    /// [`LogError::Compacted`] if it is older than the latest snapshot;
    /// [`LogError::Io`] if reading `data` or the disk fails, in which case
    /// the previous snapshot is untouched (a later call may try again, with
    /// a fresh file).
    pub fn write(
        &mut self,
        metadata: SnapshotMetadata,
        data: &mut dyn Read,
    ) -> Result<SnapshotInfo, LogError> {
        if let Some(latest) = &self.latest {
            if metadata.last.index < latest.metadata.last.index {
                return Err(LogError::Compacted(metadata.last.index));
            }
        }
        let name = file_name(&metadata);
        let path = child(&self.directory, &name);
        let temporary = child(&self.directory, &format!("{name}{TEMPORARY_SUFFIX}"));
        let data_length_bytes = self.write_temporary(&metadata, data, &temporary)?;
        let file_system = self.file_system.as_ref();
        file_system
            .rename(&temporary, &path)
            .map_err(LogError::io("rename", &temporary))?;
        file_system
            .sync_directory(&self.directory)
            .map_err(LogError::io("fsync directory", &self.directory))?;
        let written = SnapshotInfo {
            metadata,
            path,
            data_length_bytes,
        };
        if let Some(previous) = self.latest.replace(written.clone()) {
            if previous.path != written.path {
                file_system
                    .remove_file(&previous.path)
                    .map_err(LogError::io("remove", &previous.path))?;
                file_system
                    .sync_directory(&self.directory)
                    .map_err(LogError::io("fsync directory", &self.directory))?;
            }
        }
        Ok(written)
    }

    fn write_temporary(
        &mut self,
        metadata: &SnapshotMetadata,
        data: &mut dyn Read,
        temporary: &Path,
    ) -> Result<u64, LogError> {
        let file_system = self.file_system.as_ref();
        if file_system.open_read(temporary).is_ok() {
            file_system
                .remove_file(temporary)
                .map_err(LogError::io("remove", temporary))?;
        }
        let mut file = file_system
            .create_new(temporary)
            .map_err(LogError::io("create", temporary))?;
        let mut header = Vec::new();
        Encoder::new(&mut header).snapshot(metadata);
        file.append(&header).map_err(LogError::io("write", temporary))?;
        self.copy_buffer.resize(COPY_CHUNK_BYTES, 0);
        let mut crc = 0u32;
        let mut data_length_bytes = 0u64;
        loop {
            let count = match data.read(&mut self.copy_buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(LogError::io("read snapshot data for", temporary)(error)),
            };
            crc = crc32c::crc32c_append(crc, &self.copy_buffer[..count]);
            data_length_bytes += count as u64;
            file.append(&self.copy_buffer[..count])
                .map_err(LogError::io("write", temporary))?;
        }
        let mut trailer = Vec::with_capacity(TRAILER_BYTES as usize);
        trailer.extend_from_slice(&data_length_bytes.to_le_bytes());
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        file.append(&trailer).map_err(LogError::io("write", temporary))?;
        file.sync_data().map_err(LogError::io("fdatasync", temporary))?;
        Ok(data_length_bytes)
    }

    /// A reader of the latest snapshot's data, if there is one. It checks
    /// the data's checksum as it reaches the end: a damaged snapshot fails
    /// the last `read` with `InvalidData` rather than end quietly.
    pub fn read_latest(&self) -> Result<Option<SnapshotReader>, LogError> {
        let Some(latest) = &self.latest else {
            return Ok(None);
        };
        let file = self
            .file_system
            .open_read(&latest.path)
            .map_err(LogError::io("open", &latest.path))?;
        let (info, data_offset, expected_crc) = read_layout(file.as_ref(), &latest.path)?;
        Ok(Some(SnapshotReader {
            file,
            metadata: info.metadata,
            data_offset,
            data_length_bytes: info.data_length_bytes,
            position: 0,
            crc: 0,
            expected_crc,
        }))
    }
}

/// Reads a snapshot file's header and trailer.
fn inspect(file_system: &dyn FileSystem, path: &Path) -> Result<SnapshotInfo, LogError> {
    let file = file_system.open_read(path).map_err(LogError::io("open", path))?;
    Ok(read_layout(file.as_ref(), path)?.0)
}

/// The file's description, where its data starts, and the data's checksum.
fn read_layout(file: &dyn ReadableFile, path: &Path) -> Result<(SnapshotInfo, u64, u32), LogError> {
    let corruption = |offset: u64, reason: &str| LogError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: format!("snapshot file: {reason}"),
    };
    let length_bytes = file.length_bytes().map_err(LogError::io("stat", path))?;
    let mut length_prefix = [0u8; 4];
    file.read_exact_at(0, &mut length_prefix)
        .map_err(|_| corruption(0, "too short for a header"))?;
    let header_bytes = record::HEADER_BYTES as u64 + u64::from(u32::from_le_bytes(length_prefix));
    if header_bytes + TRAILER_BYTES > length_bytes {
        return Err(corruption(0, "header and trailer exceed the file"));
    }
    let mut header = vec![0; header_bytes as usize];
    file.read_exact_at(0, &mut header)
        .map_err(LogError::io("read", path))?;
    let metadata = match record::parse(&header) {
        Parsed::Valid {
            record_type, payload, ..
        } => match record::decode(record_type, payload) {
            Ok(Record::Snapshot(metadata)) => metadata,
            _ => return Err(corruption(0, "header is not snapshot metadata")),
        },
        _ => return Err(corruption(0, "header checksum mismatch")),
    };
    let trailer_offset = length_bytes - TRAILER_BYTES;
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    file.read_exact_at(trailer_offset, &mut trailer)
        .map_err(LogError::io("read", path))?;
    let mut data_length = [0u8; 8];
    data_length.copy_from_slice(&trailer[..8]);
    let data_length_bytes = u64::from_le_bytes(data_length);
    let expected_crc = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
    if &trailer[12..] != TRAILER_MAGIC || header_bytes + data_length_bytes != trailer_offset {
        return Err(corruption(
            trailer_offset,
            "trailer is damaged or the data length is wrong",
        ));
    }
    let info = SnapshotInfo {
        metadata,
        path: path.to_path_buf(),
        data_length_bytes,
    };
    Ok((info, header_bytes, expected_crc))
}

/// Streams a snapshot's data (see [`SnapshotStore::read_latest`]).
#[derive(Debug)]
pub struct SnapshotReader {
    file: Box<dyn ReadableFile>,
    metadata: SnapshotMetadata,
    data_offset: u64,
    data_length_bytes: u64,
    position: u64,
    crc: u32,
    expected_crc: u32,
}

impl SnapshotReader {
    /// What the snapshot covers.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// The length of the data.
    pub fn data_length_bytes(&self) -> u64 {
        self.data_length_bytes
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let remaining = self.data_length_bytes - self.position;
        let count = (buffer.len() as u64).min(remaining) as usize;
        if count == 0 {
            if buffer.is_empty() || self.crc == self.expected_crc {
                return Ok(0);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data checksum mismatch",
            ));
        }
        self.file
            .read_exact_at(self.data_offset + self.position, &mut buffer[..count])?;
        self.crc = crc32c::crc32c_append(self.crc, &buffer[..count]);
        self.position += count as u64;
        if self.position == self.data_length_bytes && self.crc != self.expected_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data checksum mismatch",
            ));
        }
        Ok(count)
    }
}
