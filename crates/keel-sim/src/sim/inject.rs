//! The fault phase's faults: crashes, pauses, partitions, failed fsyncs,
//! compactions and leadership transfers (membership churn is in `churn`).

use std::collections::BTreeSet;

use keel::{Error, NodeId};

use crate::checker::{Property, Violation};
use crate::faults::Fault;
use crate::forge;
use crate::node::call;
use crate::runtime;
use crate::trace::TraceEvent;

use super::Simulation;

impl Simulation {
    pub(super) fn inject_fault(&mut self) -> Result<(), Violation> {
        let minority_left = self.may_lose_a_voter();
        let faults = &self.options.faults;
        let choices = [
            (Fault::Crash, 3, minority_left),
            (Fault::Pause, 3, minority_left),
            (Fault::Partition, 2, !self.world.network.has_cuts()),
            (Fault::OneWay, 1, !self.world.network.has_cuts()),
            // Also on top of other cuts: a leader cut off while others are.
            (Fault::IsolateLeader, 3, true),
            (Fault::FsyncFailure, 1, minority_left),
            (Fault::Compaction, 4, true),
            (Fault::Transfer, 2, true),
            (Fault::Churn, 3, true),
            (Fault::SlowApply, 3, true),
            (Fault::Forge, 2, true),
        ];
        let weights: Vec<u64> = choices
            .iter()
            .map(|(fault, weight, possible)| {
                if *possible && faults.contains(*fault) {
                    *weight
                } else {
                    0
                }
            })
            .collect();
        let Some(choice) = self.world.rng.weighted(&weights) else {
            return Ok(());
        };
        let fault = choices[choice].0;
        self.world.hash(&[53, choice as u64]);
        match fault {
            Fault::Crash => self.fault_crash(),
            Fault::Pause => self.fault_pause(),
            Fault::Partition | Fault::OneWay | Fault::IsolateLeader => self.fault_partition(fault),
            Fault::FsyncFailure => self.fault_fsync(),
            Fault::Compaction => self.fault_compaction()?,
            Fault::Transfer => self.fault_transfer()?,
            Fault::Churn => self.fault_churn()?,
            Fault::SlowApply => self.fault_slow_apply()?,
            Fault::Forge => self.fault_forge()?,
            _ => {}
        }
        Ok(())
    }

    pub(super) fn fault_crash(&mut self) {
        // Half the time the leader, most of the time when it holds entries
        // not yet committed: leader crashes that leave partly replicated
        // tails behind are where commit-rule bugs (Figure 8) and log repair
        // bugs show.
        let leader = self.leader().map(|leader| (leader.get() - 1) as usize);
        let available = self.available();
        let tail = leader
            .and_then(|leader| self.nodes[leader].running())
            .is_some_and(|running| {
                let status = running.raw.status();
                status.last_index > status.hard_state.commit
            });
        let chance = if tail { 800_000 } else { 500_000 };
        let target = match leader {
            Some(leader) if self.world.rng.chance(chance) => Some(leader),
            _ => self.world.rng.pick(&available).copied(),
        };
        if let Some(position) = target {
            self.crash(position);
        }
    }

