//! The six workloads, each turned into a [`Table`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::{Binaries, Cluster};
use crate::core::{compare, CoreParams};
use crate::load::{self, LoadParams, LoadResult, Protocol};
use crate::report::{rate, ratio, Table};
use crate::storage;

/// How big each workload is.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Measured time of one core run.
    pub core_duration: Duration,
    /// Runs per core configuration (the median is reported).
    pub core_repeats: usize,
    /// Measured time of each append batch size and of the raw rate.
    pub storage_duration: Duration,
    /// Size of the log whose recovery is timed.
    pub recovery_bytes: u64,
    /// Drop the page cache before the recovery open (needs root).
    pub recovery_cold: bool,
    /// Client counts of the end-to-end runs.
    pub clients: Vec<usize>,
    /// Measured time of one end-to-end point.
    pub load_duration: Duration,
    /// Warm-up before each end-to-end point.
    pub load_warmup: Duration,
    /// Failover runs per system.
    pub failover_runs: usize,
    /// How long the follower is paused in workload 6.
    pub pause: Duration,
    /// Where disks are measured and clusters keep their data.
    pub directory: PathBuf,
    /// The server binaries.
    pub binaries: Binaries,
}

impl Sizes {
    /// The sizes the issue asks for.
    pub fn full(directory: PathBuf, binaries: Binaries) -> Sizes {
        Sizes {
            core_duration: Duration::from_secs(1),
            core_repeats: 3,
            storage_duration: Duration::from_secs(3),
            recovery_bytes: 1 << 30,
            recovery_cold: false,
            clients: vec![1, 16, 64, 256],
            load_duration: Duration::from_secs(5),
            load_warmup: Duration::from_secs(1),
            failover_runs: 3,
            pause: Duration::from_secs(30),
            directory,
            binaries,
        }
    }

    /// Tiny sizes that finish in seconds: for CI, to keep every workload
    /// compiling and working. The figures mean nothing.
    pub fn smoke(directory: PathBuf, binaries: Binaries) -> Sizes {
        Sizes {
            core_duration: Duration::from_millis(20),
            core_repeats: 1,
            storage_duration: Duration::from_millis(20),
            recovery_bytes: 1 << 20,
            recovery_cold: false,
            clients: vec![1, 4],
            load_duration: Duration::from_millis(300),
            load_warmup: Duration::from_millis(100),
            failover_runs: 1,
            pause: Duration::from_secs(1),
            directory,
            binaries,
        }
    }
}

const CORE_HEADERS: &[&str] = &[
    "configuration",
    "raft-rs, N × propose() entries/s",
    "raft-rs entries/s",
    "keel entries/s",
    "ratio",
    "raft-rs CPU ns/entry",
    "keel CPU ns/entry",
    "CPU ratio (raft-rs/keel)",
];

fn core_row(table: &mut Table, label: String, params: CoreParams, sizes: &Sizes) {
    let comparison = compare(params, sizes.core_repeats);
    let (raft_rs, keel) = (comparison.raft_rs, comparison.keel);
    table.row(vec![
        label,
        comparison
            .raft_rs_each_entry
            .map_or_else(|| "(same)".to_string(), |each| rate(each.entries_per_second())),
        rate(raft_rs.entries_per_second()),
        rate(keel.entries_per_second()),
        format!("{:.2}×", comparison.throughput_ratio),
        format!("{:.0}", raft_rs.cpu_nanos_per_entry()),
        format!("{:.0}", keel.cpu_nanos_per_entry()),
        format!("{:.2}×", comparison.cpu_ratio),
    ]);
}

fn core_notes(table: &mut Table, sizes: &Sizes) {
    table.note(format!(
        "One thread; messages passed in memory; {} runs of {:?} each, alternating raft-rs and keel. Entries/s and \
         CPU ns/entry are each library's median run; the ratios are the median over back-to-back pairs (raft-rs \
         run, keel run) of the pair's ratio. Entries/s counts entries applied by the leader per second of wall \
         time; CPU is process user+system time (getrusage). keel gets each batch through `propose_batch`; \
         raft-rs through one `MsgPropose` carrying the whole batch, stepped into its public `raft` field (what \
         `RawNode::propose` does for one entry) — its fastest way, and the one the ratios use. The \
         \"N × propose()\" column is raft-rs driven through `RawNode::propose` once per entry, for reference. \
         Goal: keel ≥ 2× raft-rs at every batch size.",
        sizes.core_repeats, sizes.core_duration
    ));
}

