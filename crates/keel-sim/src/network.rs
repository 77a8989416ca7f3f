//! The simulated network: messages in flight with a delivery time, loss,
//! duplication, delay, reordering and cut links.

use std::collections::BTreeSet;

use keel::{Envelope, Message, NodeId, SnapshotOutcome};

use crate::kv::KvStore;
use crate::rng::{PartsPerMillion, SimRng};

/// The most messages in flight; beyond it new messages are dropped, as a
/// full socket buffer would. A bound, not a tuning knob: runs stay far
/// below it unless a node floods.
pub const IN_FLIGHT_MAX: usize = 20_000;

/// The most ticks a transport takes to notice that a snapshot stream
/// broke (a lost message, a cut link, a crashed peer) and report it.
pub const SNAPSHOT_FAILURE_NOTICE_TICKS_MAX: u64 = 6;

/// How this run's network misbehaves (drawn per seed from the enabled faults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkFaults {
    /// Chance that a message is lost.
    pub loss: PartsPerMillion,
    /// Chance that a message is delivered twice.
    pub duplicate: PartsPerMillion,
    /// The most ticks a message waits before it can be delivered.
    pub delay_ticks_max: u64,
    /// Deliver deliverable messages in random order rather than oldest first.
    pub reorder: bool,
}

/// A message on the wire.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// The message.
    pub envelope: Envelope,
    /// For a snapshot message, the state machine image streamed with it.
    pub image: Option<KvStore>,
    /// The first tick at which it may be delivered.
    pub deliverable_at_tick: u64,
    /// Whether the sender learns how this copy's delivery ended: true for
    /// the one copy of a snapshot message its transport streams (a
    /// duplicate is the network's doing, not a send the sender tracks).
    pub reports_outcome: bool,
    /// Send order, for oldest-first delivery.
    sequence: u64,
}

/// How a snapshot send ended, on its way back to the sender's
/// `RawNode::report_snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The leader that sent the snapshot.
    pub from: NodeId,
    /// The follower it was for.
    pub to: NodeId,
    /// Delivered or failed.
    pub outcome: SnapshotOutcome,
    /// The tick from which the sender's transport reports it.
    pub due_tick: u64,
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The link was cut.
    Cut,
    /// The recipient is not running.
    RecipientDown,
}

/// The simulated network.
#[derive(Clone, Debug, Default)]
pub struct Network {
    in_flight: Vec<InFlight>,
    /// Directed links that drop everything: `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: NetworkFaults,
    sequence: u64,
    /// Messages lost to the loss rate or the in-flight bound.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Snapshot outcomes not yet reported to their senders.
    reports: Vec<SnapshotReport>,
}

impl Network {
    /// A network with the given misbehaviour and no cut links.
    pub fn new(faults: NetworkFaults) -> Self {
        Network {
            faults,
            ..Network::default()
        }
    }

    /// Changes the misbehaviour (the liveness phase turns it off).
    pub fn set_faults(&mut self, faults: NetworkFaults) {
        self.faults = faults;
    }

    /// Puts a message on the wire at tick `now`, subject to loss,
    /// duplication and delay.
    /// A lost snapshot message is reported failed to its sender a little
    /// later.
    pub fn send(&mut self, rng: &mut SimRng, now: u64, envelope: Envelope, image: Option<KvStore>) {
        if rng.chance(self.faults.loss) || self.in_flight.len() >= IN_FLIGHT_MAX {
            self.lost += 1;
            if matches!(envelope.message, Message::Snapshot(_)) {
                self.snapshot_failed(rng, now, envelope.from, envelope.to);
            }
            return;
        }
        let copies = if rng.chance(self.faults.duplicate) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        let is_snapshot = matches!(envelope.message, Message::Snapshot(_));
        for copy in 0..copies {
            let delay = if self.faults.delay_ticks_max > 0 {
                rng.below(self.faults.delay_ticks_max + 1)
            } else {
                0
            };
            self.sequence += 1;
            let message = InFlight {
                envelope: envelope.clone(),
                image: image.clone(),
                deliverable_at_tick: now + delay,
                reports_outcome: is_snapshot && copy == 0,
                sequence: self.sequence,
            };
            self.in_flight.push(message);
        }
    }

    /// Positions of the messages deliverable at `now` whose recipient is
    /// not in `held` (paused nodes keep their messages queued).
    fn deliverable<'a>(&'a self, now: u64, held: &'a BTreeSet<NodeId>) -> impl Iterator<Item = usize> + 'a {
        self.in_flight
            .iter()
            .enumerate()
            .filter(move |(_, message)| {
                message.deliverable_at_tick <= now && !held.contains(&message.envelope.to)
            })
            .map(|(position, _)| position)
    }

    /// How many messages could be delivered now.
    pub fn deliverable_count(&self, now: u64, held: &BTreeSet<NodeId>) -> usize {
        self.deliverable(now, held).count()
    }

    /// Takes the next message to deliver: a random deliverable one when
    /// reordering, else the oldest.
    pub fn take_next(&mut self, rng: &mut SimRng, now: u64, held: &BTreeSet<NodeId>) -> Option<InFlight> {
        let position = if self.faults.reorder {
            let candidates: Vec<usize> = self.deliverable(now, held).collect();
            *rng.pick(&candidates)?
        } else {
            self.deliverable(now, held)
                .min_by_key(|position| self.in_flight[*position].sequence)?
        };
        // Order of the rest does not matter: delivery picks by sequence or
        // at random, never by position.
        Some(self.in_flight.swap_remove(position))
    }

