//! The liveness phase: faults stop, a leader must appear and every member
//! converge.

use std::collections::BTreeSet;

use keel::{ConfChange, NodeId, Role};

use crate::budget::{Budget, QUIET_TICK_WORK_MAX};
use crate::checker::{Property, Violation};
use crate::history::Completion;
use crate::kv::{Command, Operation, Value};
use crate::network::NetworkFaults;
use crate::node::{call, Process};
use crate::runtime;
use crate::trace::TraceEvent;

use super::{
    Simulation, CONVERGENCE_ELECTION_TIMEOUTS, DELAY_TICKS_MAX_ANY, LIVENESS_ELECTION_TIMEOUTS, LIVENESS_KEY,
};

impl Simulation {
    /// Faults stop; a leader must appear and every node converge.
    pub(super) fn liveness(&mut self) -> Result<(u64, u64), Violation> {
        self.world.trace_event(TraceEvent::Phase { name: "liveness" });
        self.faults_on = false;
        self.world.crash_before_persist_chance = 0;
        self.world.reboot_after_vote_chance = 0;
        self.world.leader_disk_stall_chance = 0;
        self.heal();
        self.world.network.set_faults(NetworkFaults::default());
        for position in 0..self.nodes.len() {
            if let Some(running) = self.nodes[position].running_mut() {
                running.raw.storage_mut().disarm_sync_failure();
                running.apply_stalled_until_tick = None;
                running.planned_crash = None;
            }
            match &self.nodes[position].process {
                Process::Down { .. } if self.nodes[position].retired => {}
                Process::Down { .. } => self.restart(position)?,
                Process::Running(running) if !running.is_healthy() => {
                    self.crash(position);
                    self.restart(position)?;
                }
                Process::Running(running) if !running.is_responsive() => self.resume(position)?,
                Process::Running(_) => {}
            }
        }
        let election = self.election_timeout_ticks();
        let start = self.world.now;
        let leader = loop {
            if let Some(leader) = self.stable_leader() {
                break leader;
            }
            if self.world.now - start > LIVENESS_ELECTION_TIMEOUTS * election {
                return Err(Violation::new(
                    Property::Liveness,
                    format!(
                        "no leader known to every node {} ticks after faults stopped:\n{}",
                        self.world.now - start,
                        self.describe_nodes()
                    ),
                ));
            }
            self.quiet_round()?;
        };
        let leader_ticks = self.world.now - start;
        let marker = self.next_value;
        self.next_value += 1;
        self.propose_marker(leader, marker)?;
        self.leave_explicit_joint(leader)?;
        let converge_start = self.world.now;
        let mut proposed_at = self.world.now;
        loop {
            if self.converged(marker) {
                break;
            }
            // Leadership may still move (a transfer requested during the
            // faults completes): the write is retried through whoever leads,
            // as a client would; the session makes a retry apply once. An
            // explicit joint membership left by the faults is left, as its
            // operator would.
            if self.world.now - proposed_at >= election {
                if let Some(leader) = self.stable_leader() {
                    self.propose_marker(leader, marker)?;
                    self.leave_explicit_joint(leader)?;
                    proposed_at = self.world.now;
                }
            }
            if self.world.now - converge_start > CONVERGENCE_ELECTION_TIMEOUTS * election {
                return Err(Violation::new(
                    Property::Liveness,
                    format!(
                        "nodes did not converge {} ticks after leader {leader} was known (final write {marker:?}):\n{}",
                        self.world.now - converge_start,
                        self.describe_nodes()
                    ),
                ));
            }
            self.quiet_round()?;
        }
        // Let messages delayed during the faults arrive, then settle.
        for _ in 0..=DELAY_TICKS_MAX_ANY {
            if self.world.network.in_flight_count() == 0 {
                break;
            }
            self.quiet_round()?;
        }
        self.drain()?;
        // Nothing more will complete: what is left has an unknown outcome.
        for client in 0..self.world.clients.len() as u32 {
            self.world
                .complete_client(client, Completion::Unknown("run ended"));
        }
        Ok((leader_ticks, self.world.now - converge_start))
    }

    /// One round of the fault-free phase: deliver everything deliverable,
    /// drain the disks, then tick.
    pub(super) fn quiet_round(&mut self) -> Result<(), Violation> {
        self.drain()?;
        self.world.step += 1;
        self.world_tick_step()?;
        self.check_all()
    }

    /// Delivers messages and completes disk work until none is left
    /// (without advancing the clock). A cluster that does not go quiet
    /// within [`QUIET_TICK_WORK_MAX`] units of work is in a message storm:
    /// a budget failure, not a wait.
    pub(super) fn drain(&mut self) -> Result<(), Violation> {
        let mut tick_budget = Budget::new(
            "deliveries and disk steps between two ticks of the liveness phase",
            QUIET_TICK_WORK_MAX,
        );
        let held = BTreeSet::new();
        loop {
            let mut worked = false;
            while self.world.network.deliverable_count(self.world.now, &held) > 0 {
                self.spend_liveness_work(&mut tick_budget)?;
                self.world.step += 1;
                self.deliver_one(&held)?;
                self.check_all()?;
                worked = true;
            }
            for position in 0..self.nodes.len() {
                while runtime::has_disk_work(&self.nodes[position]) {
                    self.spend_liveness_work(&mut tick_budget)?;
                    self.world.step += 1;
                    let node = &mut self.nodes[position];
                    let _ = runtime::persist_next(node, &mut self.world)?
                        || runtime::apply_next(node, &mut self.world)?;
                    runtime::process_ready(node, &mut self.world)?;
                    self.check_all()?;
                    worked = true;
                }
            }
            if !worked {
                let stats = &mut self.world.stats;
                stats.quiet_tick_work_max = stats.quiet_tick_work_max.max(tick_budget.spent());
                return Ok(());
            }
        }
    }

