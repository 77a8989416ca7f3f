//! Whose data directory this is: an exclusive lock for the running node,
//! and the node id the directory was made for.
//!
//! Two processes on one data directory would both append to the same log
//! and vote from the same hard state: two voters with one identity, which
//! breaks every guarantee Raft gives. A node restarted with another id on
//! a member's directory would do the same under a new name. So a node
//! takes an exclusive lock on `<data dir>/LOCK` before it reads anything,
//! holds it until it stops, and refuses a directory recorded (in
//! `<data dir>/NODE_ID`) for another id.
//!
//! A node that learns it was removed from its cluster records it in
//! `<data dir>/REMOVED` (how it learned, as text), so that it knows at
//! once when restarted on the directory (see [`crate::removal`]).
//!
//! The lock is an advisory `flock(2)` lock: the kernel drops it when the
//! process dies, however it dies, so a `kill -9` never leaves a stale lock
//! behind. The file also holds the holder's process id, for the message a
//! second process gets. On platforms without `flock` there is no lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use keel::NodeId;

use crate::node::StartError;
use crate::removal::Removal;

const LOCK_FILE: &str = "LOCK";
const NODE_ID_FILE: &str = "NODE_ID";
const REMOVED_FILE: &str = "REMOVED";

/// A data directory this process holds for one node; the lock is released
/// when it is dropped.
#[derive(Debug)]
pub(crate) struct DataDirectory {
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<File>,
}

impl DataDirectory {
    /// Locks `path` for node `id` (creating it if needed), and records `id`
    /// in a directory that has none yet.
    ///
    /// # Errors
    /// [`StartError::DataDirectoryInUse`] if another process holds it,
    /// [`StartError::WrongNode`] if it was made for another node,
    /// [`StartError::DataDirectory`] if it cannot be used at all.
    pub(crate) fn open(path: &Path, id: NodeId) -> Result<Self, StartError> {
        std::fs::create_dir_all(path).map_err(|error| unusable(path, error))?;
        let directory = DataDirectory::lock(path)?;
        match read_node_id(path)? {
            Some(stored) if stored != id => Err(StartError::WrongNode {
                path: path.to_path_buf(),
                stored,
                configured: id,
            }),
            Some(_) => Ok(directory),
            None => {
                write_node_id(path, id)?;
                Ok(directory)
            }
        }
    }

    #[cfg(unix)]
    fn lock(path: &Path) -> Result<Self, StartError> {
        use nix::errno::Errno;
        use nix::fcntl::{Flock, FlockArg};

        let lock_path = path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|error| unusable(&lock_path, error))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StartError::DataDirectoryInUse {
                    path: path.to_path_buf(),
                    holder_process_id: holder.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(unusable(&lock_path, errno)),
        };
        // Who holds it, for the message another process gets. Best effort:
        // the lock, not this text, is what keeps others out.
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", std::process::id());
        let _ = lock.sync_data();
        Ok(DataDirectory { _lock: lock })
    }

    #[cfg(not(unix))]
    fn lock(_path: &Path) -> Result<Self, StartError> {
        Ok(DataDirectory {})
    }
}

/// Checks that `path` could be opened for node `id` now: not held by
/// another process, not made for another node. Nothing is held afterwards;
/// [`Node::start`](crate::Node::start) takes the lock for good. Call it
/// before anything slow or visible (binding ports) to fail early with the
/// same error the start would give.
///
/// ```
/// use keel::NodeId;
/// let directory = tempfile::tempdir().unwrap();
/// keel_node::check_data_directory(directory.path(), NodeId::new(1)).unwrap();
/// // The directory now belongs to node 1.
/// let error = keel_node::check_data_directory(directory.path(), NodeId::new(9)).unwrap_err();
/// assert!(matches!(error, keel_node::StartError::WrongNode { .. }));
/// ```
///
/// # Errors
/// As [`Node::start`](crate::Node::start) for the data directory.
pub fn check_data_directory(path: &Path, id: NodeId) -> Result<(), StartError> {
    DataDirectory::open(path, id).map(drop)
}

