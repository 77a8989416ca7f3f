//! Data-driven scenario tests: each file under `tests/scenarios/` scripts a
//! cluster of [`keel::testing::Cluster`] nodes and holds the expected output
//! of every command. Goal: show the protocol's message flow for the
//! situations the Raft paper and Ongaro's thesis discuss, in a form a
//! reviewer can read, and fail when the core's behaviour changes.
//!
//! # File format
//!
//! ```text
//! # Comments start with '#'. The header says what the file checks and
//! # cites the paper section. A header line `# BUG: ...` skips the file.
//! add-nodes 3 pre-vote=false
//! ----
//! n1: follower term=0 ...
//!
//! campaign 1
//! ----
//! ...
//! ```
//!
//! A command is one line; `----` follows it, then the expected output up to
//! the next blank line. Output never contains blank lines.
//!
//! Set `KEEL_REWRITE=1` to rewrite the files with the actual output (then
//! review the diff like code). Set `KEEL_RUN_BUGS=1` to run files marked
//! `# BUG:` too.
//!
//! # Commands
//!
//! - `add-nodes N [pre-vote=B] [check-quorum=B] [max-inflight=N]
//!   [max-inflight-bytes=N] [max-uncommitted-bytes=N] [max-message-bytes=N]
//!   [forward=B] [async=B] [election-min=N] [election-max=N] [heartbeat=N]
//!   [seed=N] [bootstrap-snapshot=B] [priorities=P1,P2,...]`: starts a
//!   cluster of voters `1..=N`. With `bootstrap-snapshot=true` the founders
//!   start from a snapshot at index 1 holding the membership (so nodes added
//!   later learn it); `priorities` sets each founder's election priority.
//! - `add-node ID`: starts an empty node (no log, no membership) with the
//!   founders' settings, waiting to be added by a membership change.
//! - `conf-change ID [add-voter=IDS] [add-learner=IDS] [remove=IDS]
//!   [transition=auto|implicit|explicit]` or `conf-change ID leave-joint`:
//!   proposes a membership change on `ID` (IDS: `4` or `4,5`); prints `ok`
//!   or the refusal.
//! - `transfer-leader ID TARGET`: asks `ID` to hand leadership to `TARGET`.
//! - `read-index ID CONTEXT [mode=safe|lease]`: asks `ID` for a read index;
//!   read states and dropped reads show up in its `Ready`.
//! - `compact ID [INDEX]`: snapshot at the applied index, discard the log
//!   up to INDEX (default: the applied index).
//! - `report-snapshot ID TO delivered|failed`, `report-unreachable ID TO`:
//!   what a transport reports to leader `ID` about `TO`.
//! - `campaign ID`: the node starts an election (pre-vote first if enabled).
//! - `propose ID DATA [bytes=N]`: proposes DATA (repeated to N bytes); prints
//!   `ok` or the error.
//! - `tick IDS [N]` (IDS: `2`, `1,3` or `all`): ticks N times (default 1); prints role changes.
//! - `deliver-msgs [from=ID] [to=ID] [type=KIND] [count=N] [drop=true]
//!   [reverse=true]`: delivers (or drops) the matching messages in the
//!   network, in send order (or reversed); prints each and what it changed.
//! - `dup-msgs [filters]`: appends a copy of each matching message.
//! - `stash-msgs [filters]` / `unstash-msgs`: holds messages aside (to deliver
//!   them late, after the cluster moved on) and puts them back at the end of
//!   the network.
//! - `msgs`: lists the network.
//! - `process-ready IDS`: handles the nodes' `Ready`s and prints them. On
//!   a node with `async=true`, only hands the `Ready` out: its messages are
//!   sent, its writes and committed entries wait for `persist` and `apply`.
//! - `persist ID [count=N]`: (async) makes the oldest handed-out writes
//!   durable, then releases the messages that waited for them.
//! - `apply ID [count=N]`: (async) applies handed-out committed entries.
//! - `stabilize [quiet=true] [hold-apply=IDS]`: process-ready (plus persist
//!   and apply on async nodes) and deliver until nothing moves, printing
//!   everything (with `quiet=true`, only role changes: for setting the
//!   stage). `hold-apply` leaves the listed async nodes' committed entries
//!   unapplied (a slow state machine).
//! - `tick-by ID N`: charges N ticks at once (`RawNode::tick_by`: time that
//!   passed without ticks, a process pause); prints role changes.
//! - `partition 1,2 3`, `isolate ID`, `cut FROM TO`, `heal`.
//! - `raft-log ID`: the entries in the node's storage (and its snapshot).
//! - `status IDS`: role, term, leader, commit, applied; peers if leader
//!   (`paused`: a probe is out and unanswered, nothing more is sent); the
//!   membership (`conf:` line) when it is relevant: in clusters started with
//!   `bootstrap-snapshot=true`, or when it is not the founders' any more.
//! - `restart ID`: crash and restart from storage.
//!
//! Every node's invariants are checked after every step and every command.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use keel::testing::{Bootstrap, Cluster, ClusterOptions, Delivery};
use keel::{
    AppendResponse, ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Config,
    Entry, EntryKind, Envelope, MemStorage, Message, NodeId, ReadMode, Ready, Role, SnapshotMetadata,
    SnapshotOutcome, Status, Storage, StorageWrite, VoteKind,
};

// ----- the list of scenario files: one test each --------------------------------

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_file(stringify!($name));
            }
        )*

        const SCENARIO_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    election_basic,
    campaign_unapplied_conf_change,
    single_voter_term_durable,
    lease_after_pause,
    election_five_nodes,
    split_vote,
    pre_vote_partitioned_node,
    check_quorum_step_down,
    check_quorum_two_nodes,
    log_conflict_repair,
    fast_backoff_hint,
    flow_control_inflight_messages,
    flow_control_inflight_bytes,
    uncommitted_size_cap,
    proposal_forwarding,
    proposal_forwarding_disabled,
    async_storage_writes,
    async_commit_broadcast,
    async_crash_before_persist,
    vote_up_to_date_log,
    commit_current_term_only,
    heartbeat_commit,
    restart_recovery,
    stale_term_messages,
    duplicate_reordered_appends,
    message_batching,
    snapshot_lagging_follower,
    snapshot_failure_retry,
    snapshot_crash_before_persist,
    compaction_during_replication,
    conf_add_voter,
    conf_remove_voter,
    learner_replication,
    learner_promote,
    voter_demote,
    joint_auto_leave,
    joint_explicit_leave,
    joint_replace_leader,
    two_node_removal_trap,
    remove_leader,
    conf_change_pending_refused,
    forwarded_proposal_refused,
    removed_server_cannot_disrupt,
    transfer_leader_success,
    transfer_leader_lagging_target,
    transfer_leader_target_down,
    transfer_leader_to_learner_refused,
    read_index_leader,
    read_index_follower,
    read_index_new_leader,
    read_lease_check_quorum,
    read_lease_requires_check_quorum,
    priority_election,
);

