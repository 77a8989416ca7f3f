//! What the machine is, so that every table says where it was measured.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

/// Process CPU time so far (user + system, all threads).
pub fn cpu_time() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let user = usage.user_time();
            let system = usage.system_time();
            let micros = |time: nix::sys::time::TimeVal| {
                Duration::from_secs(time.tv_sec().max(0) as u64)
                    + Duration::from_micros(time.tv_usec().max(0) as u64)
            };
            micros(user) + micros(system)
        }
        Err(_) => Duration::ZERO,
    }
}

/// The machine a run happened on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// The 1/5/15-minute load averages when the run started.
    pub load_average: String,
    /// The raw rate of "write 4 KiB, fdatasync" in the benchmark directory.
    pub fdatasync_per_second: f64,
    /// The directory that rate was measured in.
    pub directory: String,
}

impl Machine {
    /// Describes this machine, measuring the raw fdatasync rate of `directory`
    /// for `fsync_duration`.
    pub fn describe(directory: &Path, fsync_duration: Duration) -> std::io::Result<Machine> {
        let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split(':').nth(1))
                    .map(|name| name.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let load_average = load_average();
        let raw = raw_fdatasync(directory, fsync_duration)?;
        Ok(Machine {
            cores,
            cpu_model,
            kernel,
            load_average,
            fdatasync_per_second: raw.per_second(),
            directory: directory.display().to_string(),
        })
    }

    /// The machine as a short Markdown list.
    pub fn to_markdown(&self) -> String {
        format!(
            "- cores: {} ({})\n- kernel: {}\n- load average at start (1/5/15 min): {}\n- raw 4 KiB write + fdatasync in {}: {:.0}/s\n",
            self.cores,
            self.cpu_model,
            self.kernel,
            self.load_average,
            self.directory,
            self.fdatasync_per_second
        )
    }
}

/// The 1/5/15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Operations timed one by one.
#[derive(Clone, Debug, Default)]
pub struct Timed {
    /// Operations done.
    pub operations: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time of the whole loop.
    pub elapsed: Duration,
    /// Each operation's latency, in nanoseconds.
    pub latencies_nanos: Vec<u64>,
}

impl Timed {
    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at `quantile` (0.0–1.0), in microseconds.
    pub fn quantile_micros(&mut self, quantile: f64) -> f64 {
        if self.latencies_nanos.is_empty() {
            return 0.0;
        }
        self.latencies_nanos.sort_unstable();
        let position = ((self.latencies_nanos.len() as f64 - 1.0) * quantile).round() as usize;
        self.latencies_nanos[position] as f64 / 1e3
    }
}

/// Writes 4 KiB and calls `fdatasync`, in a loop, for `duration` (at least
/// one round): the ceiling for any durable log on this disk.
pub fn raw_fdatasync(directory: &Path, duration: Duration) -> std::io::Result<Timed> {
    let path = directory.join(format!("raw-fdatasync-{}", std::process::id()));
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5Au8; 4096];
    let mut timed = Timed::default();
    let started = Instant::now();
    loop {
        let one = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        timed.latencies_nanos.push(one.elapsed().as_nanos() as u64);
        timed.operations += 1;
        timed.bytes += block.len() as u64;
        if started.elapsed() >= duration {
            break;
        }
    }
    timed.elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(timed)
}
