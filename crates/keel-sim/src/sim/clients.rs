//! The clients: one operation at a time each, on a random node.

use keel::{Error, ReadMode};

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
    pub(super) fn invoke(&mut self) -> Result<(), Violation> {
        let idle: Vec<u32> = (0..self.shape.clients)
            .filter(|client| self.world.clients[*client as usize].outstanding.is_none())
            .collect();
        let Some(&client) = self.world.rng.pick(&idle) else {
            return Ok(());
        };
        let available = self.available();
        let Some(&position) = self.world.rng.pick(&available) else {
            return Ok(());
        };
        let key = self.world.rng.below(u64::from(self.shape.keys)) as Key;
        let (operation, path) = self.draw_operation(key);
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
