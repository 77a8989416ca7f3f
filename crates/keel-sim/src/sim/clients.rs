//! The clients: one operation at a time each, on a random node.

use keel::{Error, NodeId, ReadMode, Role};

use crate::checker::{Property, Violation};
use crate::history::{Completion, Path, Record};
use crate::kv::read_context;
use crate::kv::{Command, Key, Operation};
use crate::node::call;
use crate::runtime;
use crate::trace::TraceEvent;
use crate::world::Outstanding;

use super::Simulation;

impl Simulation {
    /// The drawn clients that wait for nothing (the probing client apart).
    pub(super) fn idle_clients(&self) -> Vec<u32> {
        (0..self.shape.clients)
            .filter(|client| self.world.clients[*client as usize].outstanding.is_none())
            .collect()
    }

    /// An idle client invokes a random operation on a random node.
    pub(super) fn invoke(&mut self) -> Result<(), Violation> {
        let idle = self.idle_clients();
        let Some(&client) = self.world.rng.pick(&idle) else {
            return Ok(());
        };
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let key = self.world.rng.below(u64::from(self.shape.keys)) as Key;
        let (operation, path) = self.draw_operation(key);
        self.invoke_on(client, position, operation, path)
    }

    /// An idle client reads `key` — just written elsewhere — from a node
    /// that still believes it leads (a leader being replaced: resumed
    /// after a pause, healed after isolation, or deposed by an election it
    /// has not heard of). Half the time a lease read, which it must not
    /// answer from a lease that really expired; otherwise a ReadIndex read,
    /// which only a heartbeat round started after it may confirm.
    pub(super) fn probe_leader(&mut self, position: usize, key: Key) -> Result<(), Violation> {
        let client = self.shape.clients + 1;
        if self.world.clients[client as usize].outstanding.is_some() {
            return Ok(());
        }
        let lease = self.shape.template().check_quorum && self.world.rng.chance(500_000);
        let mode = if lease { ReadMode::Lease } else { ReadMode::Safe };
        self.world.stats.leader_probes += 1;
        self.world.trace_event(TraceEvent::Fault {
            detail: format!(
                "probe: a {mode:?} read of key {key} on node {}, which believes it leads",
                self.nodes[position].id
            ),
        });
        self.invoke_on(client, position, Operation::Get { key }, Path::ReadIndex(mode))
    }

    /// A node just back (resumed) that believes it leads: a client reads
    /// the latest written key from it.
    pub(super) fn probe_if_leader(&mut self, position: usize) -> Result<(), Violation> {
        let Some(key) = self.world.last_written_key.filter(|_| self.faults_on) else {
            return Ok(());
        };
        let leads = self.nodes[position].running().is_some_and(|running| {
            running.is_healthy() && running.is_responsive() && running.raw.status().role == Role::Leader
        });
        if leads {
            self.probe_leader(position, key)
        } else {
            Ok(())
        }
    }

    /// A new leader was elected while another node still believes it leads
    /// (paused, cut off, or not yet told): a client writes through the new
    /// one, so that the old one's answers can be stale.
    pub(super) fn write_through_new_leader(&mut self, leader: NodeId) -> Result<(), Violation> {
        let client = self.shape.clients;
        let another_believes = self.nodes.iter().any(|node| {
            node.id != leader
                && node
                    .running()
                    .is_some_and(|running| running.raw.status().role == Role::Leader)
        });
        let position = (leader.get() - 1) as usize;
        let available = self.available().contains(&position);
        if !self.faults_on
            || !another_believes
            || !available
            || self.world.clients[client as usize].outstanding.is_some()
        {
            return Ok(());
        }
        let key = self.world.rng.below(u64::from(self.shape.keys)) as Key;
        let value = self.next_value;
        self.next_value += 1;
        self.last_written[usize::from(key)] = Some(value);
        self.world.stats.leader_probes += 1;
        self.world.trace_event(TraceEvent::Fault {
            detail: format!("probe: a write of key {key} through the new leader {leader}, while another believes it leads"),
        });
        self.invoke_on(client, position, Operation::Put { key, value }, Path::Log)
    }

