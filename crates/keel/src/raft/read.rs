//! Linearizable reads without writing to the log (thesis §6.4): ReadIndex
//! confirmed by a heartbeat round, and leader leases.
//!
//! Every heartbeat the leader sends carries a *round* number; followers echo
//! it. A read is answered with the commit index it saw once a quorum has
//! acknowledged a round started *after* the read arrived: at that moment
//! the leader was still leader, so nothing later than that commit index had
//! been committed by anyone else. Rounds also time the lease: a quorum that
//! acknowledged a round started at tick `t` will not elect anyone else
//! before `t + election_timeout_ticks_min` (followers ignore vote requests
//! that soon after hearing from a leader, §4.2.3).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::error::{Error, ReadError};
use crate::message::{Message, ReadIndexRequest, ReadIndexResponse};
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::types::{Index, NodeId};

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round to a quorum confirms leadership. Safe
    /// whatever the clocks do; costs one round trip (shared by every read
    /// that arrives before the round starts).
    Safe,
    /// Lease: answered at once while a quorum acknowledged a heartbeat
    /// round that started within the lease (thesis §6.4.1); falls back to
    /// `Safe` when the lease has lapsed. Needs `check_quorum`. Assumes
    /// bounded clock drift: the nodes' tick rates differ by at most
    /// [`Config::max_clock_drift_percent`](crate::Config::max_clock_drift_percent),
    /// and the runtime charges every tick its monotonic clock owes
    /// ([`RawNode::tick_by`](crate::RawNode::tick_by)) before it asks for
    /// a lease read, so a paused leader does not keep a lease it lost.
    Lease,
}

/// A read that may be served once the state machine has applied `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time of the request: serve the read after
    /// applying up to here.
    pub index: Index,
    /// The request's context, as given to `read_index`.
    pub context: Bytes,
}

#[derive(Clone, Debug)]
struct PendingRead {
    /// The first heartbeat round whose quorum acknowledgement confirms it.
    round: u64,
    index: Index,
    context: Bytes,
    /// `None` for a local request.
    requester: Option<NodeId>,
}

/// The leader's read bookkeeping. Reset on every role change.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reads {
    /// The latest heartbeat round started.
    round: u64,
    /// `(round, leader tick it started at)`, oldest first, for rounds not
    /// yet known to be confirmed (and the latest confirmed one).
    round_started_at: VecDeque<(u64, u64)>,
    /// The highest round each member acknowledged.
    acknowledged: BTreeMap<NodeId, u64>,
    /// Reads waiting for their round. Invariant: rounds non-decreasing.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<(Bytes, Option<NodeId>)>,
    /// A new round must start at the next flush.
    round_wanted: bool,
    /// Ticks since this node became leader.
    leader_ticks: u64,
    /// The highest round confirmed by a quorum, and when it started.
    confirmed: Option<(u64, u64)>,
}

impl Reads {
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }
}

impl<S: Storage> Raft<S> {
    /// Asks for a read index; the answer comes in a later `Ready`'s read
    /// states with the same `context`.
    pub(crate) fn read_index(&mut self, context: Bytes, mode: ReadMode) -> Result<(), Error> {
        if mode == ReadMode::Lease && !self.config.check_quorum {
            return Err(ReadError::LeaseWithoutCheckQuorum.into());
        }
        match self.role {
            Role::Leader => self.leader_read_index(context, mode, None),
            _ => {
                let Some(leader) = self.leader else {
                    return Err(ReadError::NoLeader.into());
                };
                self.send(leader, Message::ReadIndex(ReadIndexRequest { context }));
                Ok(())
            }
        }
    }

    /// A read on the leader, local (`requester == None`) or forwarded.
    pub(crate) fn leader_read_index(
        &mut self,
        context: Bytes,
        mode: ReadMode,
        requester: Option<NodeId>,
    ) -> Result<(), Error> {
        let committed = self.log.committed();
        if self.log.term_if_known(committed)? != Some(self.term) {
            // The leader does not know the commit index until an entry of
            // its own term commits (§6.4 step 1); wait for it.
            self.reads.waiting_for_commit.push((context, requester));
            return Ok(());
        }
        let immediate = self.tracker.is_sole_voter(self.id)
            || (mode == ReadMode::Lease && self.lease_is_valid())
            || super::planted!(self.config, ReadIndexWithoutHeartbeat);
        if immediate {
            self.answer_read(committed, context, requester);
            return Ok(());
        }
        // A round that started before this read arrived proves nothing
        // about leadership now: only the next round confirms it.
        let round = if super::planted!(self.config, ReadConfirmedByEarlierRound) {
            self.reads.round.max(1)
        } else {
            self.reads.round + 1
        };
        self.reads.pending.push_back(PendingRead {
            round,
            index: committed,
            context,
            requester,
        });
        self.reads.round_wanted = true;
        Ok(())
    }

    fn answer_read(&mut self, index: Index, context: Bytes, requester: Option<NodeId>) {
        match requester {
            None => self.read_states.push(ReadState { index, context }),
            Some(to) => self.send(
                to,
                Message::ReadIndexResponse(ReadIndexResponse { index, context }),
            ),
        }
    }

