//! The load generator: the same client code, the same number of keep-alive
//! connections and the same key and value distribution for keel-kv and etcd.
//! Only the request shape differs (keel-kv's `PUT /v1/kv/{key}` against
//! etcd's JSON gateway `POST /v3/kv/put` with base64 fields).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::{base64, Connection, Response};

/// Which server speaks at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// keel-kv's HTTP API (KV_API.md). Reads are linearizable (ReadIndex).
    KeelKv,
    /// etcd's v3 HTTP/JSON gateway. Reads are linearizable (etcd's default).
    Etcd,
}

/// Number of distinct keys the clients write and read.
pub const KEY_SPACE: u64 = 10_000;
/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Protocol {
    /// Sends a write of `value` to `key`; true when the server acknowledged it.
    pub async fn write(&self, connection: &mut Connection, key: u64, value: &[u8]) -> bool {
        let response = match self {
            Protocol::KeelKv => {
                let path = format!("/v1/kv/key{key:05}");
                connection
                    .request(
                        "PUT",
                        &path,
                        Some("application/octet-stream"),
                        value,
                        REQUEST_TIMEOUT,
                    )
                    .await
            }
            Protocol::Etcd => {
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    base64(format!("key{key:05}").as_bytes()),
                    base64(value)
                );
                connection
                    .request(
                        "POST",
                        "/v3/kv/put",
                        Some("application/json"),
                        body.as_bytes(),
                        REQUEST_TIMEOUT,
                    )
                    .await
            }
        };
        matches!(response, Ok(Response { status: 200, .. }))
    }

    /// Sends a linearizable read of `key`; true when the server answered it
    /// (an absent key is an answer).
    pub async fn read(&self, connection: &mut Connection, key: u64) -> bool {
        let response = match self {
            Protocol::KeelKv => {
                let path = format!("/v1/kv/key{key:05}");
                connection.request("GET", &path, None, b"", REQUEST_TIMEOUT).await
            }
            Protocol::Etcd => {
                let body = format!("{{\"key\":\"{}\"}}", base64(format!("key{key:05}").as_bytes()));
                connection
                    .request(
                        "POST",
                        "/v3/kv/range",
                        Some("application/json"),
                        body.as_bytes(),
                        REQUEST_TIMEOUT,
                    )
                    .await
            }
        };
        matches!(
            response,
            Ok(Response {
                status: 200 | 404,
                ..
            })
        )
    }
}

/// One load point.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Concurrent clients, each with one connection and one request in flight.
    pub clients: usize,
    /// Percentage of requests that are reads (0 or 90 in the benchmarks).
    pub read_percent: u32,
    /// Value size of writes.
    pub value_bytes: usize,
    /// Measured time (after `warmup`).
    pub duration: Duration,
    /// Time the clients run before measuring starts.
    pub warmup: Duration,
}

/// What one load point measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Successful writes in the measured window.
    pub writes: u64,
    /// Successful reads in the measured window.
    pub reads: u64,
    /// Failed or timed-out requests in the measured window.
    pub errors: u64,
    /// Latency of successful requests (writes and reads), in microseconds.
    pub latency_micros: Histogram<u64>,
    /// Latency of successful writes, in microseconds.
    pub write_latency_micros: Histogram<u64>,
    /// The measured window.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Successful writes per second.
    pub fn writes_per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Successful requests per second.
    pub fn requests_per_second(&self) -> f64 {
        (self.writes + self.reads) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile over all successful requests, in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_micros.value_at_quantile(quantile) as f64 / 1e3
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A small, fast, seeded generator (splitmix64) for keys and the read/write
/// choice: the same sequence for both servers.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }
}

/// Runs `params.clients` clients against `servers` (client `i` talks to
/// `servers[i % len]`, so every node gets the same share: followers forward
/// to the leader in both systems) and measures after the warm-up.
pub fn run(protocol: Protocol, servers: &[SocketAddr], params: &LoadParams) -> LoadResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run_async(protocol, servers, params))
}

struct ClientResult {
    writes: u64,
    reads: u64,
    errors: u64,
    latency_micros: Histogram<u64>,
    write_latency_micros: Histogram<u64>,
}

async fn run_async(protocol: Protocol, servers: &[SocketAddr], params: &LoadParams) -> LoadResult {
    let started = Instant::now();
    let measure_from = started + params.warmup;
    let deadline = measure_from + params.duration;
    let mut tasks = Vec::with_capacity(params.clients);
    for client in 0..params.clients {
        let server = servers[client % servers.len()];
        let value = vec![b'v'; params.value_bytes];
        let read_percent = params.read_percent;
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(server);
            let mut random = SplitMix::new(client as u64 + 1);
            let mut result = ClientResult {
                writes: 0,
                reads: 0,
                errors: 0,
                latency_micros: histogram(),
                write_latency_micros: histogram(),
            };
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let key = random.next_u64() % KEY_SPACE;
                let is_read = random.next_u64() % 100 < u64::from(read_percent);
                let ok = if is_read {
                    protocol.read(&mut connection, key).await
                } else {
                    protocol.write(&mut connection, key, &value).await
                };
                let done = Instant::now();
                if now < measure_from || done > deadline {
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
                if !ok {
                    result.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let micros = (done - now).as_micros().max(1) as u64;
                result.latency_micros.saturating_record(micros);
                if is_read {
                    result.reads += 1;
                } else {
                    result.writes += 1;
                    result.write_latency_micros.saturating_record(micros);
                }
            }
            result
        }));
    }
    let mut total = LoadResult {
        writes: 0,
        reads: 0,
        errors: 0,
        latency_micros: histogram(),
        write_latency_micros: histogram(),
        elapsed: params.duration,
    };
    for task in tasks {
        if let Ok(result) = task.await {
            total.writes += result.writes;
            total.reads += result.reads;
            total.errors += result.errors;
            let _ = total.latency_micros.add(&result.latency_micros);
            let _ = total.write_latency_micros.add(&result.write_latency_micros);
        }
    }
    total
}
