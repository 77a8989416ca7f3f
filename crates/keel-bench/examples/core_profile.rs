//! Runs only one side of the core benchmark, for profiling under
//! `valgrind --tool=callgrind` (which counts instructions; this machine has
//! no hardware counters).
//!
//! ```sh
//! cargo build --release -p keel-bench --example core_profile
//! valgrind --tool=callgrind target/release/examples/core_profile keel 256 0.5
//! # arguments: library, batch, seconds, entry bytes (128), nodes (3)
//! ```

use std::time::Duration;

use keel_bench::core::{run_keel, run_raft_rs, CoreParams, RaftRsPropose};

fn main() {
    let mut arguments = std::env::args().skip(1);
    let library = arguments.next().unwrap_or_else(|| "keel".to_string());
    let batch: usize = arguments
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(256);
    let seconds: f64 = arguments
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0);
    let entry_bytes: usize = arguments
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(128);
    let nodes: u64 = arguments.next().and_then(|value| value.parse().ok()).unwrap_or(3);
    let params = CoreParams {
        nodes,
        entry_bytes,
        batch,
        duration: Duration::from_secs_f64(seconds),
    };
    let result = match library.as_str() {
        "keel" => run_keel(params),
        "raft-rs" => run_raft_rs(params, RaftRsPropose::OneMessage),
        other => panic!("unknown library {other:?}: keel or raft-rs"),
    };
    println!(
        "{library} batch {batch}: {} entries, {:.0} entries/s, {:.0} CPU ns/entry",
        result.entries,
        result.entries_per_second(),
        result.cpu_nanos_per_entry()
    );
}