    /// Whether a quorum acknowledged a round recent enough that no other
    /// leader can exist yet.
    fn lease_is_valid(&self) -> bool {
        if self.transfer_target.is_some() {
            // A transfer lets the target win an election inside the lease.
            return false;
        }
        if super::planted!(self.config, LeaseNeverExpires) && self.reads.confirmed.is_some() {
            return true;
        }
        match self.reads.confirmed {
            Some((_, started_at)) => self.reads.leader_ticks < started_at.saturating_add(self.lease_ticks()),
            None => false,
        }
    }

    /// How long a lease lasts, in this leader's ticks, from the start of the
    /// round that confirmed it. A follower that heard the round refuses
    /// other candidates for at least `election_timeout_ticks_min - 1` of its
    /// own ticks (one tick is lost to the phase of its clock); a follower
    /// clock faster by up to `max_clock_drift_percent` shortens that window
    /// in real time, so the lease is shortened by the same factor (thesis
    /// §6.4.1).
    fn lease_ticks(&self) -> u64 {
        let window_ticks = self.config.election_timeout_ticks_min.saturating_sub(1);
        window_ticks * 100 / (100 + self.config.max_clock_drift_percent)
    }

    /// Starts a heartbeat round: returns its number after recording it.
    pub(crate) fn start_read_round(&mut self) -> u64 {
        self.reads.round += 1;
        self.reads.round_wanted = false;
        let round = self.reads.round;
        self.reads
            .round_started_at
            .push_back((round, self.reads.leader_ticks));
        let id = self.id;
        self.reads.acknowledged.insert(id, round);
        round
    }

    pub(crate) fn read_round_wanted(&self) -> bool {
        self.reads.round_wanted
    }

    pub(crate) fn tick_reads(&mut self) {
        self.reads.leader_ticks += 1;
    }

    /// Charges `ticks` ticks that passed without ticking (a pause) to the
    /// lease clock.
    pub(crate) fn charge_read_ticks(&mut self, ticks: u64) {
        if super::planted!(self.config, LeaseIgnoresPause) {
            return;
        }
        self.reads.leader_ticks = self.reads.leader_ticks.saturating_add(ticks);
    }

    /// A member acknowledged heartbeat round `round`.
    pub(crate) fn on_round_acknowledged(&mut self, from: NodeId, round: u64) {
        if round > self.reads.round {
            // Not a round we started: a confused or malicious peer.
            return;
        }
        let entry = self.reads.acknowledged.entry(from).or_insert(0);
        *entry = (*entry).max(round);
        self.release_confirmed_reads();
    }

    pub(crate) fn release_reads_after_conf_change(&mut self) {
        if self.role == Role::Leader {
            self.release_confirmed_reads();
        }
    }

    fn release_confirmed_reads(&mut self) {
        let acknowledged = &self.reads.acknowledged;
        let confirmed_round = self
            .tracker
            .voters()
            .committed_index(|id| acknowledged.get(&id).map(|round| Index::new(*round)))
            .get()
            .min(self.reads.round);
        while let Some(&(round, started_at)) = self.reads.round_started_at.front() {
            if round > confirmed_round {
                break;
            }
            self.reads.confirmed = Some((round, started_at));
            self.reads.round_started_at.pop_front();
        }
        while self
            .reads
            .pending
            .front()
            .is_some_and(|read| read.round <= confirmed_round)
        {
            let read = self.reads.pending.pop_front().expect("front checked");
            self.answer_read(read.index, read.context, read.requester);
        }
    }

    /// The leader committed its first entry of the term: reads that waited
    /// for it can proceed.
    pub(crate) fn on_first_commit_in_term(&mut self) -> Result<(), Error> {
        for (context, requester) in std::mem::take(&mut self.reads.waiting_for_commit) {
            self.leader_read_index(context, ReadMode::Safe, requester)?;
        }
        Ok(())
    }

    /// A forwarded read reached a node that is not the leader: refuse it
    /// back so its requester fails the caller now, not at its timeout.
    pub(crate) fn refuse_read_index(&mut self, from: NodeId, request: crate::message::ReadIndexRequest) {
        self.send(from, Message::ReadIndexRefused(request));
    }

    /// A forwarded read index reached a follower.
    pub(crate) fn on_read_index_response(&mut self, response: ReadIndexResponse) {
        self.read_states.push(ReadState {
            index: response.index,
            context: response.context,
        });
    }

    /// Leadership ended: local reads are reported dropped so their callers
    /// fail fast; forwarded ones time out at their requester.
    pub(crate) fn drop_reads(&mut self) {
        let reads = std::mem::take(&mut self.reads);
        for read in reads.pending {
            if read.requester.is_none() {
                self.dropped_reads.push(read.context);
            }
        }
        for (context, requester) in reads.waiting_for_commit {
            if requester.is_none() {
                self.dropped_reads.push(context);
            }
        }
    }

    pub(crate) fn check_read_invariants(&self) -> Result<(), String> {
        let ordered = self
            .reads
            .pending
            .iter()
            .zip(self.reads.pending.iter().skip(1))
            .all(|(a, b)| a.round <= b.round);
        if !ordered {
            return Err("pending reads out of round order".to_string());
        }
        if self.role != Role::Leader && self.reads.pending_count() != 0 {
            return Err(format!(
                "{} reads pending on a {}",
                self.reads.pending_count(),
                self.role
            ));
        }
        Ok(())
    }
}
