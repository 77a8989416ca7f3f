#!/usr/bin/env bash
# Runs every keel-bench workload the way BENCHMARKS.md was produced:
#   crates/keel-bench/bench.sh [OUT_DIR] [extra keel-bench arguments...]
# Installs etcd (Debian's etcd-server) when it is missing, builds keel-bench
# and keel-kv in release mode, and writes OUT_DIR/results.md plus the SVG
# plots (default OUT_DIR: crates/keel-bench/results). Run it on a quiet
# machine: the figures are only as good as the machine is idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-crates/keel-bench/results}"
shift || true

if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd (Debian etcd-server)"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
    # The package may start a system-wide etcd on 2379/2380; the benchmark
    # uses its own members on free loopback ports and does not touch it.
fi

echo "== building (release)"
cargo build --release --locked -p keel-bench
if cargo build --release --locked -p keel-kv; then
    keel_kv=(--keel-kv target/release/keel-kv)
else
    echo "keel-kv does not build: the end-to-end, failover and memory workloads will measure etcd only" >&2
    keel_kv=()
fi

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/keel-bench all --out "$out" "${keel_kv[@]}" "$@"
echo "== results in $out/results.md, plots in $out/*.svg"