/// Every `.txt` file in the directory has a test above, so none is silently
/// left out.
#[test]
fn every_scenario_file_is_listed() {
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(scenario_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "txt") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !SCENARIO_NAMES.contains(&stem.as_str()) {
                unlisted.push(stem);
            }
        }
    }
    assert!(unlisted.is_empty(), "scenario files without a test: {unlisted:?}");
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scenarios")
}

// ----- parsing ------------------------------------------------------------------------

/// One command of a scenario file and the output expected of it.
struct Block {
    /// Comment and blank lines before the command, verbatim.
    preamble: Vec<String>,
    /// 1-based line number of the command.
    line: usize,
    command: String,
    expected: String,
}

struct ScenarioFile {
    blocks: Vec<Block>,
    /// Lines after the last block.
    trailer: Vec<String>,
}

fn parse_file(path: &Path, text: &str) -> ScenarioFile {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut preamble = Vec::new();
    let mut position = 0;
    while position < lines.len() {
        let line = lines[position];
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            preamble.push(line.to_string());
            position += 1;
            continue;
        }
        let command_line = position + 1;
        let separator = lines.get(position + 1).copied();
        assert_eq!(
            separator,
            Some("----"),
            "{}:{}: command `{line}` must be followed by a `----` line",
            path.display(),
            command_line
        );
        position += 2;
        let mut expected = Vec::new();
        while position < lines.len() && !lines[position].trim().is_empty() {
            expected.push(lines[position]);
            position += 1;
        }
        blocks.push(Block {
            preamble: std::mem::take(&mut preamble),
            line: command_line,
            command: line.to_string(),
            expected: expected.join("\n"),
        });
    }
    ScenarioFile {
        blocks,
        trailer: preamble,
    }
}

/// A command split into its name, positional arguments and `key=value`
/// options.
struct Command {
    name: String,
    positional: Vec<String>,
    options: BTreeMap<String, String>,
}

impl Command {
    fn parse(line: &str) -> Command {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut positional = Vec::new();
        let mut options = BTreeMap::new();
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => {
                    options.insert(key.to_string(), value.to_string());
                }
                None => positional.push(word.to_string()),
            }
        }
        Command {
            name,
            positional,
            options,
        }
    }

    fn option<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.options.get(key) {
            None => Ok(None),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|_| format!("option {key}={value} is not valid")),
        }
    }

    fn positional(&self, position: usize, what: &str) -> Result<&str, String> {
        self.positional
            .get(position)
            .map(String::as_str)
            .ok_or_else(|| format!("{} needs {what}", self.name))
    }

    /// Fails on options the command does not know, so typos do not pass
    /// silently.
    fn allow_options(&self, known: &[&str]) -> Result<(), String> {
        match self.options.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(format!("{} does not take option {key}", self.name)),
            None => Ok(()),
        }
    }
}

fn parse_id(text: &str) -> Result<NodeId, String> {
    text.parse::<u64>()
        .map(NodeId::new)
        .map_err(|_| format!("`{text}` is not a node id"))
}

// ----- running a file ----------------------------------------------------------------

fn run_file(name: &str) {
    let path = scenario_dir().join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let header_bug = text
        .lines()
        .take_while(|line| line.trim().is_empty() || line.starts_with('#'))
        .find(|line| line.starts_with("# BUG:"));
    if let Some(bug) = header_bug {
        if std::env::var_os("KEEL_RUN_BUGS").is_none() {
            // Straight to stderr, not through `eprintln!`, which the test
            // harness captures for passing tests: a skip must be seen.
            let banner = "!".repeat(72);
            let message = format!(
                "{banner}\n!!! SKIPPED {}\n!!! {bug}\n!!! (KEEL_RUN_BUGS=1 runs it)\n{banner}\n",
                path.display()
            );
            std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes()).unwrap();
            return;
        }
    }
    let file = parse_file(&path, &text);
    let rewrite = std::env::var_os("KEEL_REWRITE").is_some();
    let mut runner = Runner::default();
    let mut failures = Vec::new();
    let mut actual_outputs = Vec::new();
    for block in &file.blocks {
        let outcome = catch_unwind(AssertUnwindSafe(|| runner.run(&block.command)));
        let actual = match outcome {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => panic!(
                "{}:{}: `{}` is not a valid command: {error}",
                path.display(),
                block.line,
                block.command
            ),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
                    .unwrap_or_default();
                panic!(
                    "{}:{}: `{}` panicked (an invariant or a core assertion): {message}",
                    path.display(),
                    block.line,
                    block.command
                );
            }
        };
        assert!(
            !actual.lines().any(|line| line.trim().is_empty()),
            "{}:{}: output of `{}` has a blank line",
            path.display(),
            block.line,
            block.command
        );
        if actual != block.expected {
            failures.push(format!(
                "{}:{}: `{}`\n--- expected\n{}\n+++ actual\n{}\n",
                path.display(),
                block.line,
                block.command,
                block.expected,
                actual
            ));
        }
        actual_outputs.push(actual);
    }
    if rewrite {
        let mut out = String::new();
        for (block, actual) in file.blocks.iter().zip(&actual_outputs) {
            for line in &block.preamble {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&block.command);
            out.push_str("\n----\n");
            if !actual.is_empty() {
                out.push_str(actual);
                out.push('\n');
            }
        }
        for line in &file.trailer {
            out.push_str(line);
            out.push('\n');
        }
        if out != text {
            std::fs::write(&path, out).unwrap();
            eprintln!("rewrote {}", path.display());
        }
        return;
    }
    if let Some(first) = failures.first() {
        let others: Vec<_> = failures
            .iter()
            .skip(1)
            .map(|failure| failure.lines().next().unwrap())
            .collect();
        panic!(
            "scenario {} differs from its expected output (KEEL_REWRITE=1 rewrites it):\n{first}\n{} later command(s) differ too{}{}",
            path.display(),
            others.len(),
            if others.is_empty() { "" } else { ":\n  " },
            others.join("\n  ")
        );
    }
}

// ----- the runner ----------------------------------------------------------------------

#[derive(Default)]
struct Runner {
    cluster: Option<Cluster>,
    /// Messages held aside by `stash-msgs`.
    stash: Vec<Envelope>,
    /// The founders' config template, for nodes added later.
    template: Option<Config>,
    /// The founding membership.
    founders: ConfState,
    /// Whether `status` always shows the membership.
    show_conf: bool,
}

