//! keel-bench: keel measured side by side with the peers a user would pick
//! instead, in the same run on the same machine.
//!
//! The binary (`cargo run --release -p keel-bench -- all`) prints one
//! Markdown table per workload with the peer's figure, keel's figure and
//! their ratio, under a description of the machine. `BENCHMARKS.md` at the
//! repository root holds the latest results and how they were produced.
//!
//! | workload | module | peer |
//! | --- | --- | --- |
//! | 1 core throughput, 3 nodes in one process | [`core`] | raft-rs |
//! | 2 scaling: 5 and 7 nodes, 16 KiB entries | [`core`] | raft-rs |
//! | 3 storage: append + fdatasync, recovery | [`storage`] | the raw disk |
//! | 4 end to end over HTTP | [`cluster`], [`load`] | etcd |
//! | 5 failover after kill -9 of the leader | [`cluster`] | etcd |
//! | 6 leader memory with a paused follower | [`cluster`] | etcd |
//!
//! Benchmarks never assert timings: the smoke test (`tests/smoke.rs`) runs
//! every in-process workload with tiny sizes only to keep them working.

pub mod cluster;
pub mod core;
pub mod http;
pub mod load;
pub mod machine;
pub mod plot;
pub mod report;
pub mod storage;
pub mod workloads;
