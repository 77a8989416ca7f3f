//! The peer port under hostile input, over real sockets on 127.0.0.1:
//! strangers are refused at the handshake and logged a handful of times;
//! they can neither crowd members out nor pin memory; a member's newer
//! connection replaces its older one; silent connections are let go; a
//! removed member is cut off; clusters with different ids refuse each
//! other and say why.

mod common;

use std::time::{Duration, Instant};

use common::{assert_closed, config, heartbeat, is_closed, raw_handshake, start, Logs, Node, WAIT};
use keel::NodeId;
use keel_net::codec::{ConnectionKind, HandshakeStatus, HANDSHAKE_BYTES_MAX};
use keel_net::{derive_cluster_id, Inbound, NetworkConfig, NetworkStats};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CLUSTER: u64 = 7;

/// Nodes 1 (`a`) and 2 (`b`), members of each other; `b` built from
/// `b_config` (node 2's), with node 1 added to its peers.
async fn pair_with(dir: &std::path::Path, mut b_config: NetworkConfig) -> (Node, Node) {
    let a = start(config(CLUSTER, 1, dir)).await;
    b_config.peers.insert(NodeId::new(1), a.addr());
    let b = start(b_config).await;
    a.network.set_peer(NodeId::new(2), b.addr());
    (a, b)
}

/// Polls `node`'s stats until `done` holds, or panics after `WAIT`.
async fn stats_until(node: &Node, what: &str, done: impl Fn(&NetworkStats) -> bool) -> NetworkStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = node.network.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A header that declares a frame body of `declared` bytes, and `sent` of
/// its bytes.
fn partial_frame(declared: u32, sent: usize) -> Vec<u8> {
    let mut bytes = declared.to_be_bytes().to_vec();
    bytes.resize(4 + sent, 0x5a);
    bytes
}

#[tokio::test]
async fn a_stranger_is_refused_at_the_handshake_and_logged_a_handful_of_times() {
    // Goal: node 99, of the right cluster but no member, is refused at
    // every handshake and never teaches `b` its address; thousands of
    // attempts, with one id or a new id each time, give a handful of log
    // lines; the member still gets through.
    const ATTEMPTS: u64 = 3_000;
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = pair_with(dir.path(), config(CLUSTER, 2, dir.path())).await;
    let addr = b.addr();
    let started = Instant::now();
    for _ in 0..ATTEMPTS {
        let (_, status) = raw_handshake(&addr, CLUSTER, 99, 2, ConnectionKind::Messages).await;
        assert_eq!(status, HandshakeStatus::NotMember);
    }
    for id in 100..100 + ATTEMPTS {
        let (_, status) = raw_handshake(&addr, CLUSTER, id, 2, ConnectionKind::Snapshot).await;
        assert_eq!(status, HandshakeStatus::NotMember);
    }
    let elapsed = started.elapsed();

    let stats = b.network.stats();
    assert_eq!(stats.handshakes_refused, 2 * ATTEMPTS);
    assert_eq!(stats.member_connections, 0);
    let lines = logs.warnings("not a member");
    // Within one 10 s interval: at most 8 refusal lines in all (n99's
    // one among them).
    assert!(
        !lines.is_empty() && lines.len() <= 8,
        "{} lines for {} refusals in {elapsed:?}: {lines:#?}",
        lines.len(),
        2 * ATTEMPTS
    );
    assert_eq!(stats.refusals_logged, lines.len() as u64);
    assert_eq!(stats.refusals_logged + stats.refusals_suppressed, 2 * ATTEMPTS);
    assert!(
        logs.containing(&["learned"]).is_empty(),
        "a stranger's address was learned"
    );

    a.network.send(heartbeat(1, 2, 7));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 7));
    a.network.shutdown().await;
    b.network.shutdown().await;
}

/// Opens `count` connections to `addr` that never send a byte.
async fn silent_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    held
}

