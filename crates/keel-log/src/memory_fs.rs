//! An in-memory [`FileSystem`] that injects faults (feature `memory-fs`).
//!
//! It keeps, for every file, what a real disk would hold after a power loss
//! (the *durable* contents and names) apart from what the process sees (the
//! *current* contents and names), and lets a test:
//!
//! - crash at any write or sync boundary ([`MemoryFileSystem::set_crash_at_operation`]):
//!   the operation that reaches the boundary fails (an append may land
//!   partly), every later one fails too, until [`MemoryFileSystem::crash`]
//!   simulates the power loss and restart;
//! - tear unsynced writes at 512 B sectors or 4 KiB pages on a crash
//!   ([`TornWrites`]): a random prefix of the unsynced appends survives,
//!   cut at a sector boundary, sometimes followed by zeros up to the length
//!   the file had (the size reached the disk, the data did not);
//! - flip bits ([`MemoryFileSystem::flip_bit`]);
//! - fail appends with `ENOSPC` ([`MemoryFileSystem::set_no_space`]);
//! - fail the next `fsync` with `EIO` ([`MemoryFileSystem::fail_next_sync`]).
//!
//! Directories are created durably at once; file names follow POSIX: a
//! created, renamed or removed name survives a crash only once its
//! directory was synced. Clones share the same disk.
//!
//! ```
//! use std::path::Path;
//! use keel_log::fs::FileSystem;
//! use keel_log::memory_fs::MemoryFileSystem;
//!
//! let file_system = MemoryFileSystem::new(7);
//! file_system.create_directory_all(Path::new("/log"))?;
//! let mut file = file_system.create_new(Path::new("/log/a"))?;
//! file.append(b"durable")?;
//! file.sync_data()?;
//! file_system.sync_directory(Path::new("/log"))?;
//! file.append(b" and lost")?;
//! file_system.crash();
//! assert_eq!(file_system.file_contents(Path::new("/log/a")).unwrap(), b"durable");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, ReadableFile, WritableFile};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// How unsynced appends survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TornWrites {
    /// Unsynced data is lost entirely.
    #[default]
    Never,
    /// A prefix of the unsynced data survives, cut at a 512-byte sector.
    Sectors512,
    /// A prefix of the unsynced data survives, cut at a 4 KiB page.
    Pages4096,
}

impl TornWrites {
    fn granularity_bytes(self) -> Option<u64> {
        match self {
            TornWrites::Never => None,
            TornWrites::Sectors512 => Some(512),
            TornWrites::Pages4096 => Some(4096),
        }
    }
}

/// An in-memory file system with fault injection; see the [module
/// documentation](self).
#[derive(Clone, Debug)]
pub struct MemoryFileSystem {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names_current: BTreeMap<PathBuf, u64>,
    names_durable: BTreeMap<PathBuf, u64>,
    directories: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles from an older generation fail.
    generation: u64,
    operation_count: u64,
    sync_count: u64,
    crash_at_operation: Option<u64>,
    crashed: bool,
    no_space: bool,
    fail_next_sync: bool,
    torn_writes: TornWrites,
    random_state: u64,
}