type CommandResult = Result<String, String>;

impl Runner {
    fn cluster(&mut self) -> Result<&mut Cluster, String> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "no cluster: use add-nodes first".to_string())
    }

    fn run(&mut self, line: &str) -> CommandResult {
        let command = Command::parse(line);
        let mut out = String::new();
        match command.name.as_str() {
            "add-nodes" => self.add_nodes(&command, &mut out)?,
            "campaign" => self.campaign(&command, &mut out)?,
            "propose" => self.propose(&command, &mut out)?,
            "tick" => self.tick(&command, &mut out)?,
            "tick-by" => self.tick_by(&command, &mut out)?,
            "deliver-msgs" => self.deliver_msgs(&command, &mut out)?,
            "dup-msgs" => self.dup_msgs(&command, &mut out)?,
            "stash-msgs" => self.stash_msgs(&command, &mut out)?,
            "unstash-msgs" => self.unstash_msgs(&mut out)?,
            "msgs" => self.msgs(&mut out)?,
            "process-ready" => self.process_ready_command(&command, &mut out)?,
            "persist" => self.persist(&command, &mut out)?,
            "apply" => self.apply(&command, &mut out)?,
            "stabilize" => self.stabilize(&command, &mut out)?,
            "partition" => self.partition(&command, &mut out)?,
            "isolate" => {
                let id = parse_id(command.positional(0, "a node id")?)?;
                self.cluster()?.isolate(id);
                out.push_str("ok\n");
            }
            "cut" => {
                let from = parse_id(command.positional(0, "FROM")?)?;
                let to = parse_id(command.positional(1, "TO")?)?;
                self.cluster()?.cut(from, to);
                out.push_str("ok\n");
            }
            "heal" => {
                self.cluster()?.heal();
                out.push_str("ok\n");
            }
            "raft-log" => self.raft_log(&command, &mut out)?,
            "status" => self.status(&command, &mut out)?,
            "restart" => self.restart(&command, &mut out)?,
            "add-node" => self.add_node(&command, &mut out)?,
            "conf-change" => self.conf_change(&command, &mut out)?,
            "transfer-leader" => self.transfer_leader(&command, &mut out)?,
            "read-index" => self.read_index(&command, &mut out)?,
            "compact" => self.compact(&command, &mut out)?,
            "report-snapshot" => self.report_snapshot(&command, &mut out)?,
            "report-unreachable" => self.report_unreachable(&command, &mut out)?,
            other => return Err(format!("unknown command `{other}`")),
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.check_invariants();
        }
        Ok(out.trim_end().to_string())
    }

    fn ids_argument(&mut self, command: &Command) -> Result<Vec<NodeId>, String> {
        match command.positional(0, "ID or all")? {
            "all" => Ok(self.cluster()?.ids()),
            text => text.split(',').map(parse_id).collect(),
        }
    }

    fn add_nodes(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[
            "pre-vote",
            "check-quorum",
            "max-inflight",
            "max-inflight-bytes",
            "max-uncommitted-bytes",
            "max-message-bytes",
            "forward",
            "async",
            "election-min",
            "election-max",
            "heartbeat",
            "seed",
            "bootstrap-snapshot",
            "priorities",
        ])?;
        if self.cluster.is_some() {
            return Err("add-nodes may be used once per file".into());
        }
        let count: u64 = command
            .positional(0, "a node count")?
            .parse()
            .map_err(|_| "add-nodes needs a number".to_string())?;
        let mut options = ClusterOptions::voters(count);
        // Scenarios that add nodes later need the founders' membership in a
        // snapshot; the others keep logs that start at index 1.
        if command.option::<bool>("bootstrap-snapshot")?.unwrap_or(false) {
            options.bootstrap = Bootstrap::Snapshot;
        } else {
            options.bootstrap = Bootstrap::MembershipOnly;
        }
        let config: &mut Config = &mut options.config;
        if let Some(value) = command.option("pre-vote")? {
            config.pre_vote = value;
        }
        if let Some(value) = command.option("check-quorum")? {
            config.check_quorum = value;
        }
        if let Some(value) = command.option("max-inflight")? {
            config.max_inflight_messages = value;
        }
        if let Some(value) = command.option("max-message-bytes")? {
            config.max_message_bytes = value;
        }
        if let Some(value) = command.option("max-inflight-bytes")? {
            config.max_inflight_bytes = value;
        }
        if let Some(value) = command.option("max-uncommitted-bytes")? {
            config.max_uncommitted_bytes = value;
        }
        if let Some(value) = command.option("forward")? {
            config.forward_proposals = value;
        }
        if let Some(value) = command.option("async")? {
            config.async_storage_writes = value;
        }
        if let Some(value) = command.option("election-min")? {
            config.election_timeout_ticks_min = value;
        }
        if let Some(value) = command.option("election-max")? {
            config.election_timeout_ticks_max = value;
        }
        if let Some(value) = command.option("heartbeat")? {
            config.heartbeat_interval_ticks = value;
        }
        if let Some(value) = command.option("seed")? {
            config.rng_seed = value;
        }
        let priorities: Vec<u64> = match command.options.get("priorities") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|priority| {
                    priority
                        .parse()
                        .map_err(|_| format!("`{priority}` is not a priority"))
                })
                .collect::<Result<_, _>>()?,
        };
        if !priorities.is_empty() && priorities.len() as u64 != count {
            return Err(format!("priorities needs {count} values"));
        }
        self.founders = ConfState::with_voters(options.voters.iter().copied());
        self.show_conf = options.bootstrap == Bootstrap::Snapshot;
        self.template = Some(options.config.clone());
        let cluster = if priorities.is_empty() {
            Cluster::new(options).map_err(|error| format!("cannot build the cluster: {error}"))?
        } else {
            // Per-node configs: build the founders one by one, exactly as
            // `Cluster::new` does, with each one's priority.
            let voters = std::mem::take(&mut options.voters);
            let mut cluster = Cluster::new(options.clone())
                .map_err(|error| format!("cannot build the cluster: {error}"))?;
            for (id, priority) in voters.iter().zip(&priorities) {
                let mut config = node_config(&options.config, *id);
                config.priority = *priority;
                let storage = match options.bootstrap {
                    Bootstrap::Snapshot => {
                        let mut storage = MemStorage::new();
                        storage
                            .apply_snapshot(SnapshotMetadata::bootstrap(self.founders.clone()))
                            .map_err(|error| error.to_string())?;
                        storage
                    }
                    Bootstrap::MembershipOnly => MemStorage::new_with_conf_state(self.founders.clone()),
                };
                cluster
                    .add_node(config, storage)
                    .map_err(|error| format!("cannot build the cluster: {error}"))?;
            }
            cluster
        };
        for id in cluster.ids() {
            writeln!(out, "{}", status_line(&cluster.node(id).status())).unwrap();
        }
        self.cluster = Some(cluster);
        Ok(())
    }

    fn add_node(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let template = self.template.clone().ok_or("no cluster: use add-nodes first")?;
        let cluster = self.cluster()?;
        if cluster.ids().contains(&id) {
            return Err(format!("node {id} exists already"));
        }
        cluster
            .add_node(node_config(&template, id), MemStorage::new())
            .map_err(|error| format!("cannot add node {id}: {error}"))?;
        writeln!(out, "{}", status_line(&cluster.node(id).status())).unwrap();
        Ok(())
    }

    fn conf_change(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["add-voter", "add-learner", "remove", "transition"])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let mut change = ConfChange::leave_joint();
        if command.positional.get(1).map(String::as_str) == Some("leave-joint") {
            if !command.options.is_empty() {
                return Err("leave-joint takes no other change".into());
            }
        } else {
            for (key, kind) in [
                ("add-voter", ConfChangeKind::AddVoter),
                ("add-learner", ConfChangeKind::AddLearner),
                ("remove", ConfChangeKind::RemoveNode),
            ] {
                if let Some(list) = command.options.get(key) {
                    for node in list.split(',') {
                        change = change.with(ConfChangeSingle {
                            kind,
                            node_id: parse_id(node)?,
                        });
                    }
                }
            }
            if change.changes.is_empty() {
                return Err("conf-change needs a change or leave-joint".into());
            }
            change.transition = match command.options.get("transition").map(String::as_str) {
                None | Some("auto") => ConfChangeTransition::Auto,
                Some("implicit") => ConfChangeTransition::JointImplicit,
                Some("explicit") => ConfChangeTransition::JointExplicit,
                Some(other) => return Err(format!("unknown transition `{other}`")),
            };
        }
        let cluster = self.cluster()?;
        let before = soft_views(cluster);
        let result = cluster.node_mut(id).propose_conf_change(&change);
        cluster.check_invariants();
        match result {
            Ok(()) => out.push_str("ok\n"),
            Err(error) => writeln!(out, "error: {error}").unwrap(),
        }
        write_changes(cluster, &before, "", out);
        Ok(())
    }

    fn transfer_leader(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let target = parse_id(command.positional(1, "TARGET")?)?;
        let cluster = self.cluster()?;
        let before = soft_views(cluster);
        let result = cluster.node_mut(id).transfer_leader(target);
        cluster.check_invariants();
        match result {
            Ok(()) => out.push_str("ok\n"),
            Err(error) => writeln!(out, "error: {error}").unwrap(),
        }
        write_changes(cluster, &before, "", out);
        Ok(())
    }

    fn read_index(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["mode"])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let context = command.positional(1, "CONTEXT")?.to_string();
        let mode = match command.options.get("mode").map(String::as_str) {
            None | Some("safe") => ReadMode::Safe,
            Some("lease") => ReadMode::Lease,
            Some(other) => return Err(format!("unknown read mode `{other}`")),
        };
        let cluster = self.cluster()?;
        let result = cluster.node_mut(id).read_index(Bytes::from(context), mode);
        cluster.check_invariants();
        match result {
            Ok(()) => out.push_str("ok\n"),
            Err(error) => writeln!(out, "error: {error}").unwrap(),
        }
        Ok(())
    }

    fn compact(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let cluster = self.cluster()?;
        let applied = cluster.node(id).status().applied;
        let through = match command.positional.get(1) {
            Some(text) => keel::Index::new(text.parse().map_err(|_| format!("`{text}` is not an index"))?),
            None => applied,
        };
        cluster
            .compact(id, through)
            .map_err(|error| format!("compact failed: {error}"))?;
        write_storage_head(cluster.storage(id), out);
        Ok(())
    }

    fn report_snapshot(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let to = parse_id(command.positional(1, "TO")?)?;
        let outcome = match command.positional(2, "delivered or failed")? {
            "delivered" => SnapshotOutcome::Delivered,
            "failed" => SnapshotOutcome::Failed,
            other => return Err(format!("unknown snapshot outcome `{other}`")),
        };
        let cluster = self.cluster()?;
        cluster.node_mut(id).report_snapshot(to, outcome);
        cluster.check_invariants();
        write_peer(cluster, id, to, out);
        Ok(())
    }

    fn report_unreachable(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let to = parse_id(command.positional(1, "TO")?)?;
        let cluster = self.cluster()?;
        cluster.node_mut(id).report_unreachable(to);
        cluster.check_invariants();
        write_peer(cluster, id, to, out);
        Ok(())
    }

    fn campaign(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let cluster = self.cluster()?;
        let before = soft_views(cluster);
        cluster
            .campaign(id)
            .map_err(|error| format!("campaign failed: {error}"))?;
        write_changes(cluster, &before, "", out);
        ok_if_empty(out);
        Ok(())
    }

    fn propose(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["bytes"])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let text = command.positional(1, "DATA")?;
        let data = match command.option::<usize>("bytes")? {
            Some(length) => text.bytes().cycle().take(length).collect::<Vec<u8>>(),
            None => text.as_bytes().to_vec(),
        };
        match self.cluster()?.propose(id, Bytes::from(data)) {
            Ok(()) => out.push_str("ok\n"),
            Err(error) => writeln!(out, "error: {error}").unwrap(),
        }
        Ok(())
    }

    fn tick(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let ids = self.ids_argument(command)?;
        let count: u64 = match command.positional.get(1) {
            Some(text) => text
                .parse()
                .map_err(|_| format!("`{text}` is not a tick count"))?,
            None => 1,
        };
        let cluster = self.cluster()?;
        for tick in 1..=count {
            let before = soft_views(cluster);
            for id in &ids {
                cluster
                    .tick(*id)
                    .map_err(|error| format!("tick failed: {error}"))?;
            }
            write_changes(cluster, &before, &format!("tick {tick}: "), out);
        }
        ok_if_empty(out);
        Ok(())
    }

    fn tick_by(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let text = command.positional(1, "a tick count")?;
        let ticks: u64 = text
            .parse()
            .map_err(|_| format!("`{text}` is not a tick count"))?;
        let cluster = self.cluster()?;
        let before = soft_views(cluster);
        cluster
            .node_mut(id)
            .tick_by(ticks)
            .map_err(|error| format!("tick-by failed: {error}"))?;
        cluster.check_invariants();
        write_changes(cluster, &before, "", out);
        ok_if_empty(out);
        Ok(())
    }

    // ----- the network ------------------------------------------------------------------

    fn deliver_msgs(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["from", "to", "type", "count", "drop", "reverse"])?;
        let filter = MessageFilter::from_command(command)?;
        let drop = command.option::<bool>("drop")?.unwrap_or(false);
        let reverse = command.option::<bool>("reverse")?.unwrap_or(false);
        let cluster = self.cluster()?;
        let (mut selected, rest) = filter.split(cluster.take_in_flight());
        cluster.inject(rest);
        if reverse {
            selected.reverse();
        }
        for envelope in selected {
            if drop {
                writeln!(out, "{} (dropped)", format_envelope(&envelope)).unwrap();
            } else {
                deliver_one(cluster, envelope, out)?;
            }
        }
        if out.is_empty() {
            out.push_str("no messages\n");
        }
        Ok(())
    }

    fn dup_msgs(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["from", "to", "type", "count"])?;
        let filter = MessageFilter::from_command(command)?;
        let cluster = self.cluster()?;
        let in_flight = cluster.take_in_flight();
        let (selected, _) = filter.split(in_flight.clone());
        for envelope in &selected {
            writeln!(out, "copy: {}", format_envelope(envelope)).unwrap();
        }
        cluster.inject(in_flight);
        cluster.inject(selected);
        if out.is_empty() {
            out.push_str("no messages\n");
        }
        Ok(())
    }

    fn stash_msgs(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["from", "to", "type", "count"])?;
        let filter = MessageFilter::from_command(command)?;
        let cluster = self.cluster.as_mut().ok_or("no cluster")?;
        let (selected, rest) = filter.split(cluster.take_in_flight());
        cluster.inject(rest);
        for envelope in &selected {
            writeln!(out, "stashed: {}", format_envelope(envelope)).unwrap();
        }
        self.stash.extend(selected);
        if out.is_empty() {
            out.push_str("no messages\n");
        }
        Ok(())
    }

    fn unstash_msgs(&mut self, out: &mut String) -> Result<(), String> {
        let stash = std::mem::take(&mut self.stash);
        for envelope in &stash {
            writeln!(out, "unstashed: {}", format_envelope(envelope)).unwrap();
        }
        self.cluster()?.inject(stash);
        if out.is_empty() {
            out.push_str("no messages\n");
        }
        Ok(())
    }

    fn msgs(&mut self, out: &mut String) -> Result<(), String> {
        let cluster = self.cluster()?;
        for envelope in cluster.in_flight() {
            writeln!(out, "{}", format_envelope(envelope)).unwrap();
        }
        if out.is_empty() {
            out.push_str("no messages\n");
        }
        Ok(())
    }

    fn partition(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let mut groups = Vec::new();
        for group in &command.positional {
            groups.push(group.split(',').map(parse_id).collect::<Result<Vec<_>, _>>()?);
        }
        if groups.len() < 2 {
            return Err("partition needs at least two groups".into());
        }
        self.cluster()?.partition(&groups);
        out.push_str("ok\n");
        Ok(())
    }

    // ----- readies, persistence, applying ---------------------------------------------

    fn process_ready_command(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let ids = self.ids_argument(command)?;
        let cluster = self.cluster()?;
        for id in ids {
            process_ready(cluster, id, Completion::None, out)?;
        }
        if out.is_empty() {
            out.push_str("no ready\n");
        }
        Ok(())
    }

    fn persist(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["count"])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let count = command.option::<usize>("count")?.unwrap_or(usize::MAX);
        let cluster = self.cluster()?;
        for _ in 0..count {
            if !persist_one(cluster, id, out)? {
                break;
            }
        }
        if out.is_empty() {
            out.push_str("nothing to persist\n");
        }
        Ok(())
    }

    fn apply(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["count"])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let count = command.option::<usize>("count")?.unwrap_or(usize::MAX);
        let cluster = self.cluster()?;
        for _ in 0..count {
            if !apply_one(cluster, id, out)? {
                break;
            }
        }
        if out.is_empty() {
            out.push_str("nothing to apply\n");
        }
        Ok(())
    }

    fn stabilize(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&["quiet", "hold-apply"])?;
        let quiet = command.option::<bool>("quiet")?.unwrap_or(false);
        let held: Vec<NodeId> = match command.options.get("hold-apply") {
            Some(text) => text.split(',').map(parse_id).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let cluster = self.cluster()?;
        if let Some(id) = held.iter().find(|id| !is_async(cluster, **id)) {
            return Err(format!("hold-apply needs an async node; n{} is not", id.get()));
        }
        let mut log = String::new();
        let mut settled = false;
        for _ in 0..1_000 {
            let mut moved = false;
            for id in cluster.ids() {
                let completion = if held.contains(&id) {
                    Completion::PersistOnly
                } else {
                    Completion::All
                };
                moved |= process_ready(cluster, id, completion, &mut log)?;
            }
            let envelopes = cluster.take_in_flight();
            moved |= !envelopes.is_empty();
            for envelope in envelopes {
                deliver_one(cluster, envelope, &mut log)?;
            }
            if !moved {
                settled = true;
                break;
            }
        }
        if quiet {
            // Only the role changes: `  nID is ...` lines.
            for line in log.lines().filter(|line| is_role_change(line)) {
                writeln!(out, "{}", line.trim_start()).unwrap();
            }
        } else {
            out.push_str(&log);
        }
        if !settled {
            return Err("the cluster did not stabilize in 1,000 rounds".into());
        }
        ok_if_empty(out);
        Ok(())
    }

    // ----- inspection -------------------------------------------------------------------

    fn raft_log(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let storage = self.cluster()?.storage(id);
        let entries = storage.all_entries();
        let snapshot = storage
            .snapshot(keel::Index::ZERO, id)
            .map_err(|error| error.to_string())?;
        if !snapshot.is_empty() {
            writeln!(
                out,
                "snapshot: last={} {}",
                snapshot.last,
                format_conf(&snapshot.conf_state)
            )
            .unwrap();
        }
        if entries.is_empty() {
            out.push_str("empty log\n");
        }
        for entry in &entries {
            writeln!(out, "{}", format_entry(entry)).unwrap();
        }
        Ok(())
    }

    fn status(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let ids = self.ids_argument(command)?;
        let show_conf = self.show_conf;
        let founders = self.founders.clone();
        let cluster = self.cluster()?;
        for id in ids {
            let status = cluster.node(id).status();
            writeln!(out, "{}", status_line(&status)).unwrap();
            if show_conf || status.conf_state != founders {
                write!(out, "  conf: {}", format_conf(&status.conf_state)).unwrap();
                if status.role == Role::Leader && status.pending_conf_index > status.applied {
                    write!(out, " pending-change={}", status.pending_conf_index.get()).unwrap();
                }
                out.push('\n');
            }
            if let Some(target) = status.transfer_target {
                writeln!(out, "  transferring to {}", target.get()).unwrap();
            }
            for peer in &status.peers {
                write!(
                    out,
                    "  {}: {} match={} next={}",
                    peer.id.get(),
                    peer.state,
                    peer.matched.get(),
                    peer.next.get()
                )
                .unwrap();
                if peer.probe_paused {
                    out.push_str(" paused");
                }
                if peer.inflight_messages > 0 {
                    write!(
                        out,
                        " inflight={} ({}B)",
                        peer.inflight_messages, peer.inflight_bytes
                    )
                    .unwrap();
                }
                if !peer.recent_active {
                    out.push_str(" inactive");
                }
                if peer.is_learner {
                    out.push_str(" learner");
                }
                out.push('\n');
            }
        }
        Ok(())
    }

    fn restart(&mut self, command: &Command, out: &mut String) -> Result<(), String> {
        command.allow_options(&[])?;
        let id = parse_id(command.positional(0, "a node id")?)?;
        let cluster = self.cluster()?;
        cluster
            .restart(id)
            .map_err(|error| format!("restart failed: {error}"))?;
        writeln!(out, "{}", status_line(&cluster.node(id).status())).unwrap();
        Ok(())
    }
}

