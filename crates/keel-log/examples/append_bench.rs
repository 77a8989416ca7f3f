//! Append benchmark: throughput and latency of a batch append + fdatasync
//! at batch sizes 1, 16 and 256, next to the raw rate of the same disk
//! measured in the same run (write 4 KiB and `fdatasync`, in a loop).
//!
//! ```text
//! cargo run --release -p keel-log --example append_bench -- [--seconds 3] [--entry-bytes 1024] [--dir PATH]
//! ```

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::{Entry, EntryKind, Index, Term};
use keel_log::{LogConfig, LogStore, WriteBatch};

struct Measurement {
    operations: u64,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / self.elapsed.as_secs_f64()
    }

    fn percentile_micros(&mut self, percentile: f64) -> f64 {
        self.latencies.sort();
        let position = ((self.latencies.len() as f64 - 1.0) * percentile).round() as usize;
        self.latencies[position].as_secs_f64() * 1e6
    }
}

fn raw_fsync_rate(directory: &std::path::Path, duration: Duration) -> Measurement {
    let path = directory.join("raw");
    let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let block = vec![0x5Au8; 4096];
    let mut measurement = Measurement {
        operations: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let started = Instant::now();
    while started.elapsed() < duration {
        let one = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        measurement.latencies.push(one.elapsed());
        measurement.operations += 1;
        measurement.bytes += block.len() as u64;
    }
    measurement.elapsed = started.elapsed();
    std::fs::remove_file(path).unwrap();
    measurement
}

fn log_rate(
    directory: &std::path::Path,
    batch_entries: u64,
    entry_bytes: usize,
    duration: Duration,
) -> Measurement {
    let log_directory = directory.join(format!("log-{batch_entries}"));
    let mut store = LogStore::open(&log_directory, LogConfig::default()).unwrap();
    let data = Bytes::from(vec![0xA5u8; entry_bytes]);
    let mut batch = Vec::with_capacity(batch_entries as usize);
    let mut next = 1u64;
    let mut measurement = Measurement {
        operations: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let started = Instant::now();
    while started.elapsed() < duration {
        batch.clear();
        batch.extend(
            (next..next + batch_entries)
                .map(|index| Entry::new(Term::new(1), Index::new(index), EntryKind::Normal, data.clone())),
        );
        let one = Instant::now();
        store.write(&WriteBatch::new().with_entries(&batch)).unwrap();
        measurement.latencies.push(one.elapsed());
        next += batch_entries;
        measurement.operations += 1;
        measurement.bytes += batch_entries * entry_bytes as u64;
    }
    measurement.elapsed = started.elapsed();
    drop(store);
    std::fs::remove_dir_all(log_directory).unwrap();
    measurement
}

fn main() {
    let mut seconds = 3.0;
    let mut entry_bytes = 1024;
    let mut directory: Option<PathBuf> = None;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--seconds" => seconds = arguments.next().and_then(|value| value.parse().ok()).unwrap(),
            "--entry-bytes" => entry_bytes = arguments.next().and_then(|value| value.parse().ok()).unwrap(),
            "--dir" => directory = arguments.next().map(PathBuf::from),
            other => panic!("unknown argument {other}"),
        }
    }
    let temporary = tempfile::tempdir_in(directory.unwrap_or_else(std::env::temp_dir)).unwrap();
    let duration = Duration::from_secs_f64(seconds);
    let mut raw = raw_fsync_rate(temporary.path(), duration);
    let raw_rate = raw.per_second();
    println!("| what | syncs/s | % of raw | entries/s | MiB/s | p50 µs | p99 µs |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| raw 4 KiB write + fdatasync | {:.0} | 100 | - | {:.1} | {:.0} | {:.0} |",
        raw_rate,
        raw.mib_per_second(),
        raw.percentile_micros(0.5),
        raw.percentile_micros(0.99)
    );
    for batch_entries in [1u64, 16, 256] {
        let mut measured = log_rate(temporary.path(), batch_entries, entry_bytes, duration);
        println!(
            "| keel-log batch of {batch_entries} x {entry_bytes} B | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} |",
            measured.per_second(),
            100.0 * measured.per_second() / raw_rate,
            measured.per_second() * batch_entries as f64,
            measured.mib_per_second(),
            measured.percentile_micros(0.5),
            measured.percentile_micros(0.99)
        );
    }
}