fn unusable(path: &Path, error: impl std::fmt::Display) -> StartError {
    StartError::DataDirectory {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn read_node_id(path: &Path) -> Result<Option<NodeId>, StartError> {
    let id_path = path.join(NODE_ID_FILE);
    let text = match std::fs::read_to_string(&id_path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unusable(&id_path, error)),
    };
    match text.trim().parse::<u64>() {
        Ok(id) if id > 0 => Ok(Some(NodeId::new(id))),
        _ => Err(unusable(
            &id_path,
            format!("holds {text:?}, not a node id; it was damaged or written by hand"),
        )),
    }
}

fn write_node_id(path: &Path, id: NodeId) -> Result<(), StartError> {
    write_durably(path, NODE_ID_FILE, &format!("{}\n", id.get()))
        .map_err(|error| unusable(&path.join(NODE_ID_FILE), error))
}

/// The removal recorded in the data directory at `path` by an earlier run,
/// if any.
pub(crate) fn recorded_removal(path: &Path) -> Result<Option<Removal>, StartError> {
    let removed_path = path.join(REMOVED_FILE);
    match std::fs::read_to_string(&removed_path) {
        Ok(text) => Ok(Some(Removal::Recorded {
            reason: text.trim().to_string(),
        })),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(unusable(&removed_path, error)),
    }
}

/// Records in the data directory at `path` that the node was removed, and
/// how it learned it.
pub(crate) fn record_removal(path: &Path, removal: &Removal) -> std::io::Result<()> {
    let reason = match removal {
        Removal::Recorded { reason } => reason.clone(),
        other => other.to_string(),
    };
    write_durably(path, REMOVED_FILE, &format!("{reason}\n"))
}

/// Writes `<directory>/<name>` durably: a temporary file, synced, renamed
/// over, and the directory synced, so a crash leaves either the old file
/// (or none) or the whole new one.
fn write_durably(directory: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    let temporary: PathBuf = directory.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, directory.join(name))?;
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_one_nodes_and_held_by_one_process_at_a_time() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("node");
        let held = DataDirectory::open(&path, NodeId::new(1)).unwrap();
        assert_eq!(read_node_id(&path).unwrap(), Some(NodeId::new(1)));
        if cfg!(unix) {
            // A second open (as another process would) finds it held, and
            // learns by whom.
            match DataDirectory::open(&path, NodeId::new(1)) {
                Err(StartError::DataDirectoryInUse {
                    holder_process_id, ..
                }) => assert_eq!(holder_process_id, Some(std::process::id())),
                other => panic!("opened a held directory: {other:?}"),
            }
        }
        drop(held);
        let again = DataDirectory::open(&path, NodeId::new(1)).unwrap();
        drop(again);
        match DataDirectory::open(&path, NodeId::new(9)) {
            Err(StartError::WrongNode {
                stored, configured, ..
            }) => assert_eq!((stored, configured), (NodeId::new(1), NodeId::new(9))),
            other => panic!("opened node 1's directory as node 9: {other:?}"),
        }
    }

    #[test]
    fn a_removal_is_recorded_for_the_next_run() {
        let directory = tempfile::tempdir().unwrap();
        assert_eq!(recorded_removal(directory.path()).unwrap(), None);
        let removal = Removal::Applied {
            index: keel::Index::new(7),
        };
        record_removal(directory.path(), &removal).unwrap();
        assert_eq!(
            recorded_removal(directory.path()).unwrap(),
            Some(Removal::Recorded {
                reason: removal.to_string()
            })
        );
    }

    #[test]
    fn a_damaged_node_id_is_refused_not_overwritten() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(NODE_ID_FILE), "node one\n").unwrap();
        assert!(matches!(
            DataDirectory::open(directory.path(), NodeId::new(1)),
            Err(StartError::DataDirectory { .. })
        ));
    }
}
