//! An in-process cluster of [`RawNode`]s over [`MemStorage`], with a
//! hand-driven network: the harness behind scenario tests and examples.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::Config;
use crate::error::Error;
use crate::message::Envelope;
use crate::raw_node::RawNode;
use crate::ready::Ready;
use crate::storage::{MemStorage, StorageWrite};
use crate::types::{ConfState, Entry, Index, NodeId};

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The founding voters.
    pub voters: Vec<NodeId>,
    /// A config template; `id` and `rng_seed` are set per node.
    pub config: Config,
    /// How the founders' storage holds the initial membership.
    pub bootstrap: Bootstrap,
}

/// How a [`Cluster`]'s founding members start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// From [`SnapshotMetadata::bootstrap`](crate::SnapshotMetadata::bootstrap):
    /// the membership in a snapshot at index 1, so nodes added later learn it.
    /// What a real deployment does.
    Snapshot,
    /// The membership only in storage, the log empty from index 1. Simpler
    /// logs for scenarios that never add nodes.
    MembershipOnly,
}

impl ClusterOptions {
    /// `count` voters with ids `1..=count` and default settings.
    pub fn voters(count: u64) -> Self {
        ClusterOptions {
            voters: (1..=count).map(NodeId::new).collect(),
            config: Config::new(NodeId::new(1)),
            bootstrap: Bootstrap::Snapshot,
        }
    }
}

/// A cluster of nodes in one process. Messages go into a network queue
/// and move only when delivered; links can be cut in either direction.
/// Every node's invariants are checked after every step.
///
/// ```
/// use bytes::Bytes;
/// use keel::testing::{Cluster, ClusterOptions};
/// use keel::NodeId;
/// let mut cluster = Cluster::new(ClusterOptions::voters(3)).unwrap();
/// cluster.campaign(NodeId::new(1)).unwrap();
/// cluster.stabilize().unwrap();
/// cluster.propose(NodeId::new(1), Bytes::from_static(b"hello")).unwrap();
/// cluster.stabilize().unwrap();
/// for id in 1..=3 {
///     let applied = cluster.applied(NodeId::new(id));
///     assert_eq!(applied.last().unwrap().data, Bytes::from_static(b"hello"));
/// }
/// ```
pub struct Cluster {
    nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    storages: BTreeMap<NodeId, MemStorage>,
    configs: BTreeMap<NodeId, Config>,
    /// Messages sent and not yet delivered, in send order.
    network: Vec<Envelope>,
    /// Cut links, as `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Entries each node applied, in order.
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Messages dropped because of cut links.
    dropped_count: u64,
    /// `Ready`s handed out by [`Cluster::process_ready_async`] whose writes
    /// are not durable yet, oldest first.
    unpersisted: BTreeMap<NodeId, VecDeque<Ready>>,
    /// Committed entries handed out by [`Cluster::process_ready_async`] and
    /// not applied yet, one batch per `Ready`, oldest first.
    unapplied: BTreeMap<NodeId, VecDeque<ApplyBatch>>,
}

/// What became of one message handed to [`Cluster::deliver_traced`].
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The recipient stepped it.
    Delivered,
    /// The link from sender to recipient is cut.
    Cut,
    /// There is no node with the recipient's id.
    NoRecipient,
    /// The recipient refused it (a [`StepError`](crate::StepError) or a
    /// refused forwarded proposal); the node is unchanged.
    Refused(Error),
}

/// Committed entries handed out for applying by one `Ready`, and the index
/// to report to [`RawNode::on_applied`] once they are applied.
#[derive(Clone, Debug)]
pub struct ApplyBatch {
    /// The committed entries, in order.
    pub entries: Vec<Entry>,
    /// The index to report applied: the last entry's (or the snapshot's).
    pub applied_index: Index,
}