    /// A snapshot stream from `from` to `to` broke: its transport reports
    /// the failure after noticing it (within
    /// [`SNAPSHOT_FAILURE_NOTICE_TICKS_MAX`] ticks).
    pub fn snapshot_failed(&mut self, rng: &mut SimRng, now: u64, from: NodeId, to: NodeId) {
        let due_tick = now + rng.below(SNAPSHOT_FAILURE_NOTICE_TICKS_MAX + 1);
        self.reports.push(SnapshotReport {
            from,
            to,
            outcome: SnapshotOutcome::Failed,
            due_tick,
        });
    }

    /// A node crashed: the snapshot streams it was sending die with it
    /// (nobody is left to report them, and the new incarnation never sent
    /// them), and those streaming to it fail (reported to their senders).
    pub fn crashed(&mut self, rng: &mut SimRng, now: u64, id: NodeId) {
        self.reports.retain(|report| report.from != id);
        let mut failed = Vec::new();
        self.in_flight.retain(|message| {
            let is_snapshot = matches!(message.envelope.message, Message::Snapshot(_));
            let (from, to) = (message.envelope.from, message.envelope.to);
            if !is_snapshot || (from != id && to != id) {
                return true;
            }
            if to == id && from != id && message.reports_outcome {
                failed.push(from);
            }
            false
        });
        for from in failed {
            self.snapshot_failed(rng, now, from, id);
        }
    }

    /// Takes the reports due at `now` whose sender `can_take` accepts (a
    /// paused sender's wait until it resumes).
    pub fn take_due_reports(&mut self, now: u64, can_take: impl Fn(NodeId) -> bool) -> Vec<SnapshotReport> {
        let mut due = Vec::new();
        self.reports.retain(|report| {
            if report.due_tick <= now && can_take(report.from) {
                due.push(*report);
                false
            } else {
                true
            }
        });
        due
    }

    /// Queues a report (a delivered snapshot whose sender is paused).
    pub fn queue_report(&mut self, report: SnapshotReport) {
        self.reports.push(report);
    }

    /// Drops every queued report from `from` (its process is gone).
    pub fn forget_reports_from(&mut self, from: NodeId) {
        self.reports.retain(|report| report.from != from);
    }

    /// Snapshot outcomes waiting to be reported.
    pub fn pending_reports(&self) -> usize {
        self.reports.len()
    }

    /// Whether the link `from → to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        for a in left {
            for b in right {
                self.cut.insert((*a, *b));
                self.cut.insert((*b, *a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn has_cuts(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Messages on the wire.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::{Message, Term};

    fn envelope(from: u64, to: u64) -> Envelope {
        Envelope::new(
            NodeId::new(from),
            NodeId::new(to),
            Term::new(1),
            Message::TimeoutNow,
        )
    }

    #[test]
    fn a_clean_network_delivers_in_order_at_once() {
        let mut rng = SimRng::new(1);
        let mut network = Network::new(NetworkFaults::default());
        for to in 2..=4 {
            network.send(&mut rng, 0, envelope(1, to), None);
        }
        let held = BTreeSet::new();
        assert_eq!(network.deliverable_count(0, &held), 3);
        let order: Vec<u64> = std::iter::from_fn(|| network.take_next(&mut rng, 0, &held))
            .map(|message| message.envelope.to.get())
            .collect();
        assert_eq!(order, vec![2, 3, 4]);
    }

    #[test]
    fn delays_hold_messages_and_paused_recipients_keep_theirs() {
        let mut rng = SimRng::new(2);
        let mut network = Network::new(NetworkFaults {
            delay_ticks_max: 5,
            ..NetworkFaults::default()
        });
        for _ in 0..50 {
            network.send(&mut rng, 10, envelope(1, 2), None);
        }
        let held = BTreeSet::new();
        let early = network.deliverable_count(10, &held);
        assert!(early < 50, "some messages must be delayed");
        assert_eq!(network.deliverable_count(15, &held), 50);
        let paused = BTreeSet::from([NodeId::new(2)]);
        assert_eq!(network.deliverable_count(15, &paused), 0);
        assert!(network.take_next(&mut rng, 15, &paused).is_none());
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates() {
        let mut rng = SimRng::new(3);
        let mut network = Network::new(NetworkFaults {
            loss: 100_000,
            duplicate: 100_000,
            ..NetworkFaults::default()
        });
        for _ in 0..10_000 {
            network.send(&mut rng, 0, envelope(1, 2), None);
        }
        assert!((800..1200).contains(&network.lost), "lost {}", network.lost);
        assert!(
            (700..1100).contains(&network.duplicated),
            "duplicated {}",
            network.duplicated
        );
        assert_eq!(
            network.in_flight_count() as u64,
            10_000 - network.lost + network.duplicated
        );
        network.partition(&[NodeId::new(1)], &[NodeId::new(2), NodeId::new(3)]);
        assert!(
            network.is_cut(NodeId::new(3), NodeId::new(1)) && !network.is_cut(NodeId::new(2), NodeId::new(3))
        );
        network.heal();
        assert!(!network.has_cuts());
    }
}
