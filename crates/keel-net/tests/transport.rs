//! The transport over real sockets on 127.0.0.1: delivery, refusals,
//! unreachable reports, reconnects, bounded queues, bad input and snapshots.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{append, config, heartbeat, start, Node, WAIT};
use keel::{ConfState, Envelope, Index, LogId, Message, NodeId, SnapshotMetadata, SnapshotOutcome, Term};
use keel_net::codec::{self, ConnectionKind, Handshake, HandshakeStatus, PROTOCOL_VERSION};
use keel_net::Inbound;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn pair(dir: &std::path::Path) -> (Node, Node) {
    let mut a = start(config(7, 1, dir)).await;
    let b = start(config(7, 2, dir)).await;
    a.network.set_peer(NodeId::new(2), b.addr());
    b.network.set_peer(NodeId::new(1), a.addr());
    // Make sure `a` is fully started before the test uses it.
    a.network.send(heartbeat(1, 3, 0));
    a.expect_unreachable(3).await;
    (a, b)
}

#[tokio::test]
async fn two_nodes_exchange_messages_in_order() {
    // Goal: every message sent arrives once, intact and in order, both ways.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = pair(dir.path()).await;
    let sent: Vec<Envelope> = (1..=200).map(|index| append(1, 2, index, 3, 128)).collect();
    for envelope in &sent {
        a.network.send(envelope.clone());
    }
    for envelope in &sent {
        assert_eq!(&b.expect_message().await, envelope);
    }
    b.network.send(heartbeat(2, 1, 9));
    assert_eq!(a.expect_message().await, heartbeat(2, 1, 9));
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_joining_node_learns_the_address_of_a_peer_that_dials_it() {
    // Goal: a node joining a cluster, told only the members' ids, admits
    // the first member that contacts it and can answer it: the dialler's
    // handshake carries its listen address.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    let mut joiner = start(config(7, 2, dir.path())).await;
    joiner.network.set_members([NodeId::new(1)]);
    a.network.set_peer(NodeId::new(2), joiner.addr());
    a.network.send(heartbeat(1, 2, 5));
    assert_eq!(joiner.expect_message().await, heartbeat(1, 2, 5));
    joiner.network.send(heartbeat(2, 1, 6));
    assert_eq!(a.expect_message().await, heartbeat(2, 1, 6));
    a.network.shutdown().await;
    joiner.network.shutdown().await;
}

#[tokio::test]
async fn three_nodes_talk_to_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(config(7, id, dir.path())).await);
    }
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    for (i, node) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                node.network.set_peer(NodeId::new(j as u64 + 1), addr.clone());
            }
        }
    }
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|to| *to != from) {
            nodes[from as usize - 1]
                .network
                .send(heartbeat(from, to, from * 10 + to));
        }
    }
    for to in 1..=3u64 {
        let mut commits = Vec::new();
        for _ in 0..2 {
            let Message::Heartbeat(beat) = nodes[to as usize - 1].expect_message().await.message else {
                panic!("expected a heartbeat");
            };
            commits.push(beat.commit.get());
        }
        commits.sort();
        let expected: Vec<u64> = (1..=3u64)
            .filter(|from| *from != to)
            .map(|from| from * 10 + to)
            .collect();
        assert_eq!(commits, expected);
    }
    for node in &nodes {
        node.network.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    let mut b = start(config(8, 2, dir.path())).await;
    a.network.set_peer(NodeId::new(2), b.addr());
    a.network.send(heartbeat(1, 2, 1));
    a.expect_unreachable(2).await;
    b.expect_no_message(Duration::from_millis(200)).await;
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_connection_for_another_node_is_refused() {
    // Goal: `a` believes node 3 lives at `b`'s address; `b` (node 2) refuses.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    let mut b = start(config(7, 2, dir.path())).await;
    a.network.set_peer(NodeId::new(3), b.addr());
    a.network.send(heartbeat(1, 3, 1));
    a.expect_unreachable(3).await;
    b.expect_no_message(Duration::from_millis(200)).await;
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_peer_without_address_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    a.network.send(heartbeat(1, 9, 1));
    a.expect_unreachable(9).await;
    a.network.remove_peer(NodeId::new(9));
    a.network.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_goes_down_is_unreachable_until_it_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = pair(dir.path()).await;
    a.network.send(heartbeat(1, 2, 1));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 1));
    let b_addr = b.network.local_addr();
    b.network.shutdown().await;
    drop(b);

    // Down: sends are dropped and reported.
    let mut commit = 2;
    let deadline = Instant::now() + WAIT;
    loop {
        a.network.send(heartbeat(1, 2, commit));
        commit += 1;
        let unreachable = tokio::time::timeout(Duration::from_millis(50), a.inbound.recv()).await;
        if matches!(unreachable, Ok(Some(Inbound::Unreachable(id))) if id == NodeId::new(2)) {
            break;
        }
        assert!(Instant::now() < deadline, "no unreachable report");
    }

    // Back on the same address, knowing its members again: messages flow
    // again after a reconnect.
    let mut restarted = config(7, 2, dir.path());
    restarted.listen_addr = b_addr;
    restarted.peers.insert(NodeId::new(1), a.addr());
    let mut b = start(restarted).await;
    let deadline = Instant::now() + WAIT;
    loop {
        a.network.send(heartbeat(1, 2, commit));
        commit += 1;
        if let Ok(Some(Inbound::Message(envelope))) =
            tokio::time::timeout(Duration::from_millis(50), b.inbound.recv()).await
        {
            assert_eq!(envelope.from, NodeId::new(1));
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect");
    }
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_reports_without_blocking() {
    // Goal: a peer that accepts TCP but never answers the handshake cannot
    // make `send` wait; the overflow is dropped and reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut settings = config(7, 1, dir.path());
    settings.send_queue_messages = 4;
    let mut a = start(settings).await;
    a.network.set_peer(NodeId::new(2), silent_addr.to_string());
    let started = Instant::now();
    for commit in 0..10_000 {
        a.network.send(heartbeat(1, 2, commit));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(500),
        "send blocked for {elapsed:?}"
    );
    a.expect_unreachable(2).await;
    a.network.shutdown().await;
    holder.abort();
}

// ------------------------------------------------------------ bad input

async fn raw_connect(addr: &str, cluster_id: u64, from: u64, to: u64) -> (TcpStream, HandshakeStatus) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let handshake = Handshake {
        version: PROTOCOL_VERSION,
        kind: ConnectionKind::Messages,
        cluster_id,
        from: NodeId::new(from),
        to: NodeId::new(to),
        advertised_address: String::new(),
    };
    let mut out = BytesMut::new();
    out.put_u32(handshake.encoded_bytes() as u32);
    codec::encode_handshake(&handshake, &mut out);
    stream.write_all(&out).await.expect("write handshake");
    let mut reply = [0u8; 4 + codec::HANDSHAKE_REPLY_BYTES];
    stream.read_exact(&mut reply).await.expect("handshake reply");
    let (_, status) =
        codec::decode_handshake_reply(Bytes::copy_from_slice(&reply[4..])).expect("reply decodes");
    (stream, status)
}