/// Workload 1: 3 nodes, 128-byte proposals, batches of 1, 16, 256.
pub fn core_throughput(sizes: &Sizes) -> Table {
    let mut table = Table::new(
        "1. Core throughput: 3 nodes, 128-byte entries, no IO",
        CORE_HEADERS,
    );
    for batch in [1, 16, 256] {
        let params = CoreParams {
            nodes: 3,
            entry_bytes: 128,
            batch,
            duration: sizes.core_duration,
        };
        core_row(&mut table, format!("batch {batch}"), params, sizes);
    }
    core_notes(&mut table, sizes);
    table
}

/// Workload 2: the same with 3, 5 and 7 nodes, and with 16 KiB entries.
pub fn scaling(sizes: &Sizes) -> Table {
    let mut table = Table::new("2. Scaling: cluster size and entry size, no IO", CORE_HEADERS);
    for (nodes, entry_bytes) in [(3u64, 128usize), (5, 128), (7, 128), (3, 16 << 10)] {
        for batch in [1, 16, 256] {
            let params = CoreParams {
                nodes,
                entry_bytes,
                batch,
                duration: sizes.core_duration,
            };
            let size = if entry_bytes >= 1024 {
                format!("{} KiB", entry_bytes >> 10)
            } else {
                format!("{entry_bytes} B")
            };
            core_row(
                &mut table,
                format!("{nodes} nodes, {size}, batch {batch}"),
                params,
                sizes,
            );
        }
    }
    core_notes(&mut table, sizes);
    table.note(
        "The 3-node 128 B rows repeat workload 1 so that the growth with cluster size reads within one table.",
    );
    table
}

/// Workload 3: keel-log append + fdatasync against the raw disk, and
/// recovery time.
pub fn storage(sizes: &Sizes, entry_bytes: usize) -> Result<(Table, Table), Box<dyn std::error::Error>> {
    let directory = tempfile::tempdir_in(&sizes.directory)?;
    let mut append = Table::new(
        format!("3a. Storage: keel-log append + fdatasync, {entry_bytes}-byte entries"),
        &[
            "what",
            "syncs/s (raw)",
            "syncs/s (keel-log)",
            "ratio",
            "entries/s",
            "MiB/s",
            "p50 µs",
            "p99 µs",
        ],
    );
    let comparisons = storage::append_against_raw(
        directory.path(),
        &[1, 16, 256],
        entry_bytes,
        sizes.storage_duration,
    )?;
    let mib_per_second =
        |timed: &crate::machine::Timed| timed.bytes as f64 / f64::from(1 << 20) / timed.elapsed.as_secs_f64();
    for mut comparison in comparisons {
        let batch = comparison.batch_entries;
        let raw_rate = comparison.raw.per_second();
        let log_rate = comparison.log.per_second();
        append.row(vec![
            "raw 4 KiB write + fdatasync (alternating with the next row)".to_string(),
            rate(raw_rate),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
            format!("{:.1}", mib_per_second(&comparison.raw)),
            format!("{:.0}", comparison.raw.quantile_micros(0.5)),
            format!("{:.0}", comparison.raw.quantile_micros(0.99)),
        ]);
        append.row(vec![
            format!("keel-log, batch of {batch}"),
            rate(raw_rate),
            rate(log_rate),
            ratio(log_rate, raw_rate),
            rate(log_rate * batch as f64),
            format!("{:.1}", mib_per_second(&comparison.log)),
            format!("{:.0}", comparison.log.quantile_micros(0.5)),
            format!("{:.0}", comparison.log.quantile_micros(0.99)),
        ]);
    }
    append.note(format!(
        "Same directory ({}), same run, {:?} per row, in 250 ms slices alternating raw and keel-log so that other \
         load on the disk falls on both. One `LogStore::write` = one fdatasync; the raw rows are the disk's ceiling \
         for one sync at a time.",
        sizes.directory.display(),
        sizes.storage_duration
    ));

    let recovered = storage::recovery(
        directory.path(),
        sizes.recovery_bytes,
        entry_bytes,
        sizes.recovery_cold,
    )?;
    let mut recovery = Table::new(
        "3b. Storage: recovery (LogStore::open replays and checks every record)",
        &[
            "log",
            "entries",
            "segments",
            "write s",
            "open s",
            "MiB/s",
            "µs/entry",
            "page cache",
        ],
    );
    let mib = recovered.bytes_on_disk as f64 / f64::from(1 << 20);
    recovery.row(vec![
        format!("{mib:.0} MiB"),
        rate(recovered.entries as f64),
        recovered.segments.to_string(),
        format!("{:.2}", recovered.write.as_secs_f64()),
        format!("{:.3}", recovered.open.as_secs_f64()),
        format!("{:.0}", mib / recovered.open.as_secs_f64()),
        format!(
            "{:.3}",
            recovered.open.as_secs_f64() * 1e6 / recovered.entries as f64
        ),
        if recovered.cold_cache { "dropped" } else { "warm" }.to_string(),
    ]);
    recovery.note(
        "No peer: this is keel-log against the disk. Written in batches of 256 entries, one fdatasync each.",
    );
    Ok((append, recovery))
}

