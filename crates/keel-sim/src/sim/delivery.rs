//! Delivering messages and the outcomes of snapshot streams.

use std::collections::BTreeSet;

use keel::{NodeId, SnapshotOutcome};

use crate::checker::Violation;
use crate::network::SnapshotReport;
use crate::node::{call, SimNode};
use crate::runtime;
use crate::trace::TraceEvent;
use crate::trace::{describe, message_word};

use super::Simulation;

impl Simulation {
    pub(super) fn deliver_one(&mut self, held: &BTreeSet<NodeId>) -> Result<(), Violation> {
        let Some(message) = self
            .world
            .network
            .take_next(&mut self.world.rng, self.world.now, held)
        else {
            return Ok(());
        };
        let envelope = message.envelope;
        let (from, to) = (envelope.from, envelope.to);
        self.world
            .hash(&[3, from.get(), to.get(), message_word(&envelope)]);
        let position = (to.get() - 1) as usize;
        let reason = if self.world.network.is_cut(from, to) {
            Some("link cut")
        } else if self.nodes.get(position).and_then(SimNode::running).is_none() {
            Some("recipient down")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.world.stats.messages_dropped += 1;
            if message.reports_outcome {
                self.world
                    .network
                    .snapshot_failed(&mut self.world.rng, self.world.now, from, to);
            }
            self.world.trace_event(TraceEvent::Drop {
                from,
                to,
                kind: envelope.message.kind_name(),
                reason,
            });
            self.maybe_report_unreachable(from, to);
            return Ok(());
        }
        if self.world.trace.is_enabled() {
            self.world.trace_event(TraceEvent::Deliver {
                from,
                to,
                term: envelope.term,
                kind: envelope.message.kind_name(),
                detail: describe(&envelope.message),
            });
        }
        self.world.stats.messages_delivered += 1;
        let node = &mut self.nodes[position];
        let Some(running) = node.running_mut() else {
            return Ok(());
        };
        runtime::receive_image(running, &envelope, message.image);
        match call(to, running, |raw| raw.step(envelope))? {
            Err(error) if !error.is_fatal() => {
                self.world.stats.messages_refused += 1;
                self.world.hash(&[29, to.get()]);
            }
            _ => {}
        }
        runtime::process_ready(node, &mut self.world)?;
        if message.reports_outcome {
            // The stream ended well: the sender's transport says so at once
            // (or when the sender resumes, if it is paused).
            let report = SnapshotReport {
                from,
                to,
                outcome: SnapshotOutcome::Delivered,
                due_tick: self.world.now,
            };
            let sender = self
                .nodes
                .get((from.get() - 1) as usize)
                .and_then(SimNode::running);
            match sender {
                Some(running) if running.is_healthy() && running.is_responsive() => {
                    self.report_snapshot(report)?
                }
                Some(running) if running.is_healthy() => self.world.network.queue_report(report),
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands a snapshot outcome to its sender's `report_snapshot`, if the
    /// sender is still the healthy process that sent it.
    pub(super) fn report_snapshot(&mut self, report: SnapshotReport) -> Result<(), Violation> {
        let position = (report.from.get() - 1) as usize;
        let Some(node) = self.nodes.get_mut(position) else {
            return Ok(());
        };
        let Some(running) = node
            .running_mut()
            .filter(|running| running.is_healthy() && running.is_responsive())
        else {
            return Ok(());
        };
        if !self.options.report_snapshots {
            return Ok(());
        }
        running.raw.report_snapshot(report.to, report.outcome);
        self.world.stats.snapshot_reports += 1;
        if report.outcome == SnapshotOutcome::Failed {
            self.world.stats.snapshot_failures_reported += 1;
        }
        let delivered = report.outcome == SnapshotOutcome::Delivered;
        self.world
            .hash(&[73, report.from.get(), report.to.get(), u64::from(delivered)]);
        self.world.trace_event(TraceEvent::Fault {
            detail: format!(
                "node {}: snapshot to {} reported {:?}",
                report.from, report.to, report.outcome
            ),
        });
        runtime::process_ready(node, &mut self.world)
    }

    /// Reports the snapshot outcomes that are due to senders that take
    /// input (a paused sender's wait).
    pub(super) fn deliver_snapshot_reports(&mut self) -> Result<(), Violation> {
        let nodes = &self.nodes;
        let due = self.world.network.take_due_reports(self.world.now, |from| {
            let sender = nodes.get((from.get() - 1) as usize).and_then(SimNode::running);
            !matches!(sender, Some(running) if !running.is_responsive())
        });
        for report in due {
            self.report_snapshot(report)?;
        }
        Ok(())
    }

    /// The transport of `from` notices it cannot reach `to` (sometimes).
    pub(super) fn maybe_report_unreachable(&mut self, from: NodeId, to: NodeId) {
        let position = (from.get() - 1) as usize;
        if !self.world.rng.chance(500_000) {
            return;
        }
        if let Some(running) = self.nodes.get_mut(position).and_then(SimNode::running_mut) {
            if running.is_healthy() && running.is_responsive() {
                running.raw.report_unreachable(to);
            }
        }
    }
}
