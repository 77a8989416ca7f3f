//! The per-step checks on every running node.

use keel::{NodeId, Role, Status};

use crate::checker::{Property, SafetyChecker, Violation};
use crate::node;

use super::Simulation;

impl Simulation {
    /// Every per-step check on every node that is up and healthy.
    pub(super) fn check_all(&mut self) -> Result<(), Violation> {
        self.retire_removed();
        for node in &mut self.nodes {
            let id = node.id;
            let Some(running) = node.running_mut() else {
                continue;
            };
            if !running.is_healthy() {
                continue;
            }
            running
                .raw
                .check_invariants()
                .map_err(|broken| Violation::new(Property::NodeInvariant, format!("node {id}: {broken}")))?;
            let status = running.raw.status();
            check_monotonic(id, running, &status)?;
            if status.role == Role::Leader && self.world.checker.observe_leader(status.hard_state.term, id)? {
                // A leader voted for itself in its term, whether or not that
                // vote is durable yet (a sole voter wins at once).
                self.world.checker.observe_vote(id, status.hard_state.term, id)?;
                running.leader_check_pending = true;
                self.world.new_leader = Some(id);
                if let Some((target, by_tick)) = self.world.transfer.take() {
                    if target == id && self.world.now <= by_tick {
                        self.world.stats.transfers_completed += 1;
                    }
                }
            }
            let voters = running.applied_conf.voters().len() as u64;
            if voters > 0 {
                self.world.stats.voters_max = self.world.stats.voters_max.max(voters);
                self.world.stats.voters_min = self.world.stats.voters_min.min(voters);
            }
            let disk_caught_up = running.unpersisted.is_empty();
            if running.leader_check_pending && disk_caught_up {
                running.leader_check_pending = false;
                if status.role == Role::Leader {
                    check_leader_completeness(&self.world.checker, running, &status)?;
                }
            }
            // Also while the disk lags: a leader whose own log is not durable
            // yet counts only its followers, and must still not commit an
            // earlier term's entry by counting.
            check_commit_rule(id, running, &status)?;
            if disk_caught_up {
                track_commit(&mut self.world.checker, id, running, &status)?;
            }
            running.observed.hard_state = status.hard_state;
            running.observed.applied = status.applied;
            running.observed.role = Some(status.role);
            running.observed.leader = status.leader;
        }
        Ok(())
    }
}

/// Term, vote, commit and applied never go back within one incarnation;
/// the state machine never runs ahead of the commit index.
///
/// Across a crash, term and vote come back from the durable hard state
/// (which only grows: the vote check below and the double-vote check cover
/// it), while commit and applied may legitimately restart lower: commit is
/// persisted lazily (no fsync of its own) and clipped to the durable log,
/// and the state machine restarts from its durable snapshot and replays.
fn check_monotonic(id: NodeId, running: &node::Running, status: &Status) -> Result<(), Violation> {
    let before = running.observed.hard_state;
    let now = status.hard_state;
    let mut broken = Vec::new();
    if now.term < before.term {
        broken.push(format!("term {} -> {}", before.term, now.term));
    }
    if now.term == before.term && before.vote.is_some() && now.vote != before.vote {
        broken.push(format!(
            "vote in term {} {:?} -> {:?}",
            now.term, before.vote, now.vote
        ));
    }
    if now.commit < before.commit {
        broken.push(format!("commit {} -> {}", before.commit, now.commit));
    }
    if status.applied < running.observed.applied {
        broken.push(format!(
            "applied {} -> {}",
            running.observed.applied, status.applied
        ));
    }
    if !broken.is_empty() {
        return Err(Violation::new(
            Property::Monotonicity,
            format!("node {id} went back: {}", broken.join(", ")),
        ));
    }
    if running.kv_applied > now.commit {
        return Err(Violation::new(
            Property::StateMachineSafety,
            format!(
                "node {id} applied through {} but its commit index is {}",
                running.kv_applied, now.commit
            ),
        ));
    }
    Ok(())
}

/// A leader advances its commit index only to an entry of its own term
/// (§5.4.2, Figure 8): earlier terms' entries commit only underneath one.
fn check_commit_rule(id: NodeId, running: &node::Running, status: &Status) -> Result<(), Violation> {
    let before = running.observed;
    let stayed_leader = before.role == Some(Role::Leader)
        && status.role == Role::Leader
        && before.hard_state.term == status.hard_state.term;
    let commit = status.hard_state.commit;
    if !stayed_leader || commit <= before.hard_state.commit {
        return Ok(());
    }
    match entry_term(running, commit) {
        Some(term) if term != status.hard_state.term => Err(Violation::new(
            Property::CommitRule,
            format!(
                "leader {id} of term {} advanced its commit index from {} to {} whose entry is of term {term}",
                status.hard_state.term, before.hard_state.commit, commit
            ),
        )),
        _ => Ok(()),
    }
}

/// The term of the node's entry at `index`: the newest write queued for its
/// disk that holds it, else its disk's.
fn entry_term(running: &node::Running, index: keel::Index) -> Option<keel::Term> {
    let queued = running
        .unpersisted
        .iter()
        .rev()
        .find_map(|job| job.entries.iter().find(|entry| entry.index == index));
    queued
        .or_else(|| running.raw.storage().entry(index))
        .map(|entry| entry.term)
}

/// Records the node's newly committed entries (those on its disk).
fn track_commit(
    checker: &mut SafetyChecker,
    id: NodeId,
    running: &mut node::Running,
    status: &Status,
) -> Result<(), Violation> {
    let storage = running.raw.storage();
    let limit = status.hard_state.commit.min(storage.last_index_unchecked());
    let mut index = running.commit_checked.next().max(storage.first_index_unchecked());
    while index <= limit {
        if let Some(entry) = storage.entry(index) {
            checker.observe_committed(id, status.hard_state.term, entry, "commit index")?;
        }
        index = index.next();
    }
    running.commit_checked = running.commit_checked.max(limit);
    Ok(())
}

/// A leader holds every entry committed before its term (§5.4).
fn check_leader_completeness(
    checker: &SafetyChecker,
    running: &node::Running,
    status: &Status,
) -> Result<(), Violation> {
    let storage = running.raw.storage();
    let term = status.hard_state.term;
    for (index, entry_term) in checker.committed_before_term(storage.first_index_unchecked(), term) {
        if index > status.last_index {
            return Err(Violation::new(
                Property::LeaderCompleteness,
                format!(
                    "node {} became leader of term {term} with last index {} but {index} (term {entry_term}) was committed before",
                    status.id, status.last_index
                ),
            ));
        }
        if let Some(entry) = storage.entry(index) {
            if entry.term != entry_term {
                return Err(Violation::new(
                    Property::LeaderCompleteness,
                    format!(
                        "node {} became leader of term {term} holding {} where {} was committed before",
                        status.id,
                        entry.log_id(),
                        keel::LogId::new(entry_term, index)
                    ),
                ));
            }
        }
    }
    Ok(())
}