/// Asserts the peer closes the connection (after we wrote something bad).
async fn assert_closed(mut stream: TcpStream) {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "connection still open: {read:?}");
}

#[tokio::test]
async fn bad_input_closes_the_connection_and_the_node_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = pair(dir.path()).await;
    let addr = b.addr();

    // Random bytes instead of a handshake.
    let mut garbage = TcpStream::connect(&addr).await.expect("connect");
    garbage.write_all(&[0x13; 300]).await.expect("write");
    assert_closed(garbage).await;

    // A handshake with the wrong cluster gets a refusal, then the close.
    let (refused, status) = raw_connect(&addr, 99, 1, 2).await;
    assert_eq!(status, HandshakeStatus::WrongCluster);
    assert_closed(refused).await;

    // An oversized frame after a good handshake.
    let (mut oversized, status) = raw_connect(&addr, 7, 1, 2).await;
    assert_eq!(status, HandshakeStatus::Accepted);
    oversized.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    assert_closed(oversized).await;

    // A malformed frame body.
    let (mut malformed, _) = raw_connect(&addr, 7, 1, 2).await;
    malformed
        .write_all(&[0, 0, 0, 3, 0xee, 0xee, 0xee])
        .await
        .expect("write");
    assert_closed(malformed).await;

    // A message whose sender is not the node that did the handshake.
    let (mut spoofed, _) = raw_connect(&addr, 7, 1, 2).await;
    let mut frame = BytesMut::new();
    codec::encode_framed(&heartbeat(3, 2, 1), &mut frame);
    spoofed.write_all(&frame).await.expect("write");
    assert_closed(spoofed).await;

    // Silence after connecting: closed after the handshake timeout.
    let silent = TcpStream::connect(&addr).await.expect("connect");
    assert_closed(silent).await;

    b.expect_no_message(Duration::from_millis(50)).await;
    a.network.send(heartbeat(1, 2, 42));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 42));
    a.network.shutdown().await;
    b.network.shutdown().await;
}

