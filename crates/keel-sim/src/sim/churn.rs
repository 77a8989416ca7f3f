//! Membership churn: nodes added, promoted, demoted, removed and replaced,
//! and removed nodes shut down.

use keel::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, NodeId};

use crate::checker::Violation;
use crate::clock::NodeClock;
use crate::node::{call, Process, SimNode};
use crate::runtime;
use crate::storage::SimStorage;
use crate::trace::TraceEvent;

use super::{Simulation, NODES_MAX};

impl Simulation {
    /// Nodes that learnt they were removed shut down once every voter of
    /// the membership that removed them has applied it too (or, now and
    /// then, are left running: they must not disrupt the cluster).
    ///
    /// The wait matters: a leader removed by a change steps down as soon as
    /// it applies it, and the new members learn that the change committed
    /// only from a later leader. Until they apply it they are still in the
    /// old (or joint) membership and need the removed voters' votes, so
    /// shutting those down at once can leave the rest without a quorum for
    /// good (`SimOptions::retire_at_once` shows it). Applied is not enough
    /// either: the commit index is persisted lazily, so a voter that
    /// crashes before its commit index covering the change is durable
    /// comes back in the membership before; the wait is for that too.
    pub(super) fn retire_removed(&mut self) {
        for position in 0..self.nodes.len() {
            let node = &self.nodes[position];
            let id = node.id;
            let Some(running) = node.running() else {
                continue;
            };
            let Some(removed_at) = running.learnt_removal else {
                continue;
            };
            if node.lingering {
                continue;
            }
            if !node.removal_decided {
                let lingering = self.world.rng.chance(250_000);
                let node = &mut self.nodes[position];
                node.removal_decided = true;
                node.lingering = lingering;
                if lingering {
                    self.world.hash(&[83, id.get()]);
                    self.world.trace_event(TraceEvent::Fault {
                        detail: format!("node {id} learnt it was removed and is left running"),
                    });
                    continue;
                }
            }
            let conf = self.nodes[position]
                .running()
                .map(|running| &running.applied_conf);
            let everyone_applied = self.options.retire_at_once
                || conf.is_some_and(|conf| {
                    conf.voters().iter().chain(conf.voters_outgoing()).all(|voter| {
                        self.nodes
                            .get((voter.get() - 1) as usize)
                            .and_then(SimNode::running)
                            .is_some_and(|other| {
                                // Applied, and durably committed: a voter
                                // that crashes before its commit index is
                                // durable comes back in the membership
                                // before, where it needs this node's vote.
                                other.kv_applied >= removed_at
                                    && other.raw.storage().durable_hard_state().commit >= removed_at
                            })
                    })
                });
            if !everyone_applied {
                continue;
            }
            let node = &mut self.nodes[position];
            node.retired = true;
            node.process = Process::Down {
                storage: Box::new(SimStorage::default()),
                restart_at_tick: u64::MAX,
            };
            self.world
                .network
                .crashed(&mut self.world.rng, self.world.now, id);
            self.world.stats.nodes_retired += 1;
            self.world.hash(&[89, id.get()]);
            self.world.trace_event(TraceEvent::Fault {
                detail: format!("node {id} learnt it was removed and shuts down"),
            });
            self.world.abandon_requests_on(id);
        }
    }

    /// Starts a new, empty node (it learns the membership from a snapshot
    /// once it is added). `None` once [`NODES_MAX`] nodes have been started.
    pub(super) fn spawn_node(&mut self) -> Result<Option<NodeId>, Violation> {
        if self.nodes.len() >= NODES_MAX {
            return Ok(None);
        }
        let id = NodeId::new(self.nodes.len() as u64 + 1);
        #[allow(unused_mut)]
        let mut config = self.shape.template().clone();
        config.id = id;
        config.rng_seed = self.world.rng.next_u64();
        if self.shape.configs.iter().any(|config| config.priority > 0) {
            config.priority = self.world.rng.below(3);
        }
        #[cfg(feature = "drill")]
        {
            config.planted_bug = self.options.planted_bug;
        }
        self.nodes.push(SimNode {
            id,
            config,
            incarnation: 0,
            process: Process::Down {
                storage: Box::new(SimStorage::default()),
                restart_at_tick: self.world.now,
            },
            retired: false,
            lingering: false,
            removal_decided: false,
            clock: NodeClock::draw(&mut self.world.rng, self.shape.clock_spread),
            conf_changes_when_applied: self.shape.conf_changes_when_applied,
        });
        self.world.stats.nodes_added += 1;
        self.restart(self.nodes.len() - 1)?;
        Ok(Some(id))
    }