    /// Counts one delivery or disk step against the tick's budget and the
    /// phase's.
    fn spend_liveness_work(&mut self, tick_budget: &mut Budget) -> Result<(), Violation> {
        tick_budget.spend()?;
        self.liveness_budget.spend()?;
        self.world.stats.liveness_work += 1;
        Ok(())
    }

    /// A leader every member of its membership runs under. Nodes outside it
    /// (removed ones left running, added ones whose change never committed)
    /// do not count, but they must not keep the members from agreeing.
    pub(super) fn stable_leader(&self) -> Option<NodeId> {
        let statuses = self.statuses();
        let leader = statuses
            .iter()
            .flatten()
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.hard_state.term)?;
        let all_agree = leader.conf_state.members().iter().all(|member| {
            statuses
                .get((member.get() - 1) as usize)
                .and_then(Option::as_ref)
                .is_some_and(|status| {
                    status.hard_state.term == leader.hard_state.term && status.leader == Some(leader.id)
                })
        });
        all_agree.then_some(leader.id)
    }

    /// Proposes leaving an explicit joint membership, if the leader is in one.
    pub(super) fn leave_explicit_joint(&mut self, leader: NodeId) -> Result<(), Violation> {
        let position = (leader.get() - 1) as usize;
        let node = &mut self.nodes[position];
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let status = running.raw.status();
        if !status.conf_state.is_joint()
            || status.conf_state.auto_leave()
            || status.pending_conf_index > status.applied
        {
            return Ok(());
        }
        let result = call(leader, running, |raw| {
            raw.propose_conf_change(&ConfChange::leave_joint())
        })?;
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("leader {leader}: leave the joint membership: {result:?}"),
        });
        runtime::process_ready(node, &mut self.world)
    }

    /// A write through the leader that every node must apply.
    pub(super) fn propose_marker(&mut self, leader: NodeId, value: Value) -> Result<(), Violation> {
        let command = Command {
            client: u32::MAX,
            request: value,
            operation: Operation::Put {
                key: LIVENESS_KEY,
                value,
            },
        };
        let position = (leader.get() - 1) as usize;
        let node = &mut self.nodes[position];
        if let Some(running) = node.running_mut() {
            if let Err(error) = call(leader, running, |raw| raw.propose(command.encode()))? {
                // A refusal (a transfer still in progress, the uncommitted
                // cap) is not a liveness failure by itself: the convergence
                // bound decides.
                self.world.trace_event(TraceEvent::Fault {
                    detail: format!("final write refused by leader {leader}: {error}"),
                });
            }
        }
        runtime::process_ready(&mut self.nodes[position], &mut self.world)
    }

    pub(super) fn converged(&self, marker: Value) -> bool {
        let statuses = self.statuses();
        let Some(leader) = statuses
            .iter()
            .flatten()
            .find(|status| status.role == Role::Leader)
        else {
            return false;
        };
        let target = leader.hard_state.commit;
        let conf = &leader.conf_state;
        if target != leader.last_index || conf.is_joint() {
            return false;
        }
        // Every member of the final membership has applied everything, holds
        // the same state and the same membership.
        let mut digests = conf.members().into_iter().map(|member| {
            let running = self.nodes.get((member.get() - 1) as usize)?.running()?;
            let status = running.raw.status();
            let caught_up = running.kv_applied == target
                && status.applied == target
                && status.last_index == target
                && running.applied_conf == *conf
                && status.conf_state == *conf;
            (caught_up && running.kv.get(LIVENESS_KEY) == Some(marker)).then(|| running.kv.digest())
        });
        let Some(Some(first)) = digests.next() else {
            return false;
        };
        digests.all(|digest| digest == Some(first))
    }

    pub(super) fn describe_nodes(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            match &node.process {
                Process::Down { restart_at_tick, .. } => {
                    text.push_str(&format!(
                        "  node {}: down until tick {restart_at_tick}\n",
                        node.id
                    ));
                }
                Process::Running(running) => {
                    let status = running.raw.status();
                    text.push_str(&format!(
                        "  node {}: {:?} term {} vote {:?} leader {:?} commit {} applied {} (kv {}) last {} stopped {} conf {:?} applied conf {:?} peers {:?}\n",
                        node.id,
                        status.role,
                        status.hard_state.term,
                        status.hard_state.vote.map(NodeId::get),
                        status.leader.map(NodeId::get),
                        status.hard_state.commit,
                        status.applied,
                        running.kv_applied,
                        status.last_index,
                        running.stopped,
                        status.conf_state,
                        running.applied_conf,
                        status
                            .peers
                            .iter()
                            .map(|peer| format!("{}:{}/{}/{}", peer.id, peer.matched, peer.next, peer.state))
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
        text
    }
}