// ----- actions shared by several commands --------------------------------------------

fn is_async(cluster: &Cluster, id: NodeId) -> bool {
    cluster.config(id).async_storage_writes
}

/// Handles `id`'s `Ready` and prints it; on an asynchronous node only hands
/// it out, unless `complete_async` (then persists and applies everything
/// pending right after). Returns whether anything happened.
/// What `process_ready` completes of an async node's earlier work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// Only hands the `Ready` out.
    None,
    /// Persists what is pending, applies nothing (a slow state machine).
    PersistOnly,
    /// Persists and applies everything pending.
    All,
}

fn process_ready(
    cluster: &mut Cluster,
    id: NodeId,
    completion: Completion,
    out: &mut String,
) -> Result<bool, String> {
    let error = |error: keel::Error| format!("process-ready {id} failed: {error}");
    if !is_async(cluster, id) {
        let conf_before = cluster.node(id).status().conf_state;
        let Some(ready) = cluster.process_ready(id).map_err(error)? else {
            return Ok(false);
        };
        write_ready(id, &ready, "", out);
        write_conf_change(cluster, id, &conf_before, out);
        return Ok(true);
    }
    let ready = cluster.process_ready_async(id).map_err(error)?;
    if let Some(ready) = &ready {
        write_ready(id, ready, " (async)", out);
    }
    let mut completed = false;
    if completion != Completion::None {
        // Also what earlier `process-ready` commands left pending.
        while persist_one(cluster, id, out)? {
            completed = true;
        }
    }
    if completion == Completion::All {
        while apply_one(cluster, id, out)? {
            completed = true;
        }
    }
    Ok(ready.is_some() || completed)
}