    /// A membership change, proposed (mostly) on the leader: add a learner,
    /// promote, demote, remove (the leader too), add a voter, replace one or
    /// two voters at once through a joint configuration, or leave an
    /// explicit joint configuration. Keeps 3–7 voters.
    pub(super) fn fault_churn(&mut self) -> Result<(), Violation> {
        let Some((leader, status)) = self.available_leader_status() else {
            return Ok(());
        };
        if status.pending_conf_index > status.applied {
            return Ok(()); // one change at a time: it would be refused
        }
        let conf = status.conf_state;
        let change = if conf.is_joint() {
            if conf.auto_leave() {
                return Ok(()); // the leader leaves it by itself
            }
            ConfChange::leave_joint()
        } else {
            match self.draw_change(&conf, leader)? {
                Some(change) => change,
                None => return Ok(()),
            }
        };
        self.propose_change(leader, &change)
    }

    /// The leader and its status, if it is healthy and responsive: the node
    /// a membership change is proposed through.
    fn available_leader_status(&self) -> Option<(NodeId, keel::Status)> {
        let leader = self.leader()?;
        self.nodes[(leader.get() - 1) as usize]
            .running()
            .filter(|running| running.is_healthy() && running.is_responsive())
            .map(|running| (leader, running.raw.status()))
    }

