//! Which cluster a node belongs to: its cluster id, derived once from the
//! founders and a token, kept in `<data dir>/CLUSTER_ID`, and checked
//! against the flags on every start.
//!
//! keel-net refuses handshakes that carry another cluster id, so two
//! clusters on the same hosts (a test cluster beside production, a cluster
//! rebuilt from scratch beside its old members, founders started with
//! different lists) cannot mix their logs. That holds only if the id
//! differs between clusters and stays the same for a cluster's whole life:
//!
//! - **Founding** (`--initial-cluster`, first start): the id is
//!   [`keel_net::derive_cluster_id`] of the list and
//!   `--initial-cluster-token` (as etcd's `--initial-cluster-token`), so
//!   every founder started with the same list and token computes the same
//!   id, and founders given different lists or tokens get different ones.
//! - **Joining** (`--join`, first start): the id is `--cluster-id`, read
//!   from any member (`GET /v1/cluster`).
//! - **Restarting**: the id is the stored one. Flags that give an id
//!   (`--initial-cluster` with its token, or `--cluster-id`) must give the
//!   stored one, else the node refuses to start: it was started on another
//!   cluster's data directory, or with another cluster's flags.
//! - **A data directory from before `CLUSTER_ID`** (it holds a log or
//!   snapshots but no id) keeps the id it ran with, [`LEGACY_CLUSTER_ID`]
//!   or `--cluster-id`, and records nothing: its founding list was never
//!   checked, so it is not checked now.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use keel::NodeId;

/// The name of the file in the data directory that holds the cluster id.
pub const CLUSTER_ID_FILE: &str = "CLUSTER_ID";

/// The token used when `--initial-cluster-token` is not given. Give each
/// cluster a token of its own: with this one, two clusters founded with
/// the same list (the same hosts and ports) get the same id.
///
/// ```
/// assert_eq!(keel_kv::cluster_identity::DEFAULT_INITIAL_CLUSTER_TOKEN, "keel-cluster");
/// ```
pub const DEFAULT_INITIAL_CLUSTER_TOKEN: &str = "keel-cluster";

/// The id every cluster used before ids were derived and stored (the old
/// default of `--cluster-id`): what a data directory without `CLUSTER_ID`
/// keeps running with.
///
/// ```
/// use keel_kv::cluster_identity::{format_cluster_id, LEGACY_CLUSTER_ID};
/// assert_eq!(format_cluster_id(LEGACY_CLUSTER_ID), "000000006b65656c");
/// ```
pub const LEGACY_CLUSTER_ID: u64 = 0x6b65_656c;

/// A cluster id as `keel-kv` writes it: 16 lowercase hex digits.
///
/// ```
/// assert_eq!(keel_kv::cluster_identity::format_cluster_id(0x2a), "000000000000002a");
/// ```
pub fn format_cluster_id(cluster_id: u64) -> String {
    format!("{cluster_id:016x}")
}

/// Parses a cluster id written as hex digits (1 to 16, an optional `0x`).
///
/// ```
/// use keel_kv::cluster_identity::parse_cluster_id;
/// assert_eq!(parse_cluster_id("000000000000002a"), Ok(0x2a));
/// assert_eq!(parse_cluster_id("0x2A"), Ok(0x2a));
/// assert!(parse_cluster_id("42 nodes").is_err());
/// ```
///
/// # Errors
/// A message naming the text when it is not 1 to 16 hex digits.
pub fn parse_cluster_id(text: &str) -> Result<u64, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 16 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a cluster id (16 hex digits)"));
    }
    u64::from_str_radix(digits, 16).map_err(|error| format!("{text:?}: {error}"))
}