#[tokio::test]
async fn silent_strangers_cannot_crowd_out_a_restarted_member() {
    // Goal: strangers keep opening connections that never handshake, many
    // more than `b`'s 8 unauthenticated slots, with a 10 s handshake
    // timeout. Each new one closes the oldest, so `b` holds at most 8; and
    // member `a`, restarted in the middle of the flood (so it must dial
    // anew), gets through at once rather than after a handshake timeout.
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b_config = config(CLUSTER, 2, dir.path());
    b_config.unauthenticated_connections_max = 8;
    b_config.handshake_timeout_ms = 10_000;
    let (a, mut b) = pair_with(dir.path(), b_config).await;
    let addr = b.addr();
    a.network.send(heartbeat(1, 2, 1));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 1));

    let mut held = silent_connections(&addr, 200).await;
    let stats = stats_until(&b, "evictions", |stats| stats.unauthenticated_evicted >= 192).await;
    assert!(stats.unauthenticated_connections <= 8, "{stats:?}");

    // The flood goes on while `a` restarts.
    let flood_addr = addr.clone();
    let flood = tokio::spawn(async move {
        loop {
            held.extend(silent_connections(&flood_addr, 4).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let a_addr = a.network.local_addr();
    a.network.shutdown().await;
    drop(a);
    let mut restarted = config(CLUSTER, 1, dir.path());
    restarted.listen_addr = a_addr;
    restarted.peers.insert(NodeId::new(2), addr.clone());
    let a = start(restarted).await;
    let started = Instant::now();
    a.network.send(heartbeat(1, 2, 2));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 2));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "the member waited {waited:?}");
    flood.abort();

    let stats = b.network.stats();
    assert!(stats.unauthenticated_connections <= 8, "{stats:?}");
    assert_eq!(stats.member_connections, 1, "{stats:?}");
    let lines = logs.warnings("make room");
    assert!(!lines.is_empty() && lines.len() <= 8, "{lines:#?}");
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_members_newer_connection_replaces_its_older_one() {
    // Goal: 50 accepted connections claiming member 1 (an impostor that
    // reconnects, or a restarted node whose old connections linger) hold
    // one slot per kind: each replaces and closes the one before.
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = pair_with(dir.path(), config(CLUSTER, 2, dir.path())).await;
    let addr = b.addr();
    let mut streams = Vec::new();
    for _ in 0..50 {
        let (stream, status) = raw_handshake(&addr, CLUSTER, 1, 2, ConnectionKind::Messages).await;
        assert_eq!(status, HandshakeStatus::Accepted);
        streams.push(stream);
    }
    let (mut snapshot, status) = raw_handshake(&addr, CLUSTER, 1, 2, ConnectionKind::Snapshot).await;
    assert_eq!(status, HandshakeStatus::Accepted);
    let mut newest = streams.pop().expect("50 streams");
    for stream in streams {
        assert_closed(stream).await;
    }
    let stats = stats_until(&b, "replacements", |stats| stats.member_connections == 2).await;
    assert_eq!(stats.member_connections_replaced, 49, "{stats:?}");
    assert!(!is_closed(&mut newest).await, "the newest connection was closed");
    assert!(
        !is_closed(&mut snapshot).await,
        "the snapshot connection was closed"
    );
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_silent_member_connection_is_closed_after_the_idle_timeout() {
    // Goal: an accepted connection that sends nothing is closed after one
    // to two idle periods; one that carries heartbeats stays open; and a
    // quiet real link closed for idleness is re-dialled at its next
    // message without loss or an unreachable report.
    const IDLE: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b_config = config(CLUSTER, 2, dir.path());
    b_config.inbound_idle_timeout_ms = IDLE.as_millis() as u64;
    let (mut a, mut b) = pair_with(dir.path(), b_config).await;
    let addr = b.addr();

    let (silent, status) = raw_handshake(&addr, CLUSTER, 1, 2, ConnectionKind::Messages).await;
    assert_eq!(status, HandshakeStatus::Accepted);
    let started = Instant::now();
    assert_closed(silent).await;
    let waited = started.elapsed();
    assert!(
        waited >= IDLE && waited < 2 * IDLE + Duration::from_millis(500),
        "closed after {waited:?}"
    );
    stats_until(&b, "idle close", |stats| stats.idle_connections_closed == 1).await;

    // Heartbeats every 50 ms for four idle periods: never idle.
    for commit in 0..24 {
        a.network.send(heartbeat(1, 2, commit));
        assert_eq!(b.expect_message().await, heartbeat(1, 2, commit));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.network.stats().idle_connections_closed, 1);

    // Quiet for long enough to be let go, then a message: it arrives.
    stats_until(&b, "idle close", |stats| stats.idle_connections_closed == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.network.send(heartbeat(1, 2, 100));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 100));
    while let Ok(event) = a.inbound.try_recv() {
        assert!(
            !matches!(event, Inbound::Unreachable(id) if id == NodeId::new(2)),
            "unreachable reported"
        );
    }
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_connections_hold_at_most_a_handshake_frame_each() {
    // Goal: before its handshake is accepted a connection may only send a
    // handshake-sized frame: one that declares a 16 MiB frame is closed at
    // once, and 40 that stall in the middle of a handshake frame hold at
    // most the 16 slots' worth of handshake buffers.
    const SLOTS: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b_config = config(CLUSTER, 2, dir.path());
    b_config.unauthenticated_connections_max = SLOTS;
    b_config.handshake_timeout_ms = 10_000;
    let (a, b) = pair_with(dir.path(), b_config).await;
    let addr = b.addr();

    for _ in 0..40 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream
            .write_all(&partial_frame(16 << 20, 1_000))
            .await
            .expect("write");
        assert_closed(stream).await;
    }
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let declared = HANDSHAKE_BYTES_MAX as u32;
        stream
            .write_all(&partial_frame(declared, 100))
            .await
            .expect("write");
        stalled.push(stream);
    }
    let stats = stats_until(&b, "stalled handshakes", |stats| {
        stats.unauthenticated_evicted >= 24 && stats.unauthenticated_buffered_bytes > 0
    })
    .await;
    assert!(stats.unauthenticated_connections <= SLOTS as u64, "{stats:?}");
    let bound = (SLOTS * (4 + HANDSHAKE_BYTES_MAX)) as u64;
    assert!(
        stats.unauthenticated_buffered_bytes <= bound,
        "{} bytes buffered, bound {bound}",
        stats.unauthenticated_buffered_bytes
    );
    assert_eq!(stats.member_buffered_bytes, 0);
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn members_that_declare_huge_frames_pin_only_what_they_sent() {
    // Goal: 20 members each declare a 16 MiB frame, send 1 MiB of it and
    // stall. Buffers grow with the bytes that arrive, so `b` holds about
    // 20-40 MiB, not the 320 MiB declared; and once the connections go,
    // nothing stays counted.
    const MEMBERS: u64 = 20;
    const SENT: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = pair_with(dir.path(), config(CLUSTER, 2, dir.path())).await;
    let ids = 10..10 + MEMBERS;
    b.network.set_members(ids.clone().map(NodeId::new));
    let addr = b.addr();
    let mut stalled = Vec::new();
    for id in ids {
        let (mut stream, status) = raw_handshake(&addr, CLUSTER, id, 2, ConnectionKind::Messages).await;
        assert_eq!(status, HandshakeStatus::Accepted);
        stream
            .write_all(&partial_frame((16 << 20) - 1, SENT))
            .await
            .expect("write");
        stalled.push(stream);
    }
    let received = MEMBERS * SENT as u64;
    let stats = stats_until(&b, "buffered", |stats| stats.member_buffered_bytes >= received).await;
    // At most twice what arrived, plus a read chunk, per connection.
    let bound = MEMBERS * (2 * SENT as u64 + 64 * 1024);
    assert!(
        stats.member_buffered_bytes <= bound,
        "{} bytes buffered for {received} received (bound {bound})",
        stats.member_buffered_bytes
    );
    drop(stalled);
    stats_until(&b, "released", |stats| stats.member_buffered_bytes == 0).await;
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn a_removed_member_is_cut_off_and_refused_until_it_is_a_member_again() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = pair_with(dir.path(), config(CLUSTER, 2, dir.path())).await;
    a.network.send(heartbeat(1, 2, 1));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 1));
    assert_eq!(b.network.stats().member_connections, 1);

    b.network.set_members([NodeId::new(3)]);
    stats_until(&b, "cut off", |stats| stats.member_connections == 0).await;
    // `a` redials and is refused: it is told why (a removed node learns
    // it was removed this way), and its messages are reported unreachable.
    let deadline = Instant::now() + WAIT;
    let mut commit = 2;
    let (mut refused, mut unreachable) = (false, false);
    while !(refused && unreachable) {
        a.network.send(heartbeat(1, 2, commit));
        commit += 1;
        match tokio::time::timeout(Duration::from_millis(20), a.inbound.recv()).await {
            Ok(Some(Inbound::Refused { peer, status })) => {
                assert_eq!((peer, status), (NodeId::new(2), HandshakeStatus::NotMember));
                refused = true;
            }
            Ok(Some(Inbound::Unreachable(id))) if id == NodeId::new(2) => unreachable = true,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "refused {refused}, unreachable {unreachable}"
        );
    }
    b.expect_no_message(Duration::from_millis(100)).await;
    stats_until(&b, "refusal", |stats| stats.handshakes_refused >= 1).await;
    assert!(!logs.warnings("not a member").is_empty());

    b.network.set_members([NodeId::new(1), NodeId::new(3)]);
    let deadline = Instant::now() + WAIT;
    loop {
        a.network.send(heartbeat(1, 2, commit));
        commit += 1;
        if let Ok(Some(Inbound::Message(envelope))) =
            tokio::time::timeout(Duration::from_millis(20), b.inbound.recv()).await
        {
            assert_eq!(envelope.from, NodeId::new(1));
            break;
        }
        assert!(Instant::now() < deadline, "not let back in");
    }
    a.network.shutdown().await;
    b.network.shutdown().await;
}