impl State {
    fn next_random(&mut self) -> u64 {
        // SplitMix64: small, seeded and good enough to pick cut points.
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.random_state;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_random() % bound
        }
    }

    /// Counts one write or sync boundary; fails if the file system is down
    /// or this is the boundary chosen to crash at.
    fn pass_boundary(&mut self) -> io::Result<()> {
        self.check_up()?;
        self.operation_count += 1;
        if self.crash_at_operation == Some(self.operation_count) {
            self.crashed = true;
            return Err(crashed_error());
        }
        Ok(())
    }

    fn check_up(&self) -> io::Result<()> {
        if self.crashed {
            Err(crashed_error())
        } else {
            Ok(())
        }
    }

    fn check_handle(&self, generation: u64, inode: u64) -> io::Result<&Inode> {
        self.check_up()?;
        if generation != self.generation {
            return Err(io::Error::other("stale file handle from before a crash"));
        }
        self.inodes
            .get(&inode)
            .ok_or_else(|| io::Error::other("file handle to a vanished inode"))
    }

    fn inode_mut(&mut self, generation: u64, inode: u64) -> io::Result<&mut Inode> {
        self.check_handle(generation, inode)?;
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| io::Error::other("file handle to a vanished inode"))
    }

    /// What survives a crash of one inode's contents.
    fn surviving_contents(&mut self, inode: u64) -> Vec<u8> {
        let Some(granularity_bytes) = self.torn_writes.granularity_bytes() else {
            return self
                .inodes
                .get(&inode)
                .map(|node| node.durable.clone())
                .unwrap_or_default();
        };
        let (durable_length, current_length, is_append_only) = match self.inodes.get(&inode) {
            Some(node) => (
                node.durable.len() as u64,
                node.current.len() as u64,
                node.current.starts_with(&node.durable),
            ),
            None => return Vec::new(),
        };
        if !is_append_only || current_length == durable_length {
            return self
                .inodes
                .get(&inode)
                .map(|node| node.durable.clone())
                .unwrap_or_default();
        }
        let cut_random = durable_length + self.random_below(current_length - durable_length + 1);
        let cut = (cut_random / granularity_bytes * granularity_bytes).max(durable_length);
        let zero_fill = self.random_below(4) == 0;
        let Some(node) = self.inodes.get(&inode) else {
            return Vec::new();
        };
        let mut contents = node.current[..cut as usize].to_vec();
        if zero_fill {
            contents.resize(current_length as usize, 0);
        }
        contents
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the file system is down until MemoryFileSystem::crash")
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl MemoryFileSystem {
    /// An empty file system; `seed` drives every random choice (where a
    /// crashing append is cut, how a torn write is torn).
    pub fn new(seed: u64) -> Self {
        let state = State {
            random_state: seed,
            ..State::default()
        };
        MemoryFileSystem {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock already failed the test; carry on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many write and sync boundaries (appends, truncations, syncs,
    /// creations, renames, removals) have been passed so far.
    pub fn operation_count(&self) -> u64 {
        self.lock().operation_count
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().sync_count
    }

    /// Crash when the operation counter reaches `operation` (absolute, see
    /// [`MemoryFileSystem::operation_count`]); `None` disarms.
    pub fn set_crash_at_operation(&self, operation: Option<u64>) {
        self.lock().crash_at_operation = operation;
    }

    /// Whether an injected crash happened and [`MemoryFileSystem::crash`]
    /// has not been called since.
    pub fn is_down(&self) -> bool {
        self.lock().crashed
    }

    /// How unsynced data survives the next crash.
    pub fn set_torn_writes(&self, torn_writes: TornWrites) {
        self.lock().torn_writes = torn_writes;
    }

    /// While `true`, appends fail with `ENOSPC` after writing a random prefix
    /// of their data.
    pub fn set_no_space(&self, no_space: bool) {
        self.lock().no_space = no_space;
    }

    /// Makes the next `sync_data` fail with `EIO`; its unsynced data stays
    /// unsynced.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Power loss and restart: every file goes back to its durable
    /// contents (or a torn version of its unsynced appends, see
    /// [`TornWrites`]), every name to its durable state, and the file system
    /// is up again with the crash point disarmed. Open handles become stale.
    pub fn crash(&self) {
        let mut state = self.lock();
        let live: BTreeSet<u64> = state.names_durable.values().copied().collect();
        let mut survivors = BTreeMap::new();
        for inode in live {
            let contents = state.surviving_contents(inode);
            survivors.insert(
                inode,
                Inode {
                    current: contents.clone(),
                    durable: contents,
                },
            );
        }
        state.inodes = survivors;
        state.names_current = state.names_durable.clone();
        state.generation += 1;
        state.crashed = false;
        state.crash_at_operation = None;
        state.no_space = false;
        state.fail_next_sync = false;
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` in the file at `path`,
    /// in both its current and its durable contents (as a disk would).
    /// Returns `false` if there is no such file or byte.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        assert!(bit < 8, "a byte has 8 bits");
        let mut state = self.lock();
        let Some(&inode) = state.names_current.get(path) else {
            return false;
        };
        let Some(node) = state.inodes.get_mut(&inode) else {
            return false;
        };
        let mut flipped = false;
        for contents in [&mut node.current, &mut node.durable] {
            if let Some(byte) = contents.get_mut(offset as usize) {
                *byte ^= 1 << bit;
                flipped = true;
            }
        }
        flipped
    }

    /// The current contents of the file at `path`.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.names_current.get(path)?;
        state.inodes.get(inode).map(|node| node.current.clone())
    }

    /// Replaces the file at `path` (creating it) with `contents`, durably,
    /// name included: for tests that craft a damaged disk.
    pub fn write_file_durably(&self, path: &Path, contents: &[u8]) {
        let mut state = self.lock();
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(
            inode,
            Inode {
                current: contents.to_vec(),
                durable: contents.to_vec(),
            },
        );
        state.names_current.insert(path.to_path_buf(), inode);
        state.names_durable.insert(path.to_path_buf(), inode);
    }

    /// Removes the file at `path` durably: for tests that craft a damaged
    /// disk. Returns whether it existed.
    pub fn remove_file_durably(&self, path: &Path) -> bool {
        let mut state = self.lock();
        let existed = state.names_current.remove(path).is_some();
        state.names_durable.remove(path);
        existed
    }
}

#[derive(Debug)]
struct MemoryWritableFile {
    state: Arc<Mutex<State>>,
    generation: u64,
    inode: u64,
}

impl MemoryWritableFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WritableFile for MemoryWritableFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.check_handle(self.generation, self.inode)?;
        let boundary = state.pass_boundary();
        let landed_bytes = if boundary.is_err() || state.no_space {
            state.random_below(data.len() as u64 + 1) as usize
        } else {
            data.len()
        };
        let no_space = state.no_space;
        if let Some(node) = state.inodes.get_mut(&self.inode) {
            node.current.extend_from_slice(&data[..landed_bytes]);
        }
        boundary?;
        if no_space {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.lock();
        state.check_handle(self.generation, self.inode)?;
        state.pass_boundary()?;
        if state.fail_next_sync {
            state.fail_next_sync = false;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let node = state.inode_mut(self.generation, self.inode)?;
        node.durable = node.current.clone();
        state.sync_count += 1;
        Ok(())
    }

    fn truncate(&mut self, length_bytes: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.check_handle(self.generation, self.inode)?;
        state.pass_boundary()?;
        let node = state.inode_mut(self.generation, self.inode)?;
        assert!(
            length_bytes <= node.current.len() as u64,
            "truncate may only shorten a file"
        );
        node.current.truncate(length_bytes as usize);
        Ok(())
    }

    fn length_bytes(&self) -> u64 {
        let state = self.lock();
        state
            .inodes
            .get(&self.inode)
            .map_or(0, |node| node.current.len() as u64)
    }
}

#[derive(Debug)]
struct MemoryReadableFile {
    state: Arc<Mutex<State>>,
    generation: u64,
    inode: u64,
}

impl MemoryReadableFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ReadableFile for MemoryReadableFile {
    fn read_exact_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let state = self.lock();
        let node = state.check_handle(self.generation, self.inode)?;
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start + buffer.len();
        let source = node
            .current
            .get(start..end)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn length_bytes(&self) -> io::Result<u64> {
        let state = self.lock();
        Ok(state.check_handle(self.generation, self.inode)?.current.len() as u64)
    }
}

impl FileSystem for MemoryFileSystem {
    fn create_directory_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        for ancestor in path.ancestors() {
            state.directories.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_directory(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_up()?;
        if !state.directories.contains(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(state
            .names_current
            .keys()
            .filter(|name| name.parent() == Some(path))
            .filter_map(|name| {
                name.file_name()
                    .map(|file_name| file_name.to_string_lossy().into_owned())
            })
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.lock();
        state.check_up()?;
        if !state.directories.contains(&parent_of(path)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if state.names_current.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        state.pass_boundary()?;
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.names_current.insert(path.to_path_buf(), inode);
        Ok(Box::new(MemoryWritableFile {
            state: Arc::clone(&self.state),
            generation: state.generation,
            inode,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let state = self.lock();
        state.check_up()?;
        let inode = *state
            .names_current
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(MemoryWritableFile {
            state: Arc::clone(&self.state),
            generation: state.generation,
            inode,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadableFile>> {
        let state = self.lock();
        state.check_up()?;
        let inode = *state
            .names_current
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(MemoryReadableFile {
            state: Arc::clone(&self.state),
            generation: state.generation,
            inode,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        if !state.names_current.contains_key(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.pass_boundary()?;
        if let Some(inode) = state.names_current.remove(from) {
            state.names_current.insert(to.to_path_buf(), inode);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        if !state.names_current.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.pass_boundary()?;
        state.names_current.remove(path);
        Ok(())
    }

    fn sync_directory(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_up()?;
        if !state.directories.contains(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        state.pass_boundary()?;
        let in_directory = |name: &PathBuf| name.parent() == Some(path);
        state.names_durable.retain(|name, _| !in_directory(name));
        let current: Vec<(PathBuf, u64)> = state
            .names_current
            .iter()
            .filter(|(name, _)| in_directory(name))
            .map(|(name, inode)| (name.clone(), *inode))
            .collect();
        state.names_durable.extend(current);
        Ok(())
    }
}