impl Cluster {
    /// Starts every founding voter with an empty log.
    pub fn new(options: ClusterOptions) -> Result<Self, Error> {
        let bootstrap =
            crate::types::SnapshotMetadata::bootstrap(ConfState::with_voters(options.voters.iter().copied()));
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            storages: BTreeMap::new(),
            configs: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            dropped_count: 0,
            unpersisted: BTreeMap::new(),
            unapplied: BTreeMap::new(),
        };
        for id in &options.voters {
            let mut config = options.config.clone();
            config.id = *id;
            config.rng_seed = options
                .config
                .rng_seed
                .wrapping_mul(1_000_003)
                .wrapping_add(id.get());
            let storage = match options.bootstrap {
                Bootstrap::Snapshot => {
                    let mut storage = MemStorage::new();
                    storage.apply_snapshot(bootstrap.clone())?;
                    storage
                }
                Bootstrap::MembershipOnly => MemStorage::new_with_conf_state(bootstrap.conf_state.clone()),
            };
            cluster.add_node(config, storage)?;
        }
        Ok(cluster)
    }

    /// Adds a node with its own config and storage (for example an empty
    /// one that waits to be added to the membership).
    pub fn add_node(&mut self, config: Config, storage: MemStorage) -> Result<(), Error> {
        let id = config.id;
        let node = RawNode::new(&config, storage.clone())?;
        self.nodes.insert(id, node);
        self.storages.insert(id, storage);
        self.configs.insert(id, config);
        self.applied.entry(id).or_default();
        Ok(())
    }

    /// The node `id`.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The node `id`, mutably.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The entries `id` has applied, in order.
    pub fn applied(&self, id: NodeId) -> &[Entry] {
        self.applied.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The messages in the network, not yet delivered.
    pub fn in_flight(&self) -> &[Envelope] {
        &self.network
    }

    /// Takes the messages in the network out of it.
    pub fn take_in_flight(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.network)
    }

    /// Puts messages into the network (for scripted reordering or
    /// duplication).
    pub fn inject(&mut self, envelopes: impl IntoIterator<Item = Envelope>) {
        self.network.extend(envelopes);
    }

    /// Messages dropped on cut links so far.
    pub fn dropped_count(&self) -> u64 {
        self.dropped_count
    }

    /// The leader as the majority of nodes see it, if any node is leader.
    pub fn leader(&self) -> Option<NodeId> {
        let status: Vec<_> = self.nodes.values().map(RawNode::status).collect();
        status
            .iter()
            .filter(|status| status.role == crate::Role::Leader)
            .max_by_key(|status| status.hard_state.term)
            .map(|status| status.id)
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Splits the cluster: no message crosses between the groups.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (position, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(position + 1) {
                for a in group {
                    for b in other {
                        self.cut.insert((*a, *b));
                        self.cut.insert((*b, *a));
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Checks every node's invariants.
    ///
    /// # Panics
    /// On the first violation, naming the node.
    pub fn check_invariants(&mut self) {
        for (id, node) in &mut self.nodes {
            if let Err(violation) = node.check_invariants() {
                panic!("invariant broken on {id}: {violation}");
            }
        }
    }

    /// Ticks node `id` once.
    pub fn tick(&mut self, id: NodeId) -> Result<(), Error> {
        self.node_mut(id).tick()?;
        self.check_invariants();
        Ok(())
    }

    /// Ticks every node once.
    pub fn tick_all(&mut self) -> Result<(), Error> {
        for id in self.ids() {
            self.node_mut(id).tick()?;
        }
        self.check_invariants();
        Ok(())
    }

    /// Makes `id` campaign.
    pub fn campaign(&mut self, id: NodeId) -> Result<(), Error> {
        self.node_mut(id).campaign()?;
        self.check_invariants();
        Ok(())
    }

    /// Proposes `data` on `id`.
    pub fn propose(&mut self, id: NodeId, data: bytes::Bytes) -> Result<(), Error> {
        let result = self.node_mut(id).propose(data);
        self.check_invariants();
        result
    }

    /// Handles node `id`'s `Ready` synchronously: persist, send, apply,
    /// advance. Returns the `Ready` (with its contents) for inspection, or
    /// `None` if there was nothing to do.
    ///
    /// `Ready`s handed out earlier by [`Cluster::process_ready_async`] are
    /// persisted and applied first, so writes reach storage in order.
    pub fn process_ready(&mut self, id: NodeId) -> Result<Option<Ready>, Error> {
        while self.persist_next(id)?.is_some() {}
        while self.apply_next(id)?.is_some() {}
        let node = self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id}"));
        if !node.has_ready() {
            return Ok(None);
        }
        let ready = node.ready()?;
        let storage = self
            .storages
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no storage {id}"));
        self.network.extend(ready.messages().iter().cloned());
        if let Some(snapshot) = ready.snapshot() {
            storage.apply_snapshot(snapshot.clone())?;
        }
        storage.append(ready.entries())?;
        if let Some(hard_state) = ready.hard_state() {
            storage.set_hard_state(hard_state)?;
        }
        self.network.extend(ready.persisted_messages().iter().cloned());
        let kept = ready.clone();
        self.apply_entries(id, ready.committed_entries())?;
        self.node_mut(id).advance(ready)?;
        self.check_invariants();
        Ok(Some(kept))
    }

    /// Records `entries` as applied on `id`, applying membership changes to
    /// the node and persisting the resulting membership. A change the node
    /// refuses is skipped, as a runtime would log it.
    fn apply_entries(&mut self, id: NodeId, entries: &[Entry]) -> Result<(), Error> {
        for entry in entries {
            if entry.kind.is_conf_change() {
                let Ok(change) = crate::confchange::ConfChange::decode(&entry.data) else {
                    continue;
                };
                match self.node_mut(id).apply_conf_change(&change) {
                    Ok(conf_state) => {
                        let storage = self
                            .storages
                            .get_mut(&id)
                            .unwrap_or_else(|| panic!("no storage {id}"));
                        storage.set_conf_state(conf_state)?;
                    }
                    Err(Error::ConfChange(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        self.applied
            .entry(id)
            .or_default()
            .extend(entries.iter().cloned());
        Ok(())
    }

    /// Takes a snapshot on `id` at its applied index (with its current
    /// membership) and discards the log up to `through` (at most the
    /// applied index), as an application compacting its log would.
    pub fn compact(&mut self, id: NodeId, through: Index) -> Result<(), Error> {
        let status = self.node(id).status();
        let applied = status.applied;
        let through = through.min(applied);
        let storage = self
            .storages
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no storage {id}"));
        let term = crate::Storage::term(storage, applied)?;
        let metadata = crate::types::SnapshotMetadata {
            last: crate::types::LogId::new(term, applied),
            conf_state: status.conf_state,
        };
        storage.create_snapshot(metadata)?;
        storage.compact(through)?;
        self.check_invariants();
        Ok(())
    }

    /// Processes every node's `Ready` once. Returns whether any had one.
    pub fn process_all_ready(&mut self) -> Result<bool, Error> {
        let mut any = false;
        for id in self.ids() {
            any |= self.process_ready(id)?.is_some();
        }
        Ok(any)
    }

    /// Delivers every message in the network (dropping those on cut links),
    /// in send order. Returns how many were delivered.
    pub fn deliver_all(&mut self) -> Result<usize, Error> {
        let envelopes = std::mem::take(&mut self.network);
        let mut delivered = 0;
        for envelope in envelopes {
            if self.deliver(envelope)? {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Delivers one message unless its link is cut or its recipient does not
    /// exist. Refusals by the recipient (`StepError`) are swallowed, as a
    /// runtime would log and drop them; fatal errors are returned.
    pub fn deliver(&mut self, envelope: Envelope) -> Result<bool, Error> {
        match self.deliver_traced(envelope)? {
            Delivery::Delivered | Delivery::Refused(_) => Ok(true),
            Delivery::Cut | Delivery::NoRecipient => Ok(false),
        }
    }

    /// Like [`Cluster::deliver`], but says what became of the message:
    /// delivered, dropped (cut link, no such node) or refused by the
    /// recipient. Fatal errors are returned.
    ///
    /// A snapshot message stands for the whole snapshot transfer: like a
    /// runtime's transport, the cluster reports its outcome to the sender
    /// with [`RawNode::report_snapshot`].
    pub fn deliver_traced(&mut self, envelope: Envelope) -> Result<Delivery, Error> {
        let snapshot_from = matches!(envelope.message, crate::Message::Snapshot(_)).then_some(envelope.from);
        let report = |cluster: &mut Cluster, outcome| {
            if let Some(from) = snapshot_from {
                if let Some(sender) = cluster.nodes.get_mut(&from) {
                    sender.report_snapshot(envelope.to, outcome);
                }
            }
        };
        if !self.nodes.contains_key(&envelope.to) {
            self.dropped_count += 1;
            report(self, crate::SnapshotOutcome::Failed);
            return Ok(Delivery::NoRecipient);
        }
        if self.is_cut(envelope.from, envelope.to) {
            self.dropped_count += 1;
            report(self, crate::SnapshotOutcome::Failed);
            return Ok(Delivery::Cut);
        }
        let to = envelope.to;
        let result = self.node_mut(to).step(envelope.clone());
        report(self, crate::SnapshotOutcome::Delivered);
        self.check_invariants();
        match result {
            Ok(()) => Ok(Delivery::Delivered),
            Err(error) if error.is_fatal() => Err(error),
            Err(error) => Ok(Delivery::Refused(error)),
        }
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// The config node `id` was started with.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn config(&self, id: NodeId) -> &Config {
        self.configs.get(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The storage of node `id`: what is durable.
    ///
    /// # Panics
    /// If there is no such node.
    pub fn storage(&self, id: NodeId) -> &MemStorage {
        self.storages
            .get(&id)
            .unwrap_or_else(|| panic!("no storage {id}"))
    }

    /// Hands out node `id`'s `Ready` as a runtime with asynchronous storage
    /// writes does: its [`messages`](Ready::messages) go into the network at
    /// once, while its writes (and the
    /// [`persisted_messages`](Ready::persisted_messages) waiting on them) and
    /// its committed entries are queued until [`Cluster::persist_next`] and
    /// [`Cluster::apply_next`]. Returns the `Ready`, or `None` if there was
    /// nothing to do.
    ///
    /// Meant for nodes configured with
    /// [`Config::async_storage_writes`]; on a synchronous node committed
    /// entries may be handed out before they are durable locally.
    pub fn process_ready_async(&mut self, id: NodeId) -> Result<Option<Ready>, Error> {
        let node = self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id}"));
        if !node.has_ready() {
            return Ok(None);
        }
        let ready = node.ready()?;
        self.network.extend(ready.messages().iter().cloned());
        let applied_index = ready.last_committed_index().max(ready.persist_marker().snapshot);
        if let Some(applied_index) = applied_index {
            self.unapplied.entry(id).or_default().push_back(ApplyBatch {
                entries: ready.committed_entries().to_vec(),
                applied_index,
            });
        }
        let has_writes = ready.snapshot().is_some()
            || !ready.entries().is_empty()
            || ready.hard_state().is_some()
            || !ready.persisted_messages().is_empty();
        if has_writes {
            self.unpersisted.entry(id).or_default().push_back(ready.clone());
        }
        self.check_invariants();
        Ok(Some(ready))
    }

    /// Makes the oldest `Ready` handed out by
    /// [`Cluster::process_ready_async`] on `id` durable: writes its snapshot,
    /// entries and hard state to storage, reports it through
    /// [`RawNode::on_persisted`], and only then releases its
    /// [`persisted_messages`](Ready::persisted_messages) into the network.
    /// Returns that `Ready`, or `None` if nothing was waiting.
    pub fn persist_next(&mut self, id: NodeId) -> Result<Option<Ready>, Error> {
        let Some(ready) = self.unpersisted.get_mut(&id).and_then(VecDeque::pop_front) else {
            return Ok(None);
        };
        let storage = self
            .storages
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no storage {id}"));
        if let Some(snapshot) = ready.snapshot() {
            storage.apply_snapshot(snapshot.clone())?;
        }
        storage.append(ready.entries())?;
        if let Some(hard_state) = ready.hard_state() {
            storage.set_hard_state(hard_state)?;
        }
        self.node_mut(id).on_persisted(ready.persist_marker())?;
        self.network.extend(ready.persisted_messages().iter().cloned());
        self.check_invariants();
        Ok(Some(ready))
    }

    /// Applies the oldest batch of committed entries handed out by
    /// [`Cluster::process_ready_async`] on `id` and reports it through
    /// [`RawNode::on_applied`]. Returns the batch, or `None` if nothing was
    /// waiting.
    pub fn apply_next(&mut self, id: NodeId) -> Result<Option<ApplyBatch>, Error> {
        let Some(batch) = self.unapplied.get_mut(&id).and_then(VecDeque::pop_front) else {
            return Ok(None);
        };
        self.apply_entries(id, &batch.entries)?;
        self.node_mut(id).on_applied(batch.applied_index)?;
        self.check_invariants();
        Ok(Some(batch))
    }

    /// How many `Ready`s of `id` wait for [`Cluster::persist_next`].
    pub fn unpersisted_count(&self, id: NodeId) -> usize {
        self.unpersisted.get(&id).map_or(0, VecDeque::len)
    }

    /// How many batches of `id` wait for [`Cluster::apply_next`].
    pub fn unapplied_count(&self, id: NodeId) -> usize {
        self.unapplied.get(&id).map_or(0, VecDeque::len)
    }

    /// Processes readies and delivers messages until nothing moves.
    ///
    /// # Panics
    /// If the cluster has not settled after 10,000 rounds.
    pub fn stabilize(&mut self) -> Result<(), Error> {
        for _ in 0..10_000 {
            let any_ready = self.process_all_ready()?;
            let delivered = self.deliver_all()?;
            if !any_ready && delivered == 0 && self.network.is_empty() {
                return Ok(());
            }
        }
        panic!("cluster did not stabilize in 10,000 rounds");
    }

    /// Ticks every node until one becomes leader and the cluster settles,
    /// at most `max_ticks` times. Returns the leader.
    pub fn elect(&mut self, max_ticks: u64) -> Result<Option<NodeId>, Error> {
        for _ in 0..max_ticks {
            self.tick_all()?;
            self.stabilize()?;
            if let Some(leader) = self.leader() {
                return Ok(Some(leader));
            }
        }
        Ok(None)
    }

    /// Replaces node `id` with a fresh one built from what its storage
    /// holds: a crash and restart (synchronous mode persists everything
    /// before acknowledging, so nothing durable is lost). Its in-flight
    /// messages stay in the network. Writes and applies still queued by
    /// [`Cluster::process_ready_async`] are lost, as in a crash.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Error> {
        self.unpersisted.remove(&id);
        self.unapplied.remove(&id);
        let storage = self.storages[&id].clone();
        let mut config = self.configs[&id].clone();
        config.applied = crate::types::Index::ZERO;
        let node = RawNode::new(&config, storage)?;
        self.nodes.insert(id, node);
        self.applied.insert(id, Vec::new());
        self.check_invariants();
        Ok(())
    }
}