fn persist_one(cluster: &mut Cluster, id: NodeId, out: &mut String) -> Result<bool, String> {
    let Some(ready) = cluster
        .persist_next(id)
        .map_err(|error| format!("persist {id} failed: {error}"))?
    else {
        return Ok(false);
    };
    writeln!(out, "> n{} persisted", id.get()).unwrap();
    if let Some(hard_state) = ready.hard_state() {
        writeln!(out, "  hard-state: {}", format_hard_state(&hard_state)).unwrap();
    }
    if !ready.entries().is_empty() {
        writeln!(out, "  entries: {}", format_entries(ready.entries())).unwrap();
    }
    for envelope in ready.persisted_messages() {
        writeln!(out, "  send: {}", format_envelope(envelope)).unwrap();
    }
    Ok(true)
}

fn apply_one(cluster: &mut Cluster, id: NodeId, out: &mut String) -> Result<bool, String> {
    let conf_before = cluster.node(id).status().conf_state;
    let Some(batch) = cluster
        .apply_next(id)
        .map_err(|error| format!("apply {id} failed: {error}"))?
    else {
        return Ok(false);
    };
    writeln!(
        out,
        "> n{} applied {} up to {}",
        id.get(),
        format_entries(&batch.entries),
        batch.applied_index.get()
    )
    .unwrap();
    write_conf_change(cluster, id, &conf_before, out);
    Ok(true)
}

