//! [`NodeHandle`]: the cheap, cloneable way to use a running node.

use std::sync::Arc;
use std::time::Duration;

use keel::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::actor::Request;
use crate::consistency::Consistency;
use crate::error::NodeError;
use crate::halt::{self, Halt};
use crate::members::{AddressBook, MemberInfo};
use crate::metrics::{Metrics, NodeMetrics};
use crate::state_machine::StateMachine;
use crate::status::NodeStatus;

/// A handle to a running node. Clones share the node; every method may be
/// called from any task.
pub struct NodeHandle<M: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) requests: mpsc::Sender<Request<M>>,
    pub(crate) request_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) halt: watch::Receiver<Option<Halt>>,
}

impl<M: StateMachine> Clone for NodeHandle<M> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            requests: self.requests.clone(),
            request_timeout: self.request_timeout,
            metrics: self.metrics.clone(),
            halt: self.halt.clone(),
        }
    }
}

/// A membership change for [`NodeHandle::change_membership`].
#[derive(Clone, Debug)]
pub enum MemberChange {
    /// Add (or promote) a voter.
    AddVoter(NodeId, MemberInfo),
    /// Add a learner (or demote a voter; `None` keeps its known address).
    AddLearner(NodeId, Option<MemberInfo>),
    /// Remove a member.
    Remove(NodeId),
}

/// Why a request finds no room in the raft loop's queue.
const QUEUE_FULL: &str = "the raft loop's request queue is full";

impl<M: StateMachine> NodeHandle<M> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Request<M>,
    ) -> Result<T, NodeError> {
        let (sender, receiver) = oneshot::channel();
        self.requests
            .try_send(make(sender))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => NodeError::Overloaded(QUEUE_FULL.to_string()),
                mpsc::error::TrySendError::Closed(_) => NodeError::ShuttingDown,
            })?;
        match tokio::time::timeout(self.request_timeout, receiver).await {
            Err(_) => Err(NodeError::Timeout),
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Ok(Ok(result)) => result,
        }
    }

    /// Replicates `command` and returns its response once it is applied on
    /// this node. On a follower the write is forwarded to the leader.
    ///
    /// # Errors
    /// `Refused` if the command does not encode (it never entered the log);
    /// `Overloaded`, `NotMember` (nothing was done); `NoLeader`, `Timeout`,
    /// `ShuttingDown` or `Fatal` when the outcome is unknown (see
    /// [`NodeError::outcome_unknown`]).
    pub async fn write(&self, command: M::Command) -> Result<M::Response, NodeError> {
        let command = M::encode_command(&command).map_err(|error| NodeError::Refused(error.to_string()))?;
        self.call(|responder| Request::Write { command, responder }).await
    }

    /// Answers `query` at the given consistency. A
    /// [`Consistency::Lease`] read is linearizable only under the lease's
    /// clock assumption (bounded drift between the nodes' tick rates,
    /// `max_clock_drift_percent`; time measured by a monotonic clock,
    /// pauses charged); see [`Consistency::Lease`].
    pub async fn read(
        &self,
        query: M::Query,
        consistency: Consistency,
    ) -> Result<M::QueryResponse, NodeError> {
        self.call(|responder| Request::Read {
            query,
            consistency,
            responder,
        })
        .await
    }

    /// Adds a voter reachable at `info.peer_address`; done once the change
    /// is committed. Add a large node as a learner first so it catches up
    /// without slowing commits, then promote it.
    pub async fn add_voter(&self, id: NodeId, info: MemberInfo) -> Result<(), NodeError> {
        self.change_membership(vec![MemberChange::AddVoter(id, info)])
            .await
    }

    /// Adds a learner: it receives the log but never votes.
    pub async fn add_learner(&self, id: NodeId, info: MemberInfo) -> Result<(), NodeError> {
        self.change_membership(vec![MemberChange::AddLearner(id, Some(info))])
            .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        self.change_membership(vec![MemberChange::Remove(id)]).await
    }

    /// Applies several changes at once: through a joint configuration
    /// (left automatically) when more than one voter changes.
    pub async fn change_membership(&self, changes: Vec<MemberChange>) -> Result<(), NodeError> {
        let mut added = AddressBook::new();
        let mut singles = Vec::with_capacity(changes.len());
        for change in changes {
            let (kind, id) = match change {
                MemberChange::AddVoter(id, info) => {
                    added.insert(id, info);
                    (ConfChangeKind::AddVoter, id)
                }
                MemberChange::AddLearner(id, info) => {
                    if let Some(info) = info {
                        added.insert(id, info);
                    }
                    (ConfChangeKind::AddLearner, id)
                }
                MemberChange::Remove(id) => (ConfChangeKind::RemoveNode, id),
            };
            singles.push(ConfChangeSingle { kind, node_id: id });
        }
        let change = ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: singles,
            context: bytes::Bytes::new(),
        };
        self.call(|responder| Request::ChangeMembership {
            change,
            added,
            responder,
        })
        .await
    }

    /// Hands leadership to `target`; done when `target` leads.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), NodeError> {
        self.call(|responder| Request::TransferLeader { target, responder })
            .await
    }

    /// This node's state.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (sender, receiver) = oneshot::channel();
        self.requests
            .try_send(Request::Status { responder: sender })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => NodeError::Overloaded(QUEUE_FULL.to_string()),
                mpsc::error::TrySendError::Closed(_) => NodeError::ShuttingDown,
            })?;
        match tokio::time::timeout(self.request_timeout, receiver).await {
            Err(_) => Err(NodeError::Timeout),
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Ok(Ok(status)) => Ok(status),
        }
    }

    /// Waits until the node stops serving as a member, and says why: a
    /// fatal error, its removal from the cluster, or a shutdown. Returns at
    /// once if that already happened. A server exits (or stops the node)
    /// on it, so that a supervisor sees a node that can no longer serve.
    ///
    /// ```no_run
    /// # async fn run<M: keel_node::StateMachine>(node: keel_node::NodeHandle<M>) {
    /// use keel_node::Halt;
    /// match node.halted().await {
    ///     Halt::Fatal(reason) => eprintln!("the node stopped: {reason}; restart it"),
    ///     Halt::Removed(removal) => eprintln!("no longer a member: {removal}"),
    ///     Halt::ShutDown => {}
    /// }
    /// node.shutdown().await;
    /// # }
    /// ```
    pub async fn halted(&self) -> Halt {
        halt::wait(self.halt.clone()).await
    }

    /// The node's counters, without a round trip to the raft loop.
    pub fn metrics(&self) -> NodeMetrics {
        self.metrics.snapshot()
    }

    /// Stops the node: pending requests fail with `ShuttingDown`, the disk
    /// and apply threads finish their queued work and exit.
    pub async fn shutdown(&self) {
        let (sender, receiver) = oneshot::channel();
        if self
            .requests
            .send(Request::Shutdown { responder: sender })
            .await
            .is_ok()
        {
            let _ = receiver.await;
        }
    }
}