    /// Probes every node that believes it leads but is not the leader of
    /// the highest term, with a read of `key`.
    pub(super) fn probe_stale_leaders(&mut self, key: Key) -> Result<(), Violation> {
        let leader = self.leader();
        let stale: Vec<usize> = self
            .available()
            .into_iter()
            .filter(|position| {
                let node = &self.nodes[*position];
                Some(node.id) != leader
                    && node
                        .running()
                        .is_some_and(|running| running.raw.status().role == Role::Leader)
            })
            .collect();
        for position in stale {
            self.probe_leader(position, key)?;
        }
        Ok(())
    }

    fn invoke_on(
        &mut self,
        client: u32,
        position: usize,
        operation: Operation,
        path: Path,
    ) -> Result<(), Violation> {
        let key = operation.key();
        let request = self.world.clients[client as usize].next_request;
        self.world.clients[client as usize].next_request += 1;
        let node = &mut self.nodes[position];
        let id = node.id;
        let invoked_at = self.world.next_event();
        let record = self.world.history.invoke(Record {
            client,
            request,
            operation,
            path,
            node: id,
            invoked_at,
            completion: None,
        });
        self.world.clients[client as usize].outstanding = Some(Outstanding {
            request,
            record,
            node: id,
            incarnation: node.incarnation,
            path,
            key,
            deadline_tick: self.world.now + self.shape.client_timeout_ticks,
        });
        self.world
            .hash(&[47, u64::from(client), request, id.get(), u64::from(key)]);
        if self.world.trace.is_enabled() {
            let detail = format!("{}", self.world.history.record(record));
            self.world.trace_event(TraceEvent::Client { detail });
        }
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        let result = match path {
            Path::Log => {
                let command = Command {
                    client,
                    request,
                    operation,
                };
                call(id, running, |raw| raw.propose(command.encode()))?
            }
            Path::ReadIndex(ReadMode::Lease) => {
                // The runtime's obligation: time its clock shows must be
                // charged before a lease is trusted (a resumed leader may
                // not have been charged for its pause yet).
                runtime::charge_clock(node, &mut self.world)?;
                let Some(running) = node.running_mut() else {
                    return Ok(());
                };
                call(id, running, |raw| {
                    raw.read_index(read_context(client, request), ReadMode::Lease)
                })?
            }
            Path::ReadIndex(mode) => call(id, running, |raw| {
                raw.read_index(read_context(client, request), mode)
            })?,
        };
        match result {
            Ok(()) => {}
            Err(error) if error.is_fatal() => self
                .world
                .complete_client(client, Completion::Unknown("node stopped")),
            Err(Error::Proposal(_)) => self
                .world
                .complete_client(client, Completion::Fail("proposal refused")),
            Err(Error::Read(_)) => self
                .world
                .complete_client(client, Completion::Fail("read refused")),
            Err(other) => {
                return Err(Violation::new(
                    Property::Contract,
                    format!("node {id} answered a client request with {other}"),
                ))
            }
        }
        runtime::process_ready(node, &mut self.world)
    }

    pub(super) fn draw_operation(&mut self, key: Key) -> (Operation, Path) {
        let rng = &mut self.world.rng;
        match rng.weighted(&[4, 4, 2]) {
            Some(0) => {
                let value = self.next_value;
                self.next_value += 1;
                self.last_written[usize::from(key)] = Some(value);
                (Operation::Put { key, value }, Path::Log)
            }
            Some(1) => {
                let check_quorum = self.shape.template().check_quorum;
                let path = match rng.weighted(&[35, 45, if check_quorum { 20 } else { 0 }]) {
                    Some(0) => Path::Log,
                    Some(1) => Path::ReadIndex(ReadMode::Safe),
                    _ => Path::ReadIndex(ReadMode::Lease),
                };
                (Operation::Get { key }, path)
            }
            _ => {
                let expected = if rng.chance(700_000) {
                    self.last_written[usize::from(key)]
                } else {
                    None
                };
                let new = self.next_value;
                self.next_value += 1;
                self.last_written[usize::from(key)] = Some(new);
                (Operation::Cas { key, expected, new }, Path::Log)
            }
        }
    }
}