/// One end-to-end point of both systems.
#[derive(Debug)]
pub struct EndToEndPoint {
    /// Clients.
    pub clients: usize,
    /// Percentage of reads.
    pub read_percent: u32,
    /// etcd's result, if etcd was measured.
    pub etcd: Option<LoadResult>,
    /// keel-kv's result, if keel-kv was measured.
    pub keel: Option<LoadResult>,
}

fn available(sizes: &Sizes, protocol: Protocol) -> bool {
    match protocol {
        Protocol::KeelKv => sizes.binaries.keel_kv.is_some(),
        Protocol::Etcd => sizes.binaries.etcd.is_some(),
    }
}

/// Measurements of the server processes: a system whose binary is missing,
/// or that failed once (it would not start, no write got through), is not
/// measured again in this workload, and the table says why.
#[derive(Default)]
struct Attempts {
    failed: Vec<Protocol>,
    notes: Vec<String>,
}

impl Attempts {
    /// Runs `measure` for `protocol` unless its binary is missing or it failed before.
    fn run<T>(
        &mut self,
        sizes: &Sizes,
        protocol: Protocol,
        measure: impl FnOnce() -> Result<T, String>,
    ) -> Option<T> {
        if !available(sizes, protocol) || self.failed.contains(&protocol) {
            return None;
        }
        match measure() {
            Ok(value) => Some(value),
            Err(error) => {
                self.failed.push(protocol);
                self.notes
                    .push(format!("not measured: {}: {error}", name(protocol)));
                None
            }
        }
    }

    fn note_into(self, table: &mut Table) {
        for note in self.notes {
            table.note(note);
        }
    }
}

fn name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Etcd => "etcd",
        Protocol::KeelKv => "keel-kv",
    }
}

fn cell<T>(value: Option<&T>, show: impl Fn(&T) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

fn missing(sizes: &Sizes) -> Option<String> {
    let mut missing = Vec::new();
    if sizes.binaries.keel_kv.is_none() {
        missing.push("keel-kv (build it: cargo build --release -p keel-kv)");
    }
    if sizes.binaries.etcd.is_none() {
        missing.push("etcd (apt-get install etcd-server, or scripts/bench.sh)");
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!("not measured: binary not found: {}", missing.join(", ")))
    }
}

fn start(protocol: Protocol, sizes: &Sizes) -> Result<Cluster, String> {
    match protocol {
        Protocol::KeelKv => Cluster::start_keel_kv(
            sizes.binaries.keel_kv.as_deref().ok_or("no keel-kv binary")?,
            &sizes.directory,
        ),
        Protocol::Etcd => Cluster::start_etcd(
            sizes.binaries.etcd.as_deref().ok_or("no etcd binary")?,
            &sizes.directory,
        ),
    }
}