#[tokio::test]
async fn clusters_founded_apart_refuse_each_other_and_say_why() {
    // Goal: two clusters founded on the same addresses with different
    // tokens get different ids; their nodes refuse each other at the
    // handshake, both sides logging the reason; nodes of one id talk.
    let (logs, _guard) = Logs::capture();
    let founders = [
        (NodeId::new(1), "127.0.0.1:7001"),
        (NodeId::new(2), "127.0.0.1:7002"),
    ];
    let ours = derive_cluster_id(founders, "alpha");
    let theirs = derive_cluster_id(founders, "beta");
    assert_ne!(ours, theirs);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start(config(ours, 1, dir.path())).await;
    let mut b = start(config(theirs, 2, dir.path())).await;
    b.network.set_peer(NodeId::new(1), a.addr());
    a.network.set_peer(NodeId::new(2), b.addr());
    a.network.send(heartbeat(1, 2, 1));
    a.expect_unreachable(2).await;
    b.expect_no_message(Duration::from_millis(100)).await;
    let refused = logs.warnings(&format!(
        "belongs to cluster {ours:#018x}, this node to cluster {theirs:#018x}"
    ));
    assert_eq!(refused.len(), 1, "{:#?}", logs.warnings(""));
    assert!(
        !logs.warnings("another cluster").is_empty(),
        "the dialler says nothing"
    );

    let mut c = start(config(theirs, 1, dir.path())).await;
    c.network.set_peer(NodeId::new(2), b.addr());
    b.network.set_peer(NodeId::new(1), c.addr());
    c.network.send(heartbeat(1, 2, 3));
    assert_eq!(b.expect_message().await, heartbeat(1, 2, 3));
    for node in [&mut a, &mut b, &mut c] {
        node.network.shutdown().await;
    }
}