/// Prints `id`'s membership if applying entries changed it.
fn write_conf_change(cluster: &Cluster, id: NodeId, before: &ConfState, out: &mut String) {
    let after = cluster.node(id).status().conf_state;
    if after != *before {
        writeln!(out, "  n{} membership now {}", id.get(), format_conf(&after)).unwrap();
    }
}

/// The leader `id`'s view of `to`, after a transport report.
fn write_peer(cluster: &Cluster, id: NodeId, to: NodeId, out: &mut String) {
    let status = cluster.node(id).status();
    match status.peers.iter().find(|peer| peer.id == to) {
        Some(peer) => writeln!(
            out,
            "n{} sees {}: {} match={} next={}",
            id.get(),
            to.get(),
            peer.state,
            peer.matched.get(),
            peer.next.get()
        )
        .unwrap(),
        None => writeln!(out, "n{} is not leader: ignored", id.get()).unwrap(),
    }
}

/// The storage's snapshot and first index, after a compaction.
fn write_storage_head(storage: &MemStorage, out: &mut String) {
    let snapshot = storage.snapshot(keel::Index::ZERO, NodeId::new(1)).unwrap();
    let first = Storage::first_index(storage).unwrap();
    let last = Storage::last_index(storage).unwrap();
    write!(
        out,
        "snapshot: last={} {}; ",
        snapshot.last,
        format_conf(&snapshot.conf_state)
    )
    .unwrap();
    if first > last {
        writeln!(out, "log empty").unwrap();
    } else {
        writeln!(out, "log {}..={}", first.get(), last.get()).unwrap();
    }
}

/// The config of node `id` from the founders' template, with the same
/// per-node seed as `Cluster::new`.
fn node_config(template: &Config, id: NodeId) -> Config {
    let mut config = template.clone();
    config.id = id;
    config.rng_seed = template.rng_seed.wrapping_mul(1_000_003).wrapping_add(id.get());
    config
}

fn is_role_change(line: &str) -> bool {
    line.trim_start()
        .strip_prefix('n')
        .and_then(|rest| rest.split_once(' '))
        .is_some_and(|(id, rest)| id.parse::<u64>().is_ok() && rest.starts_with("is "))
}

