#!/usr/bin/env bash
# Call benchmarks: CPU and memory of a phone in a call, mouth-to-ear latency with an impulse
# train on the file and cpal/JACK paths (clean and through an impaired link), and quality
# under impairment (segmental SNR). Builds the release binaries and runs bench/examples/call.rs,
# which starts its own directory server, phones, JACK dummy servers and impairment link on
# loopback and stops them all.
#
# Usage: bench/call.sh [OPTIONS]   (options of the example: bench/call.sh --help)
#   e.g. bench/call.sh --only file-clean --seconds 30
# RESULTS=FILE   also append the report there [default: target/call-results.txt]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
results=${RESULTS:-target/call-results.txt}
cd "$root"
cargo build --release --quiet -p parlo-client -p parlo-server
cargo build --release --quiet -p parlo-bench --example call
{
    echo "# bench/call.sh $* on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
    target/release/examples/call "$@"
} | tee -a "$results"