fn load_point(
    protocol: Protocol,
    sizes: &Sizes,
    clients: usize,
    read_percent: u32,
) -> Result<LoadResult, String> {
    // A fresh cluster per point: neither system carries the previous
    // point's log, compaction debt or page cache into the next.
    let cluster = start(protocol, sizes)?;
    let params = LoadParams {
        clients,
        read_percent,
        value_bytes: 256,
        duration: sizes.load_duration,
        warmup: sizes.load_warmup,
    };
    let result = load::run(protocol, &cluster.live_addresses(), &params);
    drop(cluster);
    Ok(result)
}

/// Workload 4: keel-kv against etcd over HTTP, writes only and 90% reads.
pub fn end_to_end(sizes: &Sizes) -> Result<(Table, Vec<EndToEndPoint>), String> {
    let mut table = Table::new(
        "4. End to end: 3 members on loopback, durable, 256-byte values",
        &[
            "clients, mix",
            "etcd req/s",
            "keel-kv req/s",
            "ratio",
            "etcd p50 ms",
            "keel-kv p50 ms",
            "etcd p99 ms",
            "keel-kv p99 ms",
            "errors etcd/keel-kv",
        ],
    );
    let mut points = Vec::new();
    if let Some(reason) = missing(sizes) {
        table.note(reason);
        if !available(sizes, Protocol::Etcd) && !available(sizes, Protocol::KeelKv) {
            return Ok((table, points));
        }
    }
    let mut attempts = Attempts::default();
    for read_percent in [0u32, 90] {
        for &clients in &sizes.clients {
            let etcd = attempts.run(sizes, Protocol::Etcd, || {
                load_point(Protocol::Etcd, sizes, clients, read_percent)
            });
            let keel = attempts.run(sizes, Protocol::KeelKv, || {
                load_point(Protocol::KeelKv, sizes, clients, read_percent)
            });
            let mix = if read_percent == 0 {
                "writes".to_string()
            } else {
                format!("{read_percent}% reads")
            };
            let per_second = |result: &LoadResult| rate(result.requests_per_second());
            let p50 = |result: &LoadResult| format!("{:.2}", result.latency_ms(0.5));
            let p99 = |result: &LoadResult| format!("{:.2}", result.latency_ms(0.99));
            let errors = |result: &LoadResult| result.errors.to_string();
            table.row(vec![
                format!("{clients}, {mix}"),
                cell(etcd.as_ref(), per_second),
                cell(keel.as_ref(), per_second),
                ratio(
                    keel.as_ref().map_or(f64::NAN, LoadResult::requests_per_second),
                    etcd.as_ref().map_or(0.0, LoadResult::requests_per_second),
                ),
                cell(etcd.as_ref(), p50),
                cell(keel.as_ref(), p50),
                cell(etcd.as_ref(), p99),
                cell(keel.as_ref(), p99),
                format!("{}/{}", cell(etcd.as_ref(), errors), cell(keel.as_ref(), errors)),
            ]);
            points.push(EndToEndPoint {
                clients,
                read_percent,
                etcd,
                keel,
            });
        }
    }
    table.note(format!(
        "Same load generator for both (keel-bench's HTTP/1.1 keep-alive client, one connection per client, one request \
         in flight each, clients spread evenly over the 3 members); a fresh cluster per point; {:?} warm-up then {:?} \
         measured. keel-kv: PUT/GET /v1/kv/{{key}} (linearizable reads); etcd {}: POST /v3/kv/put and /v3/kv/range \
         (linearizable reads) on its JSON gateway, default durability. 10 000 keys. Goal: keel-kv ≥ 2× etcd writes/s \
         at 64 clients with a lower p99.",
        sizes.load_warmup,
        sizes.load_duration,
        etcd_version(sizes)
    ));
    attempts.note_into(&mut table);
    Ok((table, points))
}

fn etcd_version(sizes: &Sizes) -> String {
    sizes
        .binaries
        .etcd
        .as_ref()
        .and_then(|etcd| std::process::Command::new(etcd).arg("--version").output().ok())
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(|line| line.trim_start_matches("etcd Version:").trim().to_string())
        })
        .unwrap_or_default()
}