/// Delivers one message and prints it, with what it changed on the
/// recipient.
fn deliver_one(cluster: &mut Cluster, envelope: Envelope, out: &mut String) -> Result<(), String> {
    let line = format_envelope(&envelope);
    let before = soft_views(cluster);
    let delivery = cluster
        .deliver_traced(envelope)
        .map_err(|error| format!("fatal error delivering `{line}`: {error}"))?;
    match delivery {
        Delivery::Delivered => writeln!(out, "{line}").unwrap(),
        Delivery::Cut => writeln!(out, "{line} (dropped: link cut)").unwrap(),
        Delivery::NoRecipient => writeln!(out, "{line} (dropped: no such node)").unwrap(),
        Delivery::Refused(error) => writeln!(out, "{line}\n  refused: {error}").unwrap(),
    }
    write_changes(cluster, &before, "", out);
    Ok(())
}

/// Selects messages in the network by sender, recipient and kind.
struct MessageFilter {
    from: Option<NodeId>,
    to: Option<NodeId>,
    kind: Option<String>,
    count: usize,
}

impl MessageFilter {
    fn from_command(command: &Command) -> Result<MessageFilter, String> {
        Ok(MessageFilter {
            from: command.option::<u64>("from")?.map(NodeId::new),
            to: command.option::<u64>("to")?.map(NodeId::new),
            kind: command.options.get("type").cloned(),
            count: command.option("count")?.unwrap_or(usize::MAX),
        })
    }

    fn matches(&self, envelope: &Envelope) -> bool {
        self.from.is_none_or(|from| from == envelope.from)
            && self.to.is_none_or(|to| to == envelope.to)
            && self
                .kind
                .as_deref()
                .is_none_or(|kind| kind == kind_name(&envelope.message))
    }

    /// Splits `envelopes` into the (first `count`) matching ones and the
    /// rest, both in their original order.
    fn split(&self, envelopes: Vec<Envelope>) -> (Vec<Envelope>, Vec<Envelope>) {
        let mut selected = Vec::new();
        let mut rest = Vec::new();
        for envelope in envelopes {
            if selected.len() < self.count && self.matches(&envelope) {
                selected.push(envelope);
            } else {
                rest.push(envelope);
            }
        }
        (selected, rest)
    }
}

// ----- role changes ---------------------------------------------------------------------

/// What a reader wants to know changed after an action.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SoftView {
    role: Role,
    term: u64,
    leader: Option<NodeId>,
}

fn soft_views(cluster: &Cluster) -> Vec<(NodeId, SoftView)> {
    cluster
        .ids()
        .into_iter()
        .map(|id| {
            let status = cluster.node(id).status();
            let view = SoftView {
                role: status.role,
                term: status.hard_state.term.get(),
                leader: status.leader,
            };
            (id, view)
        })
        .collect()
}

fn write_changes(cluster: &Cluster, before: &[(NodeId, SoftView)], prefix: &str, out: &mut String) {
    for ((id, old), (_, new)) in before.iter().zip(soft_views(cluster)) {
        if *old != new {
            writeln!(
                out,
                "  {prefix}n{} is {} at term {}{}",
                id.get(),
                new.role,
                new.term,
                match (new.role, new.leader) {
                    (Role::Leader, _) => String::new(),
                    (_, Some(leader)) => format!(" (leader {})", leader.get()),
                    (_, None) => String::new(),
                }
            )
            .unwrap();
        }
    }
}

fn ok_if_empty(out: &mut String) {
    if out.is_empty() {
        out.push_str("ok\n");
    }
}

// ----- formatting -------------------------------------------------------------------------

fn status_line(status: &Status) -> String {
    let mut line = format!(
        "n{}: {} term={} vote={} leader={} commit={} applied={} last={}",
        status.id.get(),
        status.role,
        status.hard_state.term.get(),
        format_optional_id(status.hard_state.vote),
        format_optional_id(status.leader),
        status.hard_state.commit.get(),
        status.applied.get(),
        status.last_index.get(),
    );
    if status.role == Role::Leader {
        write!(line, " uncommitted={}B", status.uncommitted_bytes).unwrap();
    } else {
        write!(
            line,
            " election-timeout={}",
            status.randomized_election_timeout_ticks
        )
        .unwrap();
    }
    line
}

fn format_optional_id(id: Option<NodeId>) -> String {
    id.map_or_else(|| "none".to_string(), |id| id.get().to_string())
}

fn format_hard_state(hard_state: &keel::HardState) -> String {
    format!(
        "term={} vote={} commit={}",
        hard_state.term.get(),
        format_optional_id(hard_state.vote),
        hard_state.commit.get()
    )
}

fn write_ready(id: NodeId, ready: &Ready, mode: &str, out: &mut String) {
    writeln!(out, "> n{} ready{mode}", id.get()).unwrap();
    if let Some(soft) = ready.soft_state() {
        writeln!(
            out,
            "  soft-state: role={} leader={}",
            soft.role,
            format_optional_id(soft.leader)
        )
        .unwrap();
    }
    if let Some(hard_state) = ready.hard_state() {
        writeln!(out, "  hard-state: {}", format_hard_state(&hard_state)).unwrap();
    }
    if let Some(snapshot) = ready.snapshot() {
        writeln!(out, "  snapshot: last={}", snapshot.last).unwrap();
    }
    if !ready.entries().is_empty() {
        writeln!(out, "  entries: {}", format_entries(ready.entries())).unwrap();
    }
    if !ready.committed_entries().is_empty() {
        writeln!(out, "  committed: {}", format_entries(ready.committed_entries())).unwrap();
    }
    for envelope in ready.messages() {
        writeln!(out, "  send: {}", format_envelope(envelope)).unwrap();
    }
    for envelope in ready.persisted_messages() {
        writeln!(out, "  send after persist: {}", format_envelope(envelope)).unwrap();
    }
    for read in ready.read_states() {
        writeln!(
            out,
            "  read-state: index={} context={}",
            read.index.get(),
            format_data(&read.context)
        )
        .unwrap();
    }
    for context in ready.dropped_reads() {
        writeln!(out, "  dropped-read: context={}", format_data(context)).unwrap();
    }
    for refused in ready.refused_proposals() {
        writeln!(
            out,
            "  refused: reason={:?} entries=[{}]",
            refused.reason,
            format_proposed(&refused.entries)
        )
        .unwrap();
    }
}

fn format_ids(ids: &std::collections::BTreeSet<NodeId>) -> String {
    let parts: Vec<String> = ids.iter().map(|id| id.get().to_string()).collect();
    parts.join(",")
}

