//! `keel-kv bench`: a closed-loop load generator. Each client sends one
//! request, waits for the answer, and sends the next, for a fixed time;
//! latencies go into an HDR histogram.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use crate::client::{encode_key, KvClient};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The nodes; client `i` talks to endpoint `i mod n`.
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// The size of each written value.
    pub value_bytes: usize,
    /// The share of reads, 0.0 to 1.0.
    pub read_ratio: f64,
    /// How many distinct keys the load touches.
    pub keys: u64,
    /// `linearizable`, `lease` or `stale`, for reads.
    pub consistency: String,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests, by kind (an error code or a client failure).
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl BenchReport {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let millis = |quantile: f64| self.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
        let mut text = String::new();
        let errors: u64 = self.errors.values().sum();
        text.push_str(&format!("{:<16} {:>12}\n", "metric", "value"));
        text.push_str(&format!("{:<16} {:>12.1}\n", "throughput/s", self.throughput()));
        text.push_str(&format!("{:<16} {:>12}\n", "requests ok", self.ok));
        text.push_str(&format!("{:<16} {:>12}\n", "errors", errors));
        for (label, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            text.push_str(&format!(
                "{:<16} {:>9.3} ms\n",
                format!("latency {label}"),
                millis(quantile)
            ));
        }
        text.push_str(&format!(
            "{:<16} {:>9.3} ms\n",
            "latency max",
            self.latency_us.max() as f64 / 1000.0
        ));
        for (kind, count) in &self.errors {
            text.push_str(&format!("{:<16} {:>12}\n", format!("error {kind}"), count));
        }
        text
    }
}

/// A small, fast generator for choosing keys and operations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min with 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Runs the load and returns what it measured.
///
/// # Errors
/// A message if the options are unusable.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    if options.endpoints.is_empty() || options.clients == 0 {
        return Err("bench needs at least one endpoint and one client".to_string());
    }
    if !(0.0..=1.0).contains(&options.read_ratio) {
        return Err("--read-ratio must be between 0.0 and 1.0".to_string());
    }
    let client = Arc::new(KvClient::new(&options.endpoints, Duration::from_secs(30)));
    let value = Bytes::from(vec![b'x'; options.value_bytes]);
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..options.clients {
        let client = client.clone();
        let value = value.clone();
        let options = options.clone();
        let completed = completed.clone();
        let failed = failed.clone();
        tasks.spawn(async move {
            let endpoint = client.endpoints()[number % client.endpoints().len()].clone();
            let mut random = XorShift(0x2545_F491_4F6C_DD1D ^ (number as u64 + 1).wrapping_mul(0x9E37_79B9));
            let mut histogram = new_histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let key = format!("bench-{}", random.next() % options.keys.max(1));
                let path = format!("/v1/kv/{}", encode_key(&key));
                let (method, path, body) = if random.unit() < options.read_ratio {
                    (
                        Method::GET,
                        format!("{path}?consistency={}", options.consistency),
                        Bytes::new(),
                    )
                } else {
                    (Method::PUT, path, value.clone())
                };
                let sent = Instant::now();
                let outcome = client.request_to(&endpoint, method.clone(), &path, body).await;
                let kind = match outcome {
                    Ok(response)
                        if response.status == 200 || (method == Method::GET && response.status == 404) =>
                    {
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        let _ = histogram.record(micros.min(600_000_000));
                        completed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(response) => response
                        .error_code()
                        .unwrap_or_else(|| format!("http_{}", response.status)),
                    Err(error) => error.kind().to_string(),
                };
                failed.fetch_add(1, Ordering::Relaxed);
                *errors.entry(kind).or_default() += 1;
                // A failing node must not be hammered in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (histogram, errors)
        });
    }
    let progress = options.progress.then(|| {
        let completed = completed.clone();
        let failed = failed.clone();
        let total = options.duration;
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = completed.load(Ordering::Relaxed);
                eprint!(
                    "\r[{:>5.1}s/{:.0}s] ok {:>9}  {:>8}/s  errors {:>6}   ",
                    started.elapsed().as_secs_f64(),
                    total.as_secs_f64(),
                    now,
                    now - last,
                    failed.load(Ordering::Relaxed)
                );
                let _ = std::io::stderr().flush();
                last = now;
            }
        })
    });
    let mut latency_us = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let (histogram, client_errors) = result.map_err(|error| format!("a client task failed: {error}"))?;
        let _ = latency_us.add(&histogram);
        for (kind, count) in client_errors {
            *errors.entry(kind).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    Ok(BenchReport {
        ok: completed.load(Ordering::Relaxed),
        errors,
        latency_us,
        elapsed,
    })
}
