//! The raft loop's membership work: proposing changes, applying them as
//! they commit (and telling the transport), and learning that this node
//! was removed.

use std::time::Instant;

use keel::{ConfChange, NodeId};
use keel_net::codec::HandshakeStatus;

use super::{Actor, Request, Responder};
use crate::apply::ApplyJob;
use crate::consistency::Consistency;
use crate::data_dir;
use crate::error::{self, NodeError};
use crate::halt::Halt;
use crate::members::{AddressBook, ChangeContext};
use crate::removal::{removed_by_change, Removal};
use crate::state_machine::StateMachine;

impl<M: StateMachine> Actor<M> {
    /// This node learned it is no longer a member: it says so, records it
    /// for its next run, stops campaigning and refuses requests from now
    /// on. Requests already waiting keep waiting (a write forwarded to the
    /// leader may still apply): they time out, or fail when the node stops.
    pub(super) fn learn_removed(&mut self, removal: Removal) {
        if self.removed.is_some() {
            return;
        }
        tracing::error!(node = %self.config.id, %removal, "this node is no longer a member of the cluster");
        // Once per life, a few milliseconds: written here rather than
        // queued, so the record exists before anyone is told.
        if let Err(error) = data_dir::record_removal(&self.config.data_dir, &removal) {
            tracing::warn!(node = %self.config.id, %error, "could not record the removal in the data directory");
        }
        self.halt.send_replace(Some(Halt::Removed(removal.clone())));
        self.removed = Some(removal);
    }

    pub(super) fn change_membership(
        &mut self,
        mut change: ConfChange,
        added: AddressBook,
        responder: Responder<()>,
    ) {
        let request = self.request_ids.next();
        change.context = ChangeContext {
            origin: self.config.id,
            request,
            added,
        }
        .encode();
        match self.raw.propose_conf_change(&change) {
            Ok(()) => {
                self.pending_changes.insert(request, (Instant::now(), responder));
            }
            Err(error) => {
                let _ = responder.send(Err(error::from_core(&error)));
            }
        }
    }

    /// Replaces the address book and tells the transport. Former members
    /// are forgotten by the transport only after an election timeout: the
    /// messages already queued for them (above all the one carrying the
    /// commit index of a node's own removal, sent in the same `Ready` that
    /// hands the removal out) still go out, so that a removed node that is
    /// up learns of its removal from its log.
    pub(super) fn set_members(&mut self, members: AddressBook) {
        let retire_at = tokio::time::Instant::now()
            + self.config.tick_interval.saturating_mul(
                u32::try_from(self.config.raft.election_timeout_ticks_min).unwrap_or(u32::MAX),
            );
        for id in self.members.keys() {
            if !members.contains_key(id) {
                self.leaving_peers.push((retire_at, *id));
            }
        }
        for (id, info) in &members {
            if *id != self.config.id {
                self.transport.set_peer(*id, &info.peer_address);
            }
        }
        self.members = members;
    }

    /// Forgets former members whose time is up (see `set_members`), unless
    /// they became members again meanwhile.
    pub(super) fn retire_leaving_peers(&mut self) {
        if self.leaving_peers.is_empty() {
            return;
        }
        let now = tokio::time::Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.leaving_peers)
            .into_iter()
            .partition(|(retire_at, _)| *retire_at <= now);
        self.leaving_peers = waiting;
        for (_, id) in due {
            if !self.members.contains_key(&id) {
                self.transport.remove_peer(id);
            }
        }
    }

    /// Applies membership changes as they are handed out (in log order),
    /// then passes everything to the applier.
    pub(super) fn hand_out_committed(&mut self, entries: Vec<keel::Entry>) {
        let mut memberships = Vec::new();
        for entry in entries.iter().filter(|entry| entry.kind.is_conf_change()) {
            let change = match ConfChange::decode(&entry.data) {
                Ok(change) => change,
                Err(error) => {
                    return self.fail(format!(
                        "committed entry {} is not a membership change: {error}",
                        entry.log_id()
                    ))
                }
            };
            let context = ChangeContext::decode(change.context.clone());
            let before = self.raw.status().conf_state;
            let outcome = self.raw.apply_conf_change(&change);
            let reply = match outcome {
                Ok(conf_state) => {
                    let mut members = self.members.clone();
                    if let Some(context) = &context {
                        members.extend(context.added.clone());
                    }
                    let keep = conf_state.members();
                    members.retain(|id, _| keep.contains(id));
                    tracing::info!(
                        node = %self.config.id,
                        index = %entry.index,
                        voters = ?conf_state.voters(),
                        learners = ?conf_state.learners(),
                        "membership change applied"
                    );
                    self.set_members(members);
                    if let Some(removal) =
                        removed_by_change(self.config.id, &before, &conf_state, entry.index)
                    {
                        self.learn_removed(removal);
                    }
                    memberships.push((entry.index, conf_state, self.members.clone()));
                    Ok(())
                }
                Err(error) if error.is_fatal() => return self.fail(format!("membership change: {error}")),
                Err(error) => Err(NodeError::Refused(error.to_string())),
            };
            if let Some(context) = context.filter(|context| context.origin == self.config.id) {
                if let Some((_, responder)) = self.pending_changes.remove(&context.request) {
                    self.changes_awaiting_apply.push((entry.index, responder, reply));
                }
            }
        }
        let _ = self.applier.send(ApplyJob::Entries { entries, memberships });
    }

    /// A peer refused this node's handshake: most voters refusing it as a
    /// non-member means it was removed while it could not hear of it.
    pub(super) fn on_refused(&mut self, peer: NodeId, status: HandshakeStatus) {
        let now = tokio::time::Instant::now();
        self.refusal_watch.refused(peer, status, now);
        if self.removed.is_none() {
            let conf_state = self.raw.status().conf_state;
            if let Some(removal) = self.refusal_watch.removal(&conf_state, now) {
                self.learn_removed(removal);
            }
        }
    }

    /// Answers a request to a removed node: stale reads as usual, anything
    /// that needs the cluster `NotMember`.
    pub(super) fn on_request_when_removed(&mut self, request: Request<M>) {
        match request {
            Request::Read {
                query,
                consistency: Consistency::Stale,
                responder,
            } => self.read(query, Consistency::Stale, responder),
            Request::Write { responder, .. } => drop(responder.send(Err(NodeError::NotMember))),
            Request::Read { responder, .. } => drop(responder.send(Err(NodeError::NotMember))),
            Request::ChangeMembership { responder, .. } | Request::TransferLeader { responder, .. } => {
                drop(responder.send(Err(NodeError::NotMember)))
            }
            Request::Status { .. } | Request::Shutdown { .. } => {}
        }
    }
}
