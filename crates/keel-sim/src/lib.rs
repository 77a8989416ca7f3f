//! # keel-sim
//!
//! Deterministic simulation of whole keel clusters under faults, in the
//! manner of FoundationDB and TigerBeetle: one seed drives a simulated
//! clock, network, disk and set of clients around real [`keel::RawNode`]s,
//! every safety property is checked after every step, and a failing seed
//! replays exactly.
//!
//! ```
//! use keel_sim::{run, SimOptions};
//! let mut options = SimOptions::new(42);
//! options.steps = 300;
//! let report = run(&options).expect("seed 42 passes");
//! assert_eq!(report.seed, 42);
//! // The same seed gives the same trace.
//! assert_eq!(run(&options).unwrap().trace_hash, report.trace_hash);
//! ```
//!
//! The pieces:
//! - [`sim`]: the run — phases, steps, faults, workloads, per-step checks,
//!   liveness (one module per job).
//! - `node`, `runtime`, `applier`: a simulated process, the runtime loop
//!   around its `RawNode` (the `Ready` loop, its disk and applier queues),
//!   and its state machine side.
//! - [`clock`]: per-node clocks with their own rate and phase.
//! - [`storage::SimStorage`]: a disk that loses unsynced writes on a crash,
//!   may tear the last one, and can fail an fsync.
//! - [`network`]: loss, delay, duplication, reordering, cut links.
//! - [`forge`]: forged messages with terms and indexes beyond keel's limits.
//! - [`kv`]: the replicated key-value state machine and command encoding.
//! - [`checker`]: election safety, no double vote, log matching, committed
//!   entries never change, state machine safety.
//! - [`linearizability`]: a Wing–Gong/Lowe checker with memoization.
//! - [`budget`]: the bounds on every loop that runs until quiet.
//!
//! See `crates/keel-sim/README.md` for soaks, replays and the fault list.

#![warn(clippy::unwrap_used)]

mod applier;
pub mod budget;
pub mod checker;
pub mod clock;
pub mod faults;
pub mod forge;
pub mod history;
pub mod kv;
pub mod linearizability;
pub mod network;
mod node;
pub mod rng;
mod runtime;
pub mod sim;
pub mod storage;
pub mod trace;
mod world;

pub use checker::{Property, Violation};
pub use faults::{Fault, FaultSet};
pub use sim::{check_determinism, run, Failure, RunReport, Shape, SimOptions};
pub use storage::SimStorage;
pub use world::Stats;
