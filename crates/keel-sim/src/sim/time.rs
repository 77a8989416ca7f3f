//! The passage of time. True time advances to the next tick of some node's
//! clock (each node has its own rate and phase, see `clock`); the world's
//! own ticks crossed on the way run its timers — restarts, resumes, crashes
//! due, heals, snapshot reports, client timeouts — and the node whose clock
//! ticked has its core charged by its runtime. Nodes therefore tick at
//! different moments, with messages delivered in between, and a node whose
//! clock runs fast ticks more often than one whose clock runs slow.

use crate::checker::Violation;
use crate::clock::MICROTICKS_PER_TICK;
use crate::node::Process;
use crate::runtime;
use crate::trace::TraceEvent;

use super::Simulation;

impl Simulation {
    /// The fault phase's clock step: true time moves to the next tick of
    /// any node's clock, and that node is charged for it.
    pub(super) fn clock_step(&mut self) -> Result<(), Violation> {
        let (position, at) = self.next_node_tick();
        self.advance_to(at)?;
        match position {
            Some(position) => self.charge_node_clock(position),
            None => Ok(()),
        }
    }

    /// Advances true time by one world tick, charging every node whose
    /// clock ticks on the way, in the order they tick (the liveness phase,
    /// which drains messages between world ticks).
    pub(super) fn world_tick_step(&mut self) -> Result<(), Violation> {
        let end = (self.world.now + 1) * MICROTICKS_PER_TICK;
        loop {
            match self.next_node_tick() {
                (Some(position), at) if at <= end => {
                    self.advance_to(at)?;
                    self.charge_node_clock(position)?;
                }
                _ => return self.advance_to(end),
            }
        }
    }

    /// How many clocks drive time: every node not shut down for good (a
    /// down machine's clock keeps running).
    pub(super) fn clock_count(&self) -> u64 {
        self.nodes.iter().filter(|node| !node.retired).count() as u64
    }

    /// The node whose clock ticks next, and when (the lowest position on a
    /// tie); with no clock at all, the next world tick.
    fn next_node_tick(&self) -> (Option<usize>, u64) {
        let now = self.world.now_microticks;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| !node.retired)
            .map(|(position, node)| (Some(position), node.clock.next_tick_after(now)))
            .min_by_key(|(position, at)| (*at, *position))
            .unwrap_or((None, (self.world.now + 1) * MICROTICKS_PER_TICK))
    }

    /// Moves true time to `at`, running every world tick crossed.
    fn advance_to(&mut self, at: u64) -> Result<(), Violation> {
        while (self.world.now + 1) * MICROTICKS_PER_TICK <= at {
            self.world.now_microticks = (self.world.now + 1) * MICROTICKS_PER_TICK;
            self.world_tick()?;
        }
        self.world.now_microticks = self.world.now_microticks.max(at);
        Ok(())
    }

    /// A running, responsive node's runtime charges its core what its clock
    /// owes (a paused process owes, and is charged when it resumes).
    fn charge_node_clock(&mut self, position: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[position];
        if !node.running().is_some_and(|running| running.is_responsive()) {
            return Ok(());
        }
        self.world.hash(&[2, node.id.get()]);
        runtime::charge_clock(node, &mut self.world).map(|_| ())
    }

    /// One tick of the world's clock: its timers.
    fn world_tick(&mut self) -> Result<(), Violation> {
        self.world.now += 1;
        let now = self.world.now;
        self.world.hash(&[1, now]);
        self.world.trace_event(TraceEvent::Tick { tick: now });
        if self.heal_at_tick.is_some_and(|tick| tick <= now) {
            self.heal();
            // A leader cut off until now may still believe it leads.
            if let Some(key) = self.world.last_written_key.filter(|_| self.faults_on) {
                self.probe_stale_leaders(key)?;
            }
        }
        if self.faults_on && self.stale_split_at_tick.is_some_and(|tick| tick <= now) {
            self.split_stale_membership();
        }
        for position in 0..self.nodes.len() {
            self.run_timers(position)?;
        }
        self.deliver_snapshot_reports()?;
        self.world.expire_requests();
        Ok(())
    }

    /// Restarts, resumes, crashes and appliers due.
    fn run_timers(&mut self, position: usize) -> Result<(), Violation> {
        let now = self.world.now;
        let node = &mut self.nodes[position];
        if let Some(running) = node.running_mut() {
            if running.apply_stalled_until_tick.is_some_and(|tick| tick <= now) {
                running.apply_stalled_until_tick = None;
                self.world.hash(&[103, node.id.get()]);
                self.world.trace_event(TraceEvent::Fault {
                    detail: format!("node {}: its applier runs again", node.id),
                });
            }
        }
        match &self.nodes[position].process {
            Process::Down { restart_at_tick, .. } if *restart_at_tick <= now => self.restart(position),
            Process::Running(running) if running.crash_at_tick.is_some_and(|tick| tick <= now) => {
                self.crash(position);
                Ok(())
            }
            Process::Running(running)
                if running.paused_since_tick.is_some() && running.resume_at_tick <= now =>
            {
                self.resume(position)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn heal(&mut self) {
        if self.world.network.has_cuts() {
            self.world.network.heal();
            self.world.hash(&[31]);
            self.world.trace_event(TraceEvent::Fault {
                detail: "every link healed".to_string(),
            });
        }
        self.heal_at_tick = None;
    }
}