    /// A process pauses. Half the time the leader, for long enough that
    /// the others may elect another and write meanwhile: when it resumes it
    /// still believes it leads (see `probe_if_leader`).
    pub(super) fn fault_pause(&mut self) {
        let available = self.available();
        let leader = self.leader().map(|leader| (leader.get() - 1) as usize);
        let (position, leader_paused) = match leader {
            Some(leader) if available.contains(&leader) && self.world.rng.chance(500_000) => (leader, true),
            _ => match self.world.rng.pick(&available) {
                Some(position) => (*position, false),
                None => return,
            },
        };
        let election = self.election_timeout_ticks();
        let now = self.world.now;
        let pause_ticks = if leader_paused {
            self.world.rng.between(election, 3 * election)
        } else {
            self.world.rng.between(1, 2 * election)
        };
        let resume_at_tick = now + pause_ticks;
        let node = &mut self.nodes[position];
        let id = node.id;
        if let Some(running) = node.running_mut() {
            running.paused_since_tick = Some(now);
            running.resume_at_tick = resume_at_tick;
        }
        self.world.stats.pauses += 1;
        self.world.hash(&[59, id.get(), resume_at_tick]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id} pauses until tick {resume_at_tick}"),
        });
    }

    /// Processes whose planned crash is due crash (see `runtime`): before a
    /// new term is durable, or a reboot right after a vote (restarted at
    /// once). Unless a majority of voters would be lost: then the disk
    /// writes after all.
    pub(super) fn crash_at_planned_points(&mut self) -> Result<(), Violation> {
        let step = self.world.step;
        for position in 0..self.nodes.len() {
            let Some(point) = self.nodes[position]
                .running()
                .and_then(|running| running.planned_crash)
                .filter(|point| point.at_step <= step)
            else {
                continue;
            };
            if !point.crash || !self.may_lose_a_voter() {
                // A slow disk catches up (or a crash that would take the
                // majority away is called off).
                if let Some(running) = self.nodes[position].running_mut() {
                    running.planned_crash = None;
                }
                let id = self.nodes[position].id;
                self.world.hash(&[137, id.get()]);
                self.world.trace_event(TraceEvent::Fault {
                    detail: format!("node {id}: its disk catches up"),
                });
                continue;
            }
            self.crash(position);
            if point.held_ready.is_some() {
                self.world.stats.crashes_before_persist += 1;
            } else {
                self.world.stats.reboots_after_vote += 1;
                self.restart(position)?;
            }
        }
        Ok(())
    }

    /// A node's applier stalls for 2–8 election timeouts: its commit index
    /// runs ahead of what it applied (and, in a runtime that hands
    /// membership changes to the core when applying, its core stays in a
    /// membership the cluster may leave meanwhile). Mostly a follower voter.
    pub(super) fn fault_slow_apply(&mut self) -> Result<(), Violation> {
        let leader = self.leader();
        let voters = self.latest_conf().voters().clone();
        let available = self.available();
        let followers: Vec<usize> = available
            .iter()
            .copied()
            .filter(|position| {
                let id = self.nodes[*position].id;
                Some(id) != leader && voters.contains(&id)
            })
            .collect();
        let candidates = if !followers.is_empty() && self.world.rng.chance(700_000) {
            followers
        } else {
            available
        };
        let Some(&position) = self.world.rng.pick(&candidates) else {
            return Ok(());
        };
        let election = self.election_timeout_ticks();
        let until = self.world.now + self.world.rng.between(2 * election, 8 * election);
        let node = &mut self.nodes[position];
        let id = node.id;
        if let Some(running) = node.running_mut() {
            running.apply_stalled_until_tick = Some(until);
        }
        self.world.stats.applier_stalls += 1;
        self.world.hash(&[107, id.get(), until]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: its applier stalls until tick {until}"),
        });
        // The dangerous sequel (thesis §4.1): the membership changes while
        // the applier is stalled, then the nodes still in the membership
        // before are cut off from the rest, each side free to elect.
        // (Only a runtime that hands changes to the core when it applies
        // them leaves the core behind; keel-node's order does not.)
        if !self.shape.conf_changes_when_applied || !self.world.rng.chance(800_000) {
            return Ok(());
        }
        if self.options.faults.contains(Fault::Churn) {
            self.replace_a_voter_except(id)?;
        }
        if self.options.faults.contains(Fault::Partition) {
            self.stale_split_at_tick = Some(self.world.now + self.world.rng.between(election / 4, election));
        }
        Ok(())
    }

    /// A planned split of a stale membership from the rest (see
    /// `fault_slow_apply`), if there is one when it is due.
    pub(super) fn split_stale_membership(&mut self) {
        let Some(left) = self.stale_membership_side() else {
            // Not yet (the change has not committed), or not at all: look
            // again a little later while some applier is stalled.
            let stalled = self
                .nodes
                .iter()
                .any(|node| node.running().is_some_and(|running| !running.applier_runs()));
            self.stale_split_at_tick = stalled.then(|| self.world.now + self.world.rng.between(1, 4));
            return;
        };
        self.stale_split_at_tick = None;
        let mut right: Vec<NodeId> = self.nodes.iter().map(|node| node.id).collect();
        right.retain(|id| !left.contains(id));
        self.world.network.partition(&left, &right);
        let election = self.election_timeout_ticks();
        let heal_at = self.world.now + self.world.rng.between(election, 3 * election);
        self.heal_at_tick = Some(heal_at);
        self.world.stats.partitions += 1;
        self.world.hash(&[61, heal_at]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("partition of a stale membership {left:?} | {right:?}; heals at tick {heal_at}"),
        });
    }

    /// A side to cut off where a node whose core holds another membership
    /// than the leader's (an applier behind a membership change) can win an
    /// election in that membership, while the rest still holds a majority of
    /// the leader's: the node, the voters only its membership has, and as
    /// many shared voters as its majority needs. Without the rule that a
    /// node must apply every committed change before it campaigns (thesis
    /// §4.1), both sides elect and commit.
    fn stale_membership_side(&self) -> Option<Vec<NodeId>> {
        let leader = self.leader()?;
        let new_conf = self.nodes[(leader.get() - 1) as usize]
            .running()?
            .raw
            .status()
            .conf_state;
        let (stale, old_conf) = self.nodes.iter().find_map(|node| {
            let conf = node.running()?.raw.status().conf_state;
            (conf != new_conf && conf.voters().contains(&node.id)).then_some((node.id, conf))
        })?;
        if old_conf.is_joint() || new_conf.is_joint() {
            return None;
        }
        let majority = |voters: usize| voters / 2 + 1;
        let mut side: BTreeSet<NodeId> = BTreeSet::from([stale]);
        side.extend(old_conf.voters().difference(new_conf.voters()));
        for shared in old_conf.voters().intersection(new_conf.voters()) {
            if side.intersection(old_conf.voters()).count() >= majority(old_conf.voters().len()) {
                break;
            }
            side.insert(*shared);
        }
        let old_majority = side.intersection(old_conf.voters()).count() >= majority(old_conf.voters().len());
        let new_majority = new_conf
            .voters()
            .iter()
            .filter(|voter| !side.contains(voter))
            .count()
            >= majority(new_conf.voters().len());
        (old_majority && new_majority).then(|| side.into_iter().collect())
    }

    pub(super) fn fault_partition(&mut self, fault: Fault) {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|node| node.id).collect();
        let detail = match fault {
            Fault::IsolateLeader => {
                let Some(leader) = self.leader() else {
                    return;
                };
                ids.retain(|id| *id != leader);
                self.world.network.partition(&[leader], &ids);
                format!("leader {leader} isolated")
            }
            Fault::OneWay => {
                let count = self.world.rng.between(1, ids.len() as u64);
                let mut cuts = Vec::new();
                for _ in 0..count {
                    let from = ids[self.world.rng.below(ids.len() as u64) as usize];
                    let to = ids[self.world.rng.below(ids.len() as u64) as usize];
                    if from != to {
                        self.world.network.cut(from, to);
                        cuts.push(format!("{from}->{to}"));
                    }
                }
                format!("one-way cuts {}", cuts.join(" "))
            }
            _ if self.world.rng.chance(500_000) && self.stale_membership_side().is_some() => {
                let left = self.stale_membership_side().unwrap_or_default();
                ids.retain(|id| !left.contains(id));
                self.world.network.partition(&left, &ids);
                format!("partition of a stale membership {left:?} | {ids:?}")
            }
            _ => {
                // A random split into two non-empty groups.
                for position in (1..ids.len()).rev() {
                    let other = self.world.rng.below(position as u64 + 1) as usize;
                    ids.swap(position, other);
                }
                let split = self.world.rng.between(1, ids.len() as u64 - 1) as usize;
                let (left, right) = ids.split_at(split);
                self.world.network.partition(left, right);
                format!("partition {left:?} | {right:?}")
            }
        };
        let election = self.election_timeout_ticks();
        let heal_at = self.world.now + self.world.rng.between(election / 2, 4 * election);
        self.heal_at_tick = Some(heal_at);
        self.world.stats.partitions += 1;
        self.world.hash(&[61, heal_at]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("{detail}; heals at tick {heal_at}"),
        });
    }

    /// A node is handed a forged message (see `forge`): from an id nobody
    /// knows, id 0, the largest id, or a member. One beyond the limits must
    /// be refused with a typed error and leave the node as it was.
    pub(super) fn fault_forge(&mut self) -> Result<(), Violation> {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let to = self.nodes[position].id;
        let members: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|node| node.id)
            .filter(|id| *id != to)
            .collect();
        let from = match self.world.rng.below(5) {
            0 => NodeId::new(1_000 + self.world.rng.below(1_000)),
            1 => NodeId::ZERO,
            2 => NodeId::new(u64::MAX),
            _ => match self.world.rng.pick(&members) {
                Some(member) => *member,
                None => NodeId::new(1_000),
            },
        };
        let node = &mut self.nodes[position];
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let before = running.raw.status();
        let forgery = forge::forge(&mut self.world.rng, from, to, before.hard_state.term);
        let envelope = forgery.envelope.clone();
        let result = call(to, running, |raw| raw.step(forgery.envelope))?;
        let refused = matches!(result, Err(Error::Step(_)));
        self.world.stats.forged_messages += 1;
        self.world.stats.forged_messages_refused += u64::from(refused);
        self.world
            .hash(&[109, to.get(), from.get(), envelope.term.get(), u64::from(refused)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {to} is handed a forged {envelope:?}: {result:?}"),
        });
        if forgery.must_be_refused {
            let after = running.raw.status();
            if !refused || after != before {
                return Err(Violation::new(
                    Property::ForgedMessage,
                    format!(
                        "node {to} was handed {envelope:?}, beyond keel's limits, and answered {result:?}{}",
                        if after == before {
                            String::new()
                        } else {
                            format!("; its status went from {before:?} to {after:?}")
                        }
                    ),
                ));
            }
        }
        runtime::process_ready(node, &mut self.world)
    }

    pub(super) fn fault_fsync(&mut self) {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return;
        };
        let node = &mut self.nodes[position];
        let id = node.id;
        if let Some(running) = node.running_mut() {
            running.raw.storage_mut().fail_next_sync();
        }
        self.world.hash(&[67, id.get()]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: its next fsync will fail"),
        });
    }

    pub(super) fn fault_compaction(&mut self) -> Result<(), Violation> {
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let keep = self.world.rng.below(6);
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        runtime::compact(&mut self.world, id, running, keep)?;
        Ok(())
    }

    pub(super) fn fault_transfer(&mut self) -> Result<(), Violation> {
        let available = self.available();
        let leader = self.leader();
        // Mostly ask the leader; sometimes a follower, which forwards.
        let position = match leader {
            Some(leader) if self.world.rng.chance(700_000) => (leader.get() - 1) as usize,
            _ => match self.world.rng.pick(&available) {
                Some(position) => *position,
                None => return Ok(()),
            },
        };
        // A voter of the current membership; now and then any node (a
        // learner or a removed node must be refused). Often one whose
        // applier is stalled: TimeoutNow makes it campaign at once, with
        // whatever membership its core holds.
        let voters: Vec<NodeId> = self.latest_conf().voters().iter().copied().collect();
        let stalled: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|voter| {
                self.nodes[(voter.get() - 1) as usize]
                    .running()
                    .is_some_and(|running| !running.applier_runs())
            })
            .collect();
        let target = match self.world.rng.pick(&voters) {
            _ if !stalled.is_empty() && self.world.rng.chance(500_000) => {
                *self.world.rng.pick(&stalled).unwrap_or(&stalled[0])
            }
            Some(voter) if self.world.rng.chance(900_000) => *voter,
            _ => NodeId::new(self.world.rng.between(1, self.nodes.len() as u64)),
        };
        let transfer_by_tick = self.world.now + self.election_timeout_ticks();
        let node = &mut self.nodes[position];
        let id = node.id;
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        let result = call(id, running, |raw| raw.transfer_leader(target))?;
        self.world.stats.transfers += 1;
        if result.is_ok() && leader != Some(target) {
            self.world.transfer = Some((target, transfer_by_tick));
            self.world.stats.transfers_started += 1;
        }
        self.world
            .hash(&[71, id.get(), target.get(), u64::from(result.is_ok())]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("node {id}: transfer leadership to {target}: {result:?}"),
        });
        runtime::process_ready(node, &mut self.world)
    }
}
