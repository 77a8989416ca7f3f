//! The HTTP API against hostile or careless clients (issue 14, items 5, 6
//! and 8), through real sockets and the real server: bodies that never
//! arrive, requests the HTTP layer refuses, malformed keys and bodies,
//! refusals that are not the client's fault, and the health probes.

#![allow(clippy::unwrap_used)]

mod api_cluster;

use std::time::Duration;

use api_cluster::{assert_error, call, eventually, kv, Cluster};
use hyper::Method;
use keel::NodeId;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Reads one answer off `stream`: up to the end of its body (by its
/// content-length) or the connection's close, whichever comes first.
async fn read_answer(stream: &mut TcpStream, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|length| length.trim().parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(count)) => answer.extend_from_slice(&buffer[..count]),
        }
    }
}

/// Sends `request` on a fresh connection and reads the answer.
async fn exchange(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream, Duration::from_secs(5)).await
}

/// The JSON body of a raw answer, checked to be a contract error.
fn error_of(answer: &str, status: u16, code: &str) -> Value {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    assert_eq!(body["error"], code, "{answer}");
    assert!(body["message"].is_string(), "{answer}");
    assert!(body.get("leader").is_some(), "{answer}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_arrive_hold_no_request_slot_and_time_out() {
    // Goal (item 5): 300 requests that declare a 10-byte body and send 3
    // bytes (more than the 256 in-flight slots) do not stop the node from
    // answering others; each gets 408 body_timeout once its body is late,
    // and none of them is applied.
    let mut cluster = Cluster::new(1);
    cluster.limits.body_read_timeout = Duration::from_secs(3);
    cluster.start_all().await;
    cluster.leader().await;
    let addr = cluster.addr(1);
    let client = cluster.client(1);
    let mut stalled = Vec::new();
    for index in 0..300 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request =
            format!("PUT /v1/kv/stalled{index} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let health = timeout(Duration::from_secs(1), call(client, Method::GET, "/healthz", ""))
        .await
        .expect("/healthz waited behind the stalled bodies");
    assert_eq!(health.status, 200, "{}", health.text());
    let put = timeout(
        Duration::from_secs(1),
        call(client, Method::PUT, &kv("fresh"), "v"),
    )
    .await
    .expect("a PUT waited behind the stalled bodies");
    assert_eq!(put.status, 200, "{}", put.text());
    let get = timeout(
        Duration::from_secs(1),
        call(client, Method::GET, &kv("fresh"), ""),
    )
    .await
    .expect("a GET waited behind the stalled bodies");
    assert_eq!((get.status, get.text()), (200, "v".to_string()));

    for stream in &mut stalled {
        let answer = read_answer(stream, Duration::from_secs(10)).await;
        error_of(&answer, 408, "body_timeout");
    }
    assert_error(
        &call(client, Method::GET, &kv("stalled0"), "").await,
        404,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_share_a_memory_budget() {
    // Goal (item 5): the bytes of bodies held in memory are bounded. With
    // values of at most 1 KiB the budget is one compare-and-set body
    // (12 KiB + 64 KiB = 77,824 bytes); a 70,000-byte body waiting on a
    // write that cannot commit holds most of it, so a 10,000-byte body
    // cannot be taken in before its deadline: 503 overloaded, and nothing
    // applied. Once the first is answered, the second goes through.
    let mut cluster = Cluster::new(3);
    cluster.limits.value_bytes_max = 1024;
    cluster.limits.body_bytes_buffered_max = 0;
    cluster.limits.body_read_timeout = Duration::from_secs(1);
    cluster.request_timeout = Duration::from_secs(3);
    cluster.election = Duration::from_millis(5_000);
    cluster.start_all().await;
    let leader = cluster.leader().await;
    let addr = cluster.addr(leader);
    let padded_cas = |value: &str, bytes: usize| {
        let mut body = json!({ "expected": null, "value": value }).to_string();
        body.push_str(&" ".repeat(bytes - body.len()));
        body
    };
    let cas_request = |key: &str, body: &str| {
        format!(
            "POST /v1/kv/{key}/cas HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    cluster.network.isolate(NodeId::new(leader));
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    let big = cas_request("big", &padded_cas("b", 70_000));
    holder.write_all(big.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let small = cas_request("small", &padded_cas("s", 10_000));
    let refused = exchange(&addr, small.as_bytes()).await;
    error_of(&refused, 503, "overloaded");

    let held = read_answer(&mut holder, Duration::from_secs(10)).await;
    error_of(&held, 503, "timeout");
    cluster.network.heal();
    cluster.leader().await;
    // 200, or 409 if an earlier try that timed out was applied after all.
    eventually("the small compare-and-set goes through", || {
        let small = small.clone();
        let addr = addr.clone();
        async move {
            let answer = exchange(&addr, small.as_bytes()).await;
            answer.starts_with("HTTP/1.1 200 ") || answer.starts_with("HTTP/1.1 409 ")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_closes_its_connection() {
    // Goal (item 5): a client that starts a request head and never ends
    // it, or connects and says nothing, holds its connection for at most
    // the header read timeout; others are served meanwhile.
    let mut cluster = Cluster::new(1);
    cluster.limits.header_read_timeout = Duration::from_secs(1);
    cluster.start_all().await;
    cluster.leader().await;
    let addr = cluster.addr(1);
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost").await.unwrap();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(
        call(cluster.client(1), Method::GET, "/healthz", "").await.status,
        200
    );
    let started = Instant::now();
    for stream in [&mut partial, &mut silent] {
        let mut buffer = [0u8; 64];
        let read = timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection stays open: {read:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_layer_refuses_get_json_errors() {
    // Goal (item 6): a request that cannot be parsed, or whose head is over
    // the limit, is answered with the contract's JSON, not an empty body.
    let cluster = Cluster::start(1).await;
    cluster.leader().await;
    let addr = cluster.addr(1);
    error_of(&exchange(&addr, b"GARBAGE\r\n\r\n").await, 400, "bad_request");
    let bad_length = b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n";
    error_of(&exchange(&addr, bad_length).await, 400, "bad_request");
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(300_000)
    );
    error_of(&exchange(&addr, big_header.as_bytes()).await, 431, "too_large");
    let long_url = format!("GET /v1/kv/{} HTTP/1.1\r\nHost: x\r\n\r\n", "k".repeat(300_000));
    let answer = exchange(&addr, long_url.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 414 ") || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    assert_eq!(serde_json::from_str::<Value>(body).unwrap()["error"], "too_large");
    // Still serving.
    assert_eq!(
        call(cluster.client(1), Method::GET, "/healthz", "").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_bodies_and_methods_are_refused_precisely() {
    // Goal (item 6): a wrong method is 405 method_not_allowed (with the
    // methods allowed); an invalid percent escape is a 400, not a literal
    // key; a compare-and-set without `expected` or `value` is a 400 and
    // changes nothing (an omitted `value` must not delete the key).
    let cluster = Cluster::start(1).await;
    cluster.leader().await;
    let client = cluster.client(1);

    let wrong = call(client, Method::PATCH, &kv("a"), "").await;
    assert_error(&wrong, 405, "method_not_allowed");
    let answer = exchange(&cluster.addr(1), b"PATCH /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nallow: get,head,put,delete\r\n"),
        "{answer}"
    );

    for path in ["/v1/kv/%zz", "/v1/kv/a%2", "/v1/kv/a%", "/v1/kv/%zz/cas"] {
        let method = if path.ends_with("/cas") {
            Method::POST
        } else {
            Method::PUT
        };
        let body = if path.ends_with("/cas") {
            r#"{"expected":null,"value":"x"}"#
        } else {
            "x"
        };
        assert_error(&call(client, method, path, body).await, 400, "bad_request");
    }
    assert_error(
        &call(client, Method::GET, "/v1/kv/%25zz", "").await,
        404,
        "not_found",
    );
    assert_eq!(
        call(client, Method::PUT, "/v1/kv/100%25", "full").await.status,
        200
    );
    let got = call(client, Method::GET, &kv("100%"), "").await;
    assert_eq!((got.status, got.text()), (200, "full".to_string()));

    assert_eq!(call(client, Method::PUT, &kv("kept"), "v").await.status, 200);
    let cas = format!("{}/cas", kv("kept"));
    for body in [r#"{"expected":"v"}"#, r#"{"value":"w"}"#, "{}"] {
        assert_error(&call(client, Method::POST, &cas, body).await, 400, "bad_request");
    }
    let kept = call(client, Method::GET, &kv("kept"), "").await;
    assert_eq!((kept.status, kept.text()), (200, "v".to_string()));
    // Explicit nulls are values of the contract: delete if still "v".
    let delete = call(client, Method::POST, &cas, r#"{"expected":"v","value":null}"#).await;
    assert_eq!(delete.status, 200, "{}", delete.text());
    assert_error(
        &call(client, Method::GET, &kv("kept"), "").await,
        404,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_uncommitted_log_is_overloaded_not_a_bad_request() {
    // Goal (item 6): a write the leader refuses because too many bytes
    // wait uncommitted is 503 overloaded: the request was fine.
    let mut cluster = Cluster::new(3);
    cluster.max_uncommitted_bytes = 4096;
    cluster.request_timeout = Duration::from_millis(500);
    cluster.election = Duration::from_millis(3_000);
    cluster.heartbeat = Duration::from_millis(50);
    cluster.start_all().await;
    let leader = cluster.leader().await;
    let client = cluster.client(leader);
    cluster.network.isolate(NodeId::new(leader));
    let value = "v".repeat(3000);
    assert_error(
        &call(client, Method::PUT, &kv("a"), value.clone()).await,
        503,
        "timeout",
    );
    let refused = call(client, Method::PUT, &kv("b"), value).await;
    assert_error(&refused, 503, "overloaded");
    cluster.network.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_a_node_can_serve_and_healthz_that_it_lives() {
    // Goal (item 8): /readyz is 200 on members that know a leader and have
    // applied what is committed, 503 not_ready (saying why) on a node that
    // knows no leader or is no member; /healthz is 200 on every running
    // node; both are JSON-answered and documented.
    let mut cluster = Cluster::new(3);
    cluster.election = Duration::from_millis(300);
    cluster.start_all().await;
    cluster.start_node(9, false).await;
    let leader = cluster.leader().await;
    assert_eq!(
        call(cluster.client(leader), Method::PUT, &kv("r"), "1")
            .await
            .status,
        200
    );
    for id in 1..=3 {
        let client = cluster.client(id);
        eventually("every member is ready", || async move {
            call(client, Method::GET, "/readyz", "").await.status == 200
        })
        .await;
        let ready = call(client, Method::GET, "/readyz", "").await.json().unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["leader"], leader, "{ready}");
        assert!(
            ready["applied_index"].as_u64()
                >= ready["commit_index"]
                    .as_u64()
                    .map(|commit| commit.saturating_sub(1000))
        );
    }

    let stranger = call(cluster.client(9), Method::GET, "/readyz", "").await;
    assert_error(&stranger, 503, "not_ready");
    let message = stranger.json().unwrap()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("not a member") && message.contains("no leader"),
        "{message}"
    );
    assert_eq!(
        call(cluster.client(9), Method::GET, "/healthz", "").await.status,
        200
    );

    let follower = *cluster
        .members
        .keys()
        .find(|id| **id != leader && **id != 9)
        .unwrap();
    cluster.network.isolate(NodeId::new(follower));
    let cut_off = cluster.client(follower);
    eventually("a cut-off follower stops being ready", || async move {
        call(cut_off, Method::GET, "/readyz", "").await.status == 503
    })
    .await;
    assert_error(&call(cut_off, Method::GET, "/readyz", "").await, 503, "not_ready");
    assert_eq!(call(cut_off, Method::GET, "/healthz", "").await.status, 200);
    cluster.network.heal();
    eventually("it is ready again once it hears the leader", || async move {
        call(cut_off, Method::GET, "/readyz", "").await.status == 200
    })
    .await;
}