// ------------------------------------------------------------ snapshots

/// Snapshot data that trickles out: `chunk` bytes per read, with a pause
/// before each read, so a transfer lasts long enough to observe.
struct SlowData {
    remaining: usize,
    chunk: usize,
    pause: Duration,
    next_byte: u8,
}

impl Read for SlowData {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        let length = buffer.len().min(self.chunk).min(self.remaining);
        for byte in &mut buffer[..length] {
            *byte = self.next_byte;
            self.next_byte = self.next_byte.wrapping_add(1);
        }
        self.remaining -= length;
        Ok(length)
    }
}

fn expected_data(length: usize) -> Vec<u8> {
    (0..length).map(|i| i as u8).collect()
}

fn snapshot_message(from: u64, to: u64) -> Envelope {
    Envelope::new(
        NodeId::new(from),
        NodeId::new(to),
        Term::new(4),
        Message::Snapshot(Box::new(SnapshotMetadata {
            last: LogId::new(Term::new(3), Index::new(500)),
            conf_state: ConfState::with_voters([1, 2].map(NodeId::new)),
        })),
    )
}

#[tokio::test]
async fn a_large_snapshot_streams_while_heartbeats_keep_flowing() {
    const SIZE: usize = 6 * 1024 * 1024 + 123;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = pair(dir.path()).await;
    let data = SlowData {
        remaining: SIZE,
        chunk: 128 * 1024,
        pause: Duration::from_millis(10),
        next_byte: 0,
    };
    a.network.send_snapshot(snapshot_message(1, 2), Box::new(data));

    // Heartbeats every 10 ms arrive while the ~0.5 s transfer is under way.
    let mut heartbeats_during_transfer = 0;
    let mut commit = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + WAIT;
    let received = loop {
        tokio::select! {
            _ = ticker.tick() => {
                a.network.send(heartbeat(1, 2, commit));
                commit += 1;
            }
            event = b.inbound.recv() => match event {
                Some(Inbound::Message(_)) => heartbeats_during_transfer += 1,
                Some(Inbound::SnapshotReceived { envelope, data_path }) => break (envelope, data_path),
                other => panic!("unexpected {other:?}"),
            },
            _ = tokio::time::sleep_until(deadline) => panic!("snapshot never arrived"),
        }
    };
    assert!(
        heartbeats_during_transfer >= 10,
        "only {heartbeats_during_transfer} heartbeats during the transfer"
    );
    let (envelope, data_path) = received;
    assert_eq!(envelope, snapshot_message(1, 2));
    let on_disk = std::fs::read(&data_path).expect("snapshot file");
    assert_eq!(on_disk.len(), SIZE);
    assert!(on_disk == expected_data(SIZE), "snapshot data differs");
    let outcome = a
        .expect(|event| match event {
            Inbound::SnapshotSent { to, outcome } if to == NodeId::new(2) => Some(outcome),
            _ => None,
        })
        .await;
    assert_eq!(outcome, SnapshotOutcome::Delivered);
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_broken_by_a_dying_peer_reports_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = pair(dir.path()).await;
    let data = SlowData {
        remaining: 64 * 1024 * 1024,
        chunk: 64 * 1024,
        pause: Duration::from_millis(5),
        next_byte: 0,
    };
    a.network.send_snapshot(snapshot_message(1, 2), Box::new(data));
    // Let part of it through, then kill the receiver.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_dir = dir.path().join("snapshots-2");
    let partial_present = std::fs::read_dir(&b_dir)
        .expect("snapshot dir")
        .filter_map(Result::ok)
        .any(|file| {
            file.path()
                .extension()
                .is_some_and(|extension| extension == "partial")
        });
    assert!(partial_present, "the transfer had not started");
    b.network.shutdown().await;
    let outcome = a
        .expect(|event| match event {
            Inbound::SnapshotSent { to, outcome } if to == NodeId::new(2) => Some(outcome),
            _ => None,
        })
        .await;
    assert_eq!(outcome, SnapshotOutcome::Failed);
    // The receiver cleaned up its partial file.
    assert_eq!(std::fs::read_dir(&b_dir).expect("snapshot dir").count(), 0);
    drop(b.inbound.try_recv());
    a.network.shutdown().await;
}

