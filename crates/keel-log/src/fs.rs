//! The file-system abstraction under the store.
//!
//! The store touches the disk only through [`FileSystem`], so tests and the
//! simulator can swap in `memory_fs::MemoryFileSystem`
//! (feature `memory-fs`), which crashes, tears writes and fails on command.
//! [`RealFileSystem`] is the one for production: `std::fs` on a Unix system.
//!
//! The contract follows POSIX as the store relies on it:
//! - data appended to a file is durable only after [`WritableFile::sync_data`]
//!   returns `Ok`;
//! - a created, renamed or removed *name* is durable only after
//!   [`FileSystem::sync_directory`] on its directory returns `Ok`;
//! - after a failed `sync_data` the state of the file's unsynced data is
//!   unknown (Linux may have dropped it from the page cache), so the caller
//!   must not retry and carry on.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file open for appending.
pub trait WritableFile: Send + Debug {
    /// Appends all of `data` at the end of the file. Not durable until
    /// [`WritableFile::sync_data`].
    fn append(&mut self, data: &[u8]) -> io::Result<()>;

    /// Makes everything appended so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;

    /// Cuts the file to `length_bytes` (which must not exceed its length);
    /// later appends continue there. Not durable until `sync_data`.
    fn truncate(&mut self, length_bytes: u64) -> io::Result<()>;

    /// The current length in bytes, including unsynced appends.
    fn length_bytes(&self) -> u64;
}

/// A file open for positional reads.
pub trait ReadableFile: Send + Sync + Debug {
    /// Fills `buffer` from `offset`; fails with `UnexpectedEof` if the file is
    /// shorter.
    fn read_exact_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;

    /// The file's length in bytes.
    fn length_bytes(&self) -> io::Result<u64>;
}

/// The operations the store performs on a directory tree.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `path` and its parents if they do not exist.
    fn create_directory_all(&self, path: &Path) -> io::Result<()>;

    /// The names of the files directly in `path`, in no particular order.
    fn list_directory(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Creates a new, empty file at `path` for appending; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>>;

    /// Renames `from` to `to`, replacing `to` if it exists (atomically, as
    /// `rename(2)`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the names in directory `path` durable (fsync of the directory).
    fn sync_directory(&self, path: &Path) -> io::Result<()>;
}

/// The operating system's file system (Unix).
///
/// ```
/// use keel_log::fs::{FileSystem, RealFileSystem};
/// let directory = std::env::temp_dir().join(format!("keel-log-doc-{}", std::process::id()));
/// let file_system = RealFileSystem;
/// file_system.create_directory_all(&directory)?;
/// let mut file = file_system.create_new(&directory.join("a"))?;
/// file.append(b"hello")?;
/// file.sync_data()?;
/// assert_eq!(file.length_bytes(), 5);
/// # std::fs::remove_dir_all(&directory)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFileSystem;

#[derive(Debug)]
struct RealWritableFile {
    file: File,
    length_bytes: u64,
}

impl WritableFile for RealWritableFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.length_bytes += data.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, length_bytes: u64) -> io::Result<()> {
        assert!(
            length_bytes <= self.length_bytes,
            "truncate may only shorten a file"
        );
        self.file.set_len(length_bytes)?;
        // The file was opened with O_APPEND, so the next write goes to the new end.
        self.length_bytes = length_bytes;
        Ok(())
    }

    fn length_bytes(&self) -> u64 {
        self.length_bytes
    }
}

#[derive(Debug)]
struct RealReadableFile {
    file: File,
}

impl ReadableFile for RealReadableFile {
    fn read_exact_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buffer, offset)
    }

    fn length_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl FileSystem for RealFileSystem {
    fn create_directory_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_directory(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(path)? {
            let item = item?;
            if item.file_type()?.is_file() {
                names.push(item.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().append(true).create_new(true).open(path)?;
        Ok(Box::new(RealWritableFile {
            file,
            length_bytes: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        let length_bytes = file.metadata()?.len();
        Ok(Box::new(RealWritableFile { file, length_bytes }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        Ok(Box::new(RealReadableFile {
            file: File::open(path)?,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_directory(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// Reads a whole file through `file_system`.
pub(crate) fn read_whole_file(file_system: &dyn FileSystem, path: &Path) -> io::Result<Vec<u8>> {
    let file = file_system.open_read(path)?;
    let length_bytes = file.length_bytes()?;
    let length = usize::try_from(length_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read into memory"))?;
    let mut contents = vec![0; length];
    file.read_exact_at(0, &mut contents)?;
    Ok(contents)
}

/// `directory/name` as a path.
pub(crate) fn child(directory: &Path, name: &str) -> PathBuf {
    directory.join(name)
}

/// Makes the name of `directory` in its parent durable.
pub(crate) fn sync_parent_directory(
    file_system: &dyn FileSystem,
    directory: &Path,
) -> Result<(), crate::error::LogError> {
    let parent = match directory.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    file_system
        .sync_directory(&parent)
        .map_err(crate::error::LogError::io("fsync directory", &parent))
}