/// The cluster id of a cluster founded by `founders` (id, peer address)
/// with `token`: [`keel_net::derive_cluster_id`].
///
/// ```
/// use keel_kv::cluster_identity::founding_cluster_id;
/// let founders = [(1, "10.0.0.1:7001".to_string()), (2, "10.0.0.2:7001".to_string())];
/// assert_ne!(founding_cluster_id(&founders, "orders"), founding_cluster_id(&founders, "billing"));
/// ```
pub fn founding_cluster_id(founders: &[(u64, String)], token: &str) -> u64 {
    keel_net::derive_cluster_id(
        founders
            .iter()
            .map(|(id, address)| (NodeId::new(*id), address.as_str())),
        token,
    )
}

/// Where the cluster id a node is started with comes from, as its flags
/// say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterIdFlags {
    /// `--initial-cluster` (and its token): the id derived from them.
    Founders {
        /// The founding list.
        founders: Vec<(u64, String)>,
        /// `--initial-cluster-token`.
        token: String,
    },
    /// `--cluster-id`.
    Given(u64),
    /// Neither: only a stored id will do.
    Absent,
}

impl ClusterIdFlags {
    fn cluster_id(&self) -> Option<u64> {
        match self {
            ClusterIdFlags::Founders { founders, token } => Some(founding_cluster_id(founders, token)),
            ClusterIdFlags::Given(cluster_id) => Some(*cluster_id),
            ClusterIdFlags::Absent => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            ClusterIdFlags::Founders { token, .. } => {
                format!("--initial-cluster and --initial-cluster-token {token:?}")
            }
            ClusterIdFlags::Given(_) => "--cluster-id".to_string(),
            ClusterIdFlags::Absent => "no flag".to_string(),
        }
    }
}

/// The cluster id node data in `data_dir` belongs to, given the flags: the
/// stored id (which the flags must not contradict), or, on a first start,
/// the id the flags give, stored durably before the node starts (see the
/// [module](self) docs for every case).
///
/// ```
/// use keel_kv::cluster_identity::{resolve_cluster_id, ClusterIdFlags};
/// let directory = tempfile::tempdir().unwrap();
/// let founders = vec![(1, "127.0.0.1:7001".to_string())];
/// let flags = ClusterIdFlags::Founders { founders: founders.clone(), token: "a".into() };
/// let founded = resolve_cluster_id(directory.path(), &flags).unwrap();
/// assert_eq!(resolve_cluster_id(directory.path(), &ClusterIdFlags::Absent), Ok(founded));
/// let other = ClusterIdFlags::Founders { founders, token: "b".into() };
/// assert!(resolve_cluster_id(directory.path(), &other).is_err());
/// ```
///
/// # Errors
/// What is wrong and what to do, in terms of `keel-kv serve`'s flags: the
/// flags contradict the stored id, a new directory has no id to take, or
/// the file cannot be read or written.
pub fn resolve_cluster_id(data_dir: &Path, flags: &ClusterIdFlags) -> Result<u64, String> {
    let stored = read_cluster_id(data_dir)?;
    let wanted = flags.cluster_id();
    match (stored, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => Err(format!(
            "--data-dir {} belongs to cluster {}, but {} give cluster {}: this directory was made for another cluster, or the flags changed since it was founded. Restart it with the flags it was founded with (the same --initial-cluster list, as text, and the same token), or without --initial-cluster and --cluster-id (the directory knows its cluster); to start a new cluster, give it an empty --data-dir",
            data_dir.display(),
            format_cluster_id(stored),
            flags.describe(),
            format_cluster_id(wanted)
        )),
        (Some(stored), _) => Ok(stored),
        (None, _) if holds_node_state(data_dir) => {
            let cluster_id = match flags {
                ClusterIdFlags::Given(cluster_id) => *cluster_id,
                _ => LEGACY_CLUSTER_ID,
            };
            tracing::warn!(
                cluster_id = %format_cluster_id(cluster_id),
                "this data directory predates {CLUSTER_ID_FILE}: it keeps the cluster id it ran with, and its founding list is not checked"
            );
            Ok(cluster_id)
        }
        (None, Some(wanted)) => {
            write_cluster_id(data_dir, wanted)?;
            Ok(wanted)
        }
        (None, None) => Err(format!(
            "--data-dir {} is new and no flag says which cluster it belongs to: found a cluster with --initial-cluster (and --initial-cluster-token), or join one with --join --cluster-id <id> (any member's GET /v1/cluster shows its cluster_id)",
            data_dir.display()
        )),
    }
}

