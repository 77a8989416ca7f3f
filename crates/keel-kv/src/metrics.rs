//! `/metrics`: the node's counters and the HTTP server's, in the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use keel_node::NodeMetrics;

/// The upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Latency {
    /// Per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

/// Counters of the HTTP server. Labels come from the matched route
/// pattern (never the raw path), so their number is bounded.
#[derive(Default)]
pub struct HttpMetrics {
    inner: Mutex<HttpInner>,
}

#[derive(Default)]
struct HttpInner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Latency>,
}

impl HttpMetrics {
    /// Records one answered request.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let latency = inner
            .latency
            .entry((route.to_string(), method.to_string()))
            .or_default();
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        latency.buckets[bucket] += 1;
        latency.sum_seconds += seconds;
        latency.count += 1;
    }
}

/// Renders every metric.
pub fn render(node: &NodeMetrics, http: &HttpMetrics) -> String {
    let mut text = String::new();
    let gauges: [(&str, &str, &str, u64); 8] = [
        (
            "keel_proposals_total",
            "counter",
            "Writes proposed through this node.",
            node.proposals_total,
        ),
        (
            "keel_readies_total",
            "counter",
            "Raft Ready batches handled.",
            node.readies_total,
        ),
        (
            "keel_messages_sent_total",
            "counter",
            "Messages handed to the transport.",
            node.messages_sent_total,
        ),
        (
            "keel_applied_index",
            "gauge",
            "The highest index applied.",
            node.applied_index,
        ),
        (
            "keel_commit_index",
            "gauge",
            "The highest index known committed.",
            node.commit_index,
        ),
        (
            "keel_last_index",
            "gauge",
            "The last index of the log.",
            node.last_index,
        ),
        ("keel_term", "gauge", "The current term.", node.term),
        (
            "keel_is_leader",
            "gauge",
            "1 if this node leads.",
            u64::from(node.is_leader),
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    let inner = http.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let name = "keel_kv_http_requests_total";
    let _ = writeln!(
        text,
        "# HELP {name} HTTP requests answered.\n# TYPE {name} counter"
    );
    for ((route, method, status), count) in &inner.requests {
        let _ = writeln!(
            text,
            "{name}{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
        );
    }
    let name = "keel_kv_http_request_duration_seconds";
    let _ = writeln!(
        text,
        "# HELP {name} HTTP request latency.\n# TYPE {name} histogram"
    );
    for ((route, method), latency) in &inner.latency {
        let labels = format!("route=\"{route}\",method=\"{method}\"");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(latency.buckets.iter()) {
            cumulative += count;
            let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(text, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", latency.count);
        let _ = writeln!(text, "{name}_sum{{{labels}}} {}", latency.sum_seconds);
        let _ = writeln!(text, "{name}_count{{{labels}}} {}", latency.count);
    }
    text
}