/// `voters=1,2,3`, plus learners, the outgoing half of a joint
/// configuration and auto-leave when present.
fn format_conf(conf: &ConfState) -> String {
    let mut text = format!("voters=({})", format_ids(conf.voters()));
    if !conf.voters_outgoing().is_empty() {
        write!(text, "&&({})", format_ids(conf.voters_outgoing())).unwrap();
    }
    if !conf.learners().is_empty() {
        write!(text, " learners=({})", format_ids(conf.learners())).unwrap();
    }
    if !conf.learners_next().is_empty() {
        write!(text, " learners-next=({})", format_ids(conf.learners_next())).unwrap();
    }
    if conf.auto_leave() {
        text.push_str(" auto-leave");
    }
    text
}

/// A membership change entry's payload, e.g. `add-voter=4 remove=1 auto`.
fn format_conf_change(data: &Bytes) -> String {
    let Ok(change) = ConfChange::decode(data) else {
        return "undecodable".to_string();
    };
    if change.leaves_joint() {
        return "leave-joint".to_string();
    }
    let mut parts: Vec<String> = change
        .changes
        .iter()
        .map(|single| {
            let kind = match single.kind {
                ConfChangeKind::AddVoter => "add-voter",
                ConfChangeKind::AddLearner => "add-learner",
                ConfChangeKind::RemoveNode => "remove",
            };
            format!("{kind}={}", single.node_id.get())
        })
        .collect();
    match change.transition {
        ConfChangeTransition::Auto if change.changes.len() == 1 => {}
        ConfChangeTransition::Auto => parts.push("auto".into()),
        ConfChangeTransition::JointImplicit => parts.push("implicit".into()),
        ConfChangeTransition::JointExplicit => parts.push("explicit".into()),
    }
    parts.join(" ")
}

fn format_data(data: &[u8]) -> String {
    let plain = data
        .iter()
        .all(|byte| byte.is_ascii_graphic() && !b",[]\"".contains(byte));
    if data.len() > 16 {
        format!("<{}B>", data.len())
    } else if plain {
        String::from_utf8_lossy(data).into_owned()
    } else {
        format!("{:?}", String::from_utf8_lossy(data))
    }
}

fn format_entry(entry: &Entry) -> String {
    let id = entry.log_id();
    match entry.kind {
        EntryKind::Normal if entry.data.is_empty() => id.to_string(),
        EntryKind::Normal => format!("{id}:{}", format_data(&entry.data)),
        EntryKind::ConfChange => {
            format!("{id}:conf({})", format_conf_change(&entry.data))
        }
    }
}

fn format_entries(entries: &[Entry]) -> String {
    let parts: Vec<String> = entries.iter().map(format_entry).collect();
    format!("[{}]", parts.join(" "))
}

/// The kind name used in `type=` filters.
fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Append(_) => "append",
        Message::AppendResponse(_) => "append-resp",
        Message::Vote(request) => match request.kind {
            VoteKind::PreVote => "pre-vote",
            VoteKind::Vote => "vote",
        },
        Message::VoteResponse(response) => match response.kind {
            VoteKind::PreVote => "pre-vote-resp",
            VoteKind::Vote => "vote-resp",
        },
        Message::Heartbeat(_) => "heartbeat",
        Message::HeartbeatResponse(_) => "heartbeat-resp",
        Message::Snapshot(_) => "snapshot",
        Message::TimeoutNow => "timeout-now",
        Message::TransferLeader { .. } => "transfer-leader",
        Message::ReadIndex(_) => "read-index",
        Message::ReadIndexResponse(_) => "read-index-resp",
        Message::Propose(_) => "propose",
        Message::ProposalRefused(_) => "proposal-refused",
        Message::ReadIndexRefused(_) => "read-index-refused",
    }
}

/// One line per message, e.g.
/// `1->2 append term=2 prev=1/5 entries=[2/6] commit=5`.
fn format_envelope(envelope: &Envelope) -> String {
    let mut line = format!(
        "{}->{} {} term={}",
        envelope.from.get(),
        envelope.to.get(),
        kind_name(&envelope.message),
        envelope.term.get()
    );
    match &envelope.message {
        Message::Append(append) => write!(
            line,
            " prev={} entries={} commit={}",
            append.prev,
            format_entries(&append.entries),
            append.commit.get()
        )
        .unwrap(),
        Message::AppendResponse(AppendResponse::Accepted { last_index }) => {
            write!(line, " accept last={}", last_index.get()).unwrap();
        }
        Message::AppendResponse(AppendResponse::Rejected { rejected, hint }) => {
            write!(line, " reject prev={} hint={hint}", rejected.get()).unwrap();
        }
        Message::Vote(request) => {
            write!(line, " last={}", request.last_log).unwrap();
            if request.reason == keel::ElectionReason::Transfer {
                line.push_str(" transfer");
            }
            if request.priority != 0 {
                write!(line, " priority={}", request.priority).unwrap();
            }
        }
        Message::VoteResponse(response) => {
            line.push_str(if response.granted { " granted" } else { " rejected" });
        }
        Message::Heartbeat(heartbeat) => {
            write!(line, " commit={}", heartbeat.commit.get()).unwrap();
            if let Some(round) = heartbeat.read_round {
                write!(line, " read-round={round}").unwrap();
            }
        }
        Message::HeartbeatResponse(response) => {
            if let Some(round) = response.read_round {
                write!(line, " read-round={round}").unwrap();
            }
        }
        Message::Snapshot(metadata) => write!(line, " last={}", metadata.last).unwrap(),
        Message::TimeoutNow => {}
        Message::TransferLeader { target } => write!(line, " target={}", target.get()).unwrap(),
        Message::ReadIndex(request) | Message::ReadIndexRefused(request) => {
            write!(line, " context={}", format_data(&request.context)).unwrap()
        }
        Message::ReadIndexResponse(response) => write!(
            line,
            " index={} context={}",
            response.index.get(),
            format_data(&response.context)
        )
        .unwrap(),
        Message::Propose(proposal) => {
            write!(line, " entries=[{}]", format_proposed(&proposal.entries)).unwrap();
        }
        Message::ProposalRefused(refused) => write!(
            line,
            " reason={:?} entries=[{}]",
            refused.reason,
            format_proposed(&refused.entries)
        )
        .unwrap(),
    }
    line
}

fn format_proposed(entries: &[keel::ProposedEntry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|entry| {
            if entry.kind.is_conf_change() {
                format!("conf({})", format_conf_change(&entry.data))
            } else {
                format_data(&entry.data)
            }
        })
        .collect();
    parts.join(" ")
}