/// Whether `data_dir` holds a node's log or snapshots (written by a run
/// from before `CLUSTER_ID` existed, when nothing else is there).
fn holds_node_state(data_dir: &Path) -> bool {
    ["log", "snapshots"]
        .iter()
        .any(|name| std::fs::read_dir(data_dir.join(name)).is_ok_and(|mut entries| entries.next().is_some()))
}

fn read_cluster_id(data_dir: &Path) -> Result<Option<u64>, String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_cluster_id(&text).map(Some).map_err(|error| {
            format!(
                "{} is damaged ({error}); it was written by hand or the disk failed",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("reading {}: {error}", path.display())),
    }
}

/// Writes `CLUSTER_ID` durably: a temporary file, synced, renamed over,
/// and the directory synced, so a crash leaves no file or a whole one.
fn write_cluster_id(data_dir: &Path, cluster_id: u64) -> Result<(), String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let temporary = data_dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut file = File::create(&temporary)?;
        writeln!(file, "{}", format_cluster_id(cluster_id))?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        File::open(data_dir)?.sync_all()
    };
    write().map_err(|error| format!("writing {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn founders(addresses: &[&str]) -> ClusterIdFlags {
        ClusterIdFlags::Founders {
            founders: addresses
                .iter()
                .enumerate()
                .map(|(index, address)| (index as u64 + 1, address.to_string()))
                .collect(),
            token: "t".to_string(),
        }
    }

    #[test]
    fn a_founder_stores_its_id_and_a_restart_must_agree() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path();
        let flags = founders(&["a:1", "b:1"]);
        let founded = resolve_cluster_id(path, &flags).unwrap();
        let text = std::fs::read_to_string(path.join(CLUSTER_ID_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", format_cluster_id(founded)));
        assert_eq!(resolve_cluster_id(path, &flags), Ok(founded));
        assert_eq!(resolve_cluster_id(path, &ClusterIdFlags::Absent), Ok(founded));
        assert_eq!(
            resolve_cluster_id(path, &ClusterIdFlags::Given(founded)),
            Ok(founded)
        );
        for other in [founders(&["a:1", "c:1"]), ClusterIdFlags::Given(founded ^ 1)] {
            let refused = resolve_cluster_id(path, &other).unwrap_err();
            assert!(refused.contains(&format_cluster_id(founded)), "{refused}");
            assert!(refused.contains("empty --data-dir"), "{refused}");
        }
    }

    #[test]
    fn a_new_directory_needs_an_id_and_an_old_one_keeps_its_own() {
        let directory = tempfile::tempdir().unwrap();
        let refused = resolve_cluster_id(directory.path(), &ClusterIdFlags::Absent).unwrap_err();
        assert!(refused.contains("--join --cluster-id"), "{refused}");
        assert_eq!(read_cluster_id(directory.path()), Ok(None));

        std::fs::create_dir_all(directory.path().join("log/segment")).unwrap();
        let flags = founders(&["a:1"]);
        assert_eq!(
            resolve_cluster_id(directory.path(), &flags),
            Ok(LEGACY_CLUSTER_ID)
        );
        assert_eq!(
            resolve_cluster_id(directory.path(), &ClusterIdFlags::Given(9)),
            Ok(9)
        );
        assert_eq!(read_cluster_id(directory.path()), Ok(None), "nothing recorded");
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join(CLUSTER_ID_FILE), "cluster one\n").unwrap();
        let refused = resolve_cluster_id(directory.path(), &ClusterIdFlags::Given(1)).unwrap_err();
        assert!(refused.contains("damaged"), "{refused}");
    }
}