/// Starts a new write every [`PROBE_INTERVAL`], each on a new connection,
/// alternating over `addresses`, until one is acknowledged; returns when the
/// first was (or `None` after `timeout`). A write stuck at a dead leader does
/// not hold back the next probe: the figure is when the cluster first
/// accepted a write, not when some client gave up waiting.
fn first_successful_write(
    protocol: Protocol,
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Option<Instant> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let deadline = Instant::now() + timeout;
        let (acknowledged, mut first) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut interval = tokio::time::interval(PROBE_INTERVAL);
        let mut probe = 0u64;
        while Instant::now() < deadline {
            tokio::select! {
                at = first.recv() => return at,
                _ = interval.tick() => {
                    let address = addresses[probe as usize % addresses.len()];
                    let acknowledged = acknowledged.clone();
                    probe += 1;
                    tokio::spawn(async move {
                        let mut connection = crate::http::Connection::new(address);
                        if protocol.write(&mut connection, probe % load::KEY_SPACE, b"failover").await {
                            let _ = acknowledged.send(Instant::now());
                        }
                    });
                }
            }
        }
        None
    })
}

/// How often [`first_successful_write`] starts a probe.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Background load on a cluster while something is done to it.
fn with_background_load<T>(
    protocol: Protocol,
    addresses: Vec<SocketAddr>,
    clients: usize,
    duration: Duration,
    action: impl FnOnce() -> T,
) -> (T, LoadResult) {
    let params = LoadParams {
        clients,
        read_percent: 0,
        value_bytes: 256,
        duration,
        warmup: Duration::ZERO,
    };
    let load = std::thread::spawn(move || load::run(protocol, &addresses, &params));
    let outcome = action();
    let result = load.join().expect("load thread");
    (outcome, result)
}

/// Workload 5: kill -9 the leader under load; time to the first successful
/// write, at each system's default election timeout (1000 ms for both).
pub fn failover(sizes: &Sizes) -> Result<Table, String> {
    let mut table = Table::new(
        "5. Failover: kill -9 of the leader under load, time to the first successful write",
        &["run", "etcd ms", "keel-kv ms", "ratio (etcd/keel-kv)"],
    );
    if let Some(reason) = missing(sizes) {
        table.note(reason);
        if !available(sizes, Protocol::Etcd) && !available(sizes, Protocol::KeelKv) {
            return Ok(table);
        }
    }
    let mut attempts = Attempts::default();
    for run in 1..=sizes.failover_runs {
        let etcd = attempts.run(sizes, Protocol::Etcd, || failover_once(Protocol::Etcd, sizes));
        let keel = attempts.run(sizes, Protocol::KeelKv, || failover_once(Protocol::KeelKv, sizes));
        let millis = |time: &Duration| format!("{:.0}", time.as_secs_f64() * 1e3);
        table.row(vec![
            run.to_string(),
            cell(etcd.as_ref(), millis),
            cell(keel.as_ref(), millis),
            ratio(
                etcd.map_or(f64::NAN, |time| time.as_secs_f64()),
                keel.map_or(0.0, |time| time.as_secs_f64()),
            ),
        ]);
    }
    table.note(
        "16 writing clients run throughout. The clock starts when SIGKILL is sent to the leader and stops at the first \
         write acknowledged by a surviving member (a new probe write, on a new connection, starts every 10 ms, alternating over the survivors). Default election \
         timeouts: etcd 1000 ms (heartbeat 100 ms), keel-kv 1000 ms (heartbeat 100 ms).",
    );
    attempts.note_into(&mut table);
    Ok(table)
}

fn failover_once(protocol: Protocol, sizes: &Sizes) -> Result<Duration, String> {
    let mut cluster = start(protocol, sizes)?;
    let leader = cluster.leader().ok_or("no leader")?;
    let addresses = cluster.live_addresses();
    let survivors: Vec<SocketAddr> = cluster
        .members
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != leader)
        .map(|(_, member)| member.client_address)
        .collect();
    let settle = Duration::from_secs(1);
    let timeout = Duration::from_secs(30);
    let (outcome, _load) = with_background_load(
        protocol,
        addresses,
        16,
        settle + timeout.min(Duration::from_secs(5)),
        || {
            std::thread::sleep(settle);
            let killed_at = Instant::now();
            cluster.kill(leader);
            first_successful_write(protocol, &survivors, timeout).map(|at| at - killed_at)
        },
    );
    drop(cluster);
    outcome
        .ok_or_else(|| format!("{protocol:?}: no write succeeded within {timeout:?} of the leader's death"))
}

