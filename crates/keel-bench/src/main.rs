//! `keel-bench`: keel side by side with raft-rs and etcd. See the crate
//! documentation of `keel_bench` and BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keel_bench::cluster::Binaries;
use keel_bench::machine::Machine;
use keel_bench::report::Table;
use keel_bench::workloads::{self, Sizes};

#[derive(Parser, Debug)]
#[command(
    name = "keel-bench",
    about = "Benchmarks keel against its peers in the same run and prints tables of ratios"
)]
struct Arguments {
    #[command(subcommand)]
    workload: Workload,
    /// Tiny sizes that finish in seconds (what CI runs); the figures mean nothing.
    #[arg(long, global = true)]
    smoke: bool,
    /// Directory for disk measurements and cluster data (default: the system temporary directory).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Also write results.md (machine + tables) and the SVG plots into this directory.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// The keel-kv binary (default: next to this binary, else on PATH).
    #[arg(long, global = true)]
    keel_kv: Option<PathBuf>,
    /// The etcd binary (default: on PATH).
    #[arg(long, global = true)]
    etcd: Option<PathBuf>,
    /// Size of the log whose recovery is timed, in MiB (default 1024; smoke 1).
    #[arg(long, global = true)]
    recovery_mib: Option<u64>,
    /// Drop the page cache before the recovery open (needs root).
    #[arg(long, global = true)]
    drop_caches: bool,
    /// Entry size for the storage workload, in bytes.
    #[arg(long, global = true, default_value_t = 1024)]
    storage_entry_bytes: usize,
    /// Measured seconds per core run (default 1).
    #[arg(long, global = true)]
    core_seconds: Option<f64>,
    /// Runs per core configuration; the median is reported (default 3).
    #[arg(long, global = true)]
    repeats: Option<usize>,
    /// Measured seconds per end-to-end point (default 5).
    #[arg(long, global = true)]
    load_seconds: Option<f64>,
    /// How long the follower is paused in the memory workload, in seconds (default 30).
    #[arg(long, global = true)]
    pause_seconds: Option<f64>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Every workload, in order.
    All,
    /// 1: core throughput, 3 nodes, against raft-rs.
    Core,
    /// 2: 5 and 7 nodes, 16 KiB entries, against raft-rs.
    Scaling,
    /// 3: keel-log append + fdatasync against the raw disk; recovery time.
    Storage,
    /// 4: keel-kv against etcd over HTTP.
    EndToEnd,
    /// 5: time to the first write after kill -9 of the leader.
    Failover,
    /// 6: leader memory while a follower is paused.
    Memory,
}

fn sizes(arguments: &Arguments) -> Sizes {
    let directory = arguments.dir.clone().unwrap_or_else(workloads::default_directory);
    let binaries = Binaries::find(arguments.keel_kv.clone(), arguments.etcd.clone());
    let mut sizes = if arguments.smoke {
        Sizes::smoke(directory, binaries)
    } else {
        Sizes::full(directory, binaries)
    };
    if let Some(mib) = arguments.recovery_mib {
        sizes.recovery_bytes = mib << 20;
    }
    sizes.recovery_cold = arguments.drop_caches;
    if let Some(seconds) = arguments.core_seconds {
        sizes.core_duration = Duration::from_secs_f64(seconds);
    }
    if let Some(repeats) = arguments.repeats {
        sizes.core_repeats = repeats;
    }
    if let Some(seconds) = arguments.load_seconds {
        sizes.load_duration = Duration::from_secs_f64(seconds);
    }
    if let Some(seconds) = arguments.pause_seconds {
        sizes.pause = Duration::from_secs_f64(seconds);
    }
    sizes
}

fn run(
    workload: Workload,
    arguments: &Arguments,
    sizes: &Sizes,
    tables: &mut Vec<Table>,
) -> Result<(), String> {
    let wants = |which: Workload| workload == Workload::All || workload == which;
    let mut emit = |table: Table| {
        println!("{}", table.to_markdown());
        tables.push(table);
    };
    if wants(Workload::Core) {
        emit(workloads::core_throughput(sizes));
    }
    if wants(Workload::Scaling) {
        emit(workloads::scaling(sizes));
    }
    if wants(Workload::Storage) {
        let (append, recovery) = workloads::storage(sizes, arguments.storage_entry_bytes)
            .map_err(|error| format!("storage: {error}"))?;
        emit(append);
        emit(recovery);
    }
    if wants(Workload::EndToEnd) {
        let (table, points) = workloads::end_to_end(sizes)?;
        emit(table);
        if let Some(out) = &arguments.out {
            keel_bench::plot::end_to_end(&points, out)?;
        }
    }
    if wants(Workload::Failover) {
        emit(workloads::failover(sizes)?);
    }
    if wants(Workload::Memory) {
        emit(workloads::memory(sizes)?);
    }
    Ok(())
}

fn main() {
    let arguments = Arguments::parse();
    let sizes = sizes(&arguments);
    if let Err(error) = workloads::check_directory(&sizes.directory) {
        eprintln!(
            "keel-bench: cannot write to {}: {error}",
            sizes.directory.display()
        );
        std::process::exit(2);
    }
    let fsync_duration = if arguments.smoke {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(2)
    };
    let machine = match Machine::describe(&sizes.directory, fsync_duration) {
        Ok(machine) => machine,
        Err(error) => {
            eprintln!("keel-bench: measuring the disk: {error}");
            std::process::exit(2);
        }
    };
    println!("## Machine\n\n{}", machine.to_markdown());
    if arguments.smoke {
        println!("(smoke mode: tiny sizes, the figures mean nothing)\n");
    }
    let mut tables = Vec::new();
    let outcome = run(arguments.workload, &arguments, &sizes, &mut tables);
    if let Some(out) = &arguments.out {
        let mut text = format!("## Machine\n\n{}\n", machine.to_markdown());
        for table in &tables {
            text.push_str(&table.to_markdown());
            text.push('\n');
        }
        let written =
            std::fs::create_dir_all(out).and_then(|()| std::fs::write(out.join("results.md"), text));
        if let Err(error) = written {
            eprintln!("keel-bench: writing {}: {error}", out.display());
        }
    }
    println!(
        "load average at the end (1/5/15 min): {}",
        keel_bench::machine::load_average()
    );
    if let Err(error) = outcome {
        eprintln!("keel-bench: {error}");
        std::process::exit(1);
    }
}
