//! Test support shipped with the crate (feature `test-support`): the storage
//! conformance suite and an in-memory cluster driver used by the scenario
//! tests, the examples and the benchmarks.

#![allow(clippy::unwrap_used)]

mod cluster;
mod conformance;

pub use cluster::{ApplyBatch, Bootstrap, Cluster, ClusterOptions, Delivery};
pub use conformance::{entries, entry, run_storage_conformance};
