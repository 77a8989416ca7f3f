//! The raft loop's clock under tokio's paused clock (issue 12, bug 3).
//!
//! Goal: time that passes while the loop does not run (a stopped process)
//! is charged to the core as the ticks it is worth, *before* the loop
//! handles the next input. The old loop counted timer wake-ups, so a jump
//! of N tick intervals cost one tick, and a paused leader kept its lease.
//!
//! A lone member of a three-voter cluster (its peers never start) with an
//! election timeout of a million ticks: tokio's auto-advance, which steps
//! the paused clock one timer at a time whenever the runtime idles (for
//! instance while the disk thread writes), cannot come near it. Then the
//! clock jumps two million tick intervals at once, and the next request
//! (a status request) must already see the node campaigning.

use std::io::{Cursor, Read};
use std::time::Duration;

use bytes::Bytes;
use keel::{Index, NodeId, Role};
use keel_node::{
    inbound_channel, AddressBook, Bootstrap, CommandError, LocalNetwork, MemberInfo, Node, NodeConfig,
    RestoreError, StateMachine,
};

const TICK: Duration = Duration::from_millis(10);
const ELECTION_TIMEOUT_TICKS_MIN: u64 = 1_000_000;

/// A state machine with nothing in it: the test is about the clock.
#[derive(Default)]
struct Nothing;

impl StateMachine for Nothing {
    type Command = ();
    type Response = ();
    type Query = ();
    type QueryResponse = ();

    fn encode_command(_command: &()) -> Result<Bytes, CommandError> {
        Ok(Bytes::new())
    }

    fn decode_command(_data: &[u8]) -> Result<(), CommandError> {
        Ok(())
    }

    fn apply(&mut self, _index: Index, _command: ()) {}

    fn query(&self, _query: &()) {}

    fn snapshot(&self) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(Vec::new()))
    }

    fn restore(&mut self, _snapshot: &mut dyn Read) -> Result<(), RestoreError> {
        Ok(())
    }
}

fn member(id: u64) -> MemberInfo {
    MemberInfo {
        peer_address: format!("node-{id}"),
        metadata: Bytes::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_jump_of_many_tick_intervals_is_charged_before_the_next_request_is_handled() {
    let directory = tempfile::tempdir().unwrap();
    let spool = directory.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let network = LocalNetwork::new(spool);
    let founders: AddressBook = (1..=3).map(|id| (NodeId::new(id), member(id))).collect();
    let mut config = NodeConfig::new(NodeId::new(1), directory.path().join("node-1"));
    config.tick_interval = TICK;
    config.raft.election_timeout_ticks_min = ELECTION_TIMEOUT_TICKS_MIN;
    config.raft.election_timeout_ticks_max = 2 * ELECTION_TIMEOUT_TICKS_MIN;
    let (sender, receiver) = inbound_channel();
    let transport = network.join(NodeId::new(1), sender);
    let handle = Node::start(
        config,
        Nothing,
        Bootstrap::Founders(founders),
        transport,
        receiver,
    )
    .await
    .unwrap();

    let before = handle.status().await.unwrap();
    assert_eq!(before.raft.role, Role::Follower);
    let term_before = before.raft.hard_state.term;

    // Past the largest election timeout in one jump: the timer that wakes
    // the loop fires once, and a status request is waiting too; whichever
    // the loop takes first, the clock is charged before it is handled.
    tokio::time::advance(TICK * (2 * ELECTION_TIMEOUT_TICKS_MIN as u32 + 1)).await;
    let after = handle.status().await.unwrap();
    assert_eq!(
        after.raft.role,
        Role::PreCandidate,
        "two million tick intervals passed: the election timeout has fired (the term stays {term_before} in a pre-vote)"
    );
    assert_eq!(after.raft.hard_state.term, term_before);
    handle.shutdown().await;
}