/// Workload 6: pause a follower (SIGSTOP) under write load; the leader's
/// resident memory before, during and after.
pub fn memory(sizes: &Sizes) -> Result<Table, String> {
    let mut table = Table::new(
        format!(
            "6. Leader memory while a follower is paused (SIGSTOP) for {:?} under write load",
            sizes.pause
        ),
        &[
            "system",
            "RSS before MiB",
            "RSS max while paused MiB",
            "growth MiB",
            "RSS after resume MiB",
            "writes/s (whole run)",
        ],
    );
    if let Some(reason) = missing(sizes) {
        table.note(reason);
    }
    let mut attempts = Attempts::default();
    for protocol in [Protocol::Etcd, Protocol::KeelKv] {
        let Some(sample) = attempts.run(sizes, protocol, || memory_once(protocol, sizes)) else {
            continue;
        };
        let mib = |bytes: u64| format!("{:.1}", bytes as f64 / f64::from(1 << 20));
        table.row(vec![
            match protocol {
                Protocol::Etcd => "etcd".to_string(),
                Protocol::KeelKv => "keel-kv".to_string(),
            },
            mib(sample.before),
            mib(sample.max_paused),
            mib(sample.max_paused.saturating_sub(sample.before)),
            mib(sample.after),
            rate(sample.writes_per_second),
        ]);
    }
    table.note(
        "64 writing clients (256-byte values) throughout; RSS is VmRSS sampled every 100 ms. keel-kv's leader bounds \
         what it holds per follower by its flow-control settings (keel's defaults: 256 messages and 32 MiB \
         in flight per follower, 64 MiB uncommitted); with one follower paused the other keeps the quorum, so writes continue and the paused \
         follower's window stays full.",
    );
    attempts.note_into(&mut table);
    Ok(table)
}

struct MemorySample {
    before: u64,
    max_paused: u64,
    after: u64,
    writes_per_second: f64,
}

fn memory_once(protocol: Protocol, sizes: &Sizes) -> Result<MemorySample, String> {
    let cluster = start(protocol, sizes)?;
    let leader = cluster.leader().ok_or("no leader")?;
    let follower = (leader + 1) % cluster.members.len();
    let addresses: Vec<SocketAddr> = cluster
        .members
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != follower)
        .map(|(_, member)| member.client_address)
        .collect();
    let settle = Duration::from_secs(2).min(sizes.pause);
    let total = settle + sizes.pause + settle;
    let (samples, load) = with_background_load(protocol, addresses, 64, total, || {
        std::thread::sleep(settle);
        let before = cluster.resident_bytes(leader).unwrap_or(0);
        cluster.pause(follower, true)?;
        let paused_at = Instant::now();
        let mut max_paused = before;
        while paused_at.elapsed() < sizes.pause {
            std::thread::sleep(Duration::from_millis(100));
            max_paused = max_paused.max(cluster.resident_bytes(leader).unwrap_or(0));
        }
        cluster.pause(follower, false)?;
        std::thread::sleep(settle);
        let after = cluster.resident_bytes(leader).unwrap_or(0);
        Ok::<_, String>((before, max_paused, after))
    });
    let (before, max_paused, after) = samples?;
    drop(cluster);
    Ok(MemorySample {
        before,
        max_paused,
        after,
        writes_per_second: load.writes as f64 / total.as_secs_f64(),
    })
}

/// The directory the benchmarks write to by default: the system's temporary
/// directory.
pub fn default_directory() -> PathBuf {
    std::env::temp_dir()
}

/// Checks that `directory` exists and is writable.
pub fn check_directory(directory: &Path) -> std::io::Result<()> {
    tempfile::tempfile_in(directory).map(|_| ())
}