/// The outcome `node` reports for its snapshot to `to`.
async fn snapshot_outcome(node: &mut Node, to: u64) -> SnapshotOutcome {
    node.expect(|event| match event {
        Inbound::SnapshotSent { to: peer, outcome } if peer == NodeId::new(to) => Some(outcome),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_snapshot_larger_than_the_receivers_limit_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    let mut b_config = config(7, 2, dir.path());
    b_config.snapshot_bytes_max = 1024 * 1024;
    let mut b = start(b_config).await;
    a.network.set_peer(NodeId::new(2), b.addr());
    b.network.set_peer(NodeId::new(1), a.addr());
    let data = std::io::repeat(7).take(3 * 1024 * 1024);
    a.network.send_snapshot(snapshot_message(1, 2), Box::new(data));
    assert_eq!(snapshot_outcome(&mut a, 2).await, SnapshotOutcome::Failed);
    // Nothing was handed over and nothing is left on the receiver's disk.
    assert!(
        !matches!(b.inbound.try_recv(), Ok(Inbound::SnapshotReceived { .. })),
        "an oversized snapshot was handed over"
    );
    let b_dir = dir.path().join("snapshots-2");
    assert_eq!(std::fs::read_dir(&b_dir).expect("snapshot dir").count(), 0);
    // A snapshot within the limit still gets through.
    let data = std::io::repeat(8).take(512 * 1024);
    a.network.send_snapshot(snapshot_message(1, 2), Box::new(data));
    assert_eq!(snapshot_outcome(&mut a, 2).await, SnapshotOutcome::Delivered);
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn snapshots_beyond_the_receivers_concurrency_limit_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    let mut c = start(config(7, 3, dir.path())).await;
    let mut b_config = config(7, 2, dir.path());
    b_config.snapshot_receives_max = 1;
    let mut b = start(b_config).await;
    for (sender, id) in [(&a, 1), (&c, 3)] {
        sender.network.set_peer(NodeId::new(2), b.addr());
        b.network.set_peer(NodeId::new(id), sender.addr());
    }
    // `a` streams slowly (~0.5 s) and holds the only slot...
    let slow = SlowData {
        remaining: 4 * 1024 * 1024,
        chunk: 128 * 1024,
        pause: Duration::from_millis(15),
        next_byte: 0,
    };
    a.network.send_snapshot(snapshot_message(1, 2), Box::new(slow));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ...so `c`'s snapshot is refused at once, and `a`'s still completes.
    let data = std::io::repeat(9).take(1024);
    c.network.send_snapshot(snapshot_message(3, 2), Box::new(data));
    assert_eq!(snapshot_outcome(&mut c, 2).await, SnapshotOutcome::Failed);
    assert_eq!(snapshot_outcome(&mut a, 2).await, SnapshotOutcome::Delivered);
    let received = b
        .expect(|event| match event {
            Inbound::SnapshotReceived { envelope, .. } => Some(envelope.from),
            _ => None,
        })
        .await;
    assert_eq!(received, NodeId::new(1));
    // With the slot free again, `c` gets through.
    let data = std::io::repeat(9).take(1024);
    c.network.send_snapshot(snapshot_message(3, 2), Box::new(data));
    assert_eq!(snapshot_outcome(&mut c, 2).await, SnapshotOutcome::Delivered);
    for node in [a, b, c] {
        node.network.shutdown().await;
    }
}

#[tokio::test]
async fn a_snapshot_to_an_unknown_peer_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(7, 1, dir.path())).await;
    a.network
        .send_snapshot(snapshot_message(1, 5), Box::new(std::io::empty()));
    let outcome = a
        .expect(|event| match event {
            Inbound::SnapshotSent { outcome, .. } => Some(outcome),
            _ => None,
        })
        .await;
    assert_eq!(outcome, SnapshotOutcome::Failed);
    a.network.shutdown().await;
}