    /// Proposes `change`, mostly on the leader; sometimes on a follower,
    /// which forwards it.
    fn propose_change(&mut self, leader: NodeId, change: &ConfChange) -> Result<(), Violation> {
        let available = self.available();
        let position = match self.world.rng.pick(&available) {
            Some(position) if self.world.rng.chance(200_000) => *position,
            _ => (leader.get() - 1) as usize,
        };
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        let result = call(id, running, |raw| raw.propose_conf_change(change))?;
        if result.is_ok() {
            self.world.stats.conf_changes_proposed += 1;
        }
        self.world.hash(&[
            97,
            id.get(),
            change.changes.len() as u64,
            u64::from(result.is_ok()),
        ]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: membership change {change:?}: {result:?}"),
        });
        runtime::process_ready(node, &mut self.world)
    }

    /// Replaces a voter other than `kept` and the leader with a learner or
    /// a new node (one joint change, left automatically): while `kept`'s
    /// applier is stalled, its core stays in the membership before.
    pub(super) fn replace_a_voter_except(&mut self, kept: NodeId) -> Result<(), Violation> {
        let Some((leader, status)) = self.available_leader_status() else {
            return Ok(());
        };
        let conf = status.conf_state;
        if status.pending_conf_index > status.applied || conf.is_joint() || self.shape.voters_range().1 == 1 {
            return Ok(());
        }
        let victims: Vec<NodeId> = conf
            .voters()
            .iter()
            .copied()
            .filter(|voter| *voter != kept && *voter != leader)
            .collect();
        let Some(&victim) = self.world.rng.pick(&victims) else {
            return Ok(());
        };
        let learners: Vec<NodeId> = conf.learners().iter().copied().collect();
        let incoming = match self.world.rng.pick(&learners) {
            Some(learner) => *learner,
            None => match self.spawn_node()? {
                Some(new) => new,
                None => return Ok(()),
            },
        };
        let single = |kind, node_id| ConfChangeSingle { kind, node_id };
        let change = ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![
                single(ConfChangeKind::AddVoter, incoming),
                single(ConfChangeKind::RemoveNode, victim),
            ],
            context: bytes::Bytes::new(),
        };
        self.propose_change(leader, &change)
    }

    /// Draws a change to a simple membership `conf` led by `leader`.
    pub(super) fn draw_change(
        &mut self,
        conf: &ConfState,
        leader: NodeId,
    ) -> Result<Option<ConfChange>, Violation> {
        let voters: Vec<NodeId> = conf.voters().iter().copied().collect();
        let learners: Vec<NodeId> = conf.learners().iter().copied().collect();
        let (voters_min, voters_max) = self.shape.voters_range();
        // Replacing a sole voter can leave the new one in the joint
        // membership for good (see `SimOptions::replace_sole_voter`).
        let replace_allowed = voters_max > 1 || self.options.replace_sole_voter;
        let can_grow = voters.len() < voters_max;
        let can_shrink = voters.len() > voters_min;
        let can_spawn = self.nodes.len() < NODES_MAX;
        let weights = [
            if can_spawn { 3 } else { 0 },                        // add a learner
            if can_grow && !learners.is_empty() { 3 } else { 0 }, // promote
            if can_shrink { 1 } else { 0 },                       // demote
            if learners.is_empty() { 0 } else { 1 },              // remove a learner
            if can_shrink { 2 } else { 0 },                       // remove a voter
            if can_grow && can_spawn { 1 } else { 0 },            // add a voter
            if replace_allowed && (can_spawn || !learners.is_empty()) {
                3
            } else {
                0
            }, // replace voters
        ];
        let single = |kind, node_id| ConfChangeSingle { kind, node_id };
        let change = match self.world.rng.weighted(&weights) {
            Some(0) => match self.spawn_node()? {
                Some(new) => ConfChange::add_learner(new),
                None => return Ok(None),
            },
            Some(1) => match self.world.rng.pick(&learners) {
                Some(learner) => ConfChange::add_voter(*learner),
                None => return Ok(None),
            },
            Some(2) => match self.world.rng.pick(&voters) {
                Some(voter) => ConfChange::add_learner(*voter),
                None => return Ok(None),
            },
            Some(3) => match self.world.rng.pick(&learners) {
                Some(learner) => ConfChange::remove_node(*learner),
                None => return Ok(None),
            },
            Some(4) => {
                // The leader a third of the time.
                let target = match self.world.rng.pick(&voters) {
                    _ if self.world.rng.chance(333_333) => leader,
                    Some(voter) => *voter,
                    None => return Ok(None),
                };
                ConfChange::remove_node(target)
            }
            Some(5) => match self.spawn_node()? {
                Some(new) => ConfChange::add_voter(new),
                None => return Ok(None),
            },
            Some(6) => {
                // One or two voters out, as many in (learners or new nodes);
                // the leader may be among those leaving.
                let count = (self.world.rng.between(1, 2) as usize).min(voters.len());
                let mut outgoing = voters.clone();
                for position in (1..outgoing.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    outgoing.swap(position, other);
                }
                outgoing.truncate(count);
                let mut incoming = learners.clone();
                for position in (1..incoming.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    incoming.swap(position, other);
                }
                incoming.truncate(count);
                while incoming.len() < count {
                    match self.spawn_node()? {
                        Some(new) => incoming.push(new),
                        None => break,
                    }
                }
                let mut changes = Vec::new();
                for (old, new) in outgoing.iter().zip(&incoming) {
                    changes.push(single(ConfChangeKind::AddVoter, *new));
                    let kind = if self.world.rng.chance(300_000) {
                        ConfChangeKind::AddLearner
                    } else {
                        ConfChangeKind::RemoveNode
                    };
                    changes.push(single(kind, *old));
                }
                if changes.is_empty() {
                    return Ok(None);
                }
                let transition = match self.world.rng.weighted(&[2, 1, 1]) {
                    Some(0) => ConfChangeTransition::Auto,
                    Some(1) => ConfChangeTransition::JointImplicit,
                    _ => ConfChangeTransition::JointExplicit,
                };
                ConfChange {
                    transition,
                    changes,
                    context: bytes::Bytes::new(),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(change))
    }
}
