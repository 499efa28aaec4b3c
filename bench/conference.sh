#!/usr/bin/env bash
# Conference benchmarks: CPU, memory and media bandwidth of each phone in a two-party call
# and in conferences of 3, 5 and 8 members, and mouth-to-ear latency between two members
# of a 5-member conference. Builds the release binaries and runs
# bench/examples/conference.rs, which starts its own directory server and phones on
# loopback and stops them all.
#
# Usage: bench/conference.sh [OPTIONS]   (options of the example: bench/conference.sh --help)
#   e.g. bench/conference.sh --only conf-5 --seconds 30
# RESULTS=FILE   also append the report there [default: target/conference-results.txt]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
results=${RESULTS:-target/conference-results.txt}
cd "$root"
cargo build --release --quiet -p parlo-client -p parlo-server
cargo build --release --quiet -p parlo-bench --example conference
{
    echo "# bench/conference.sh $* on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
    target/release/examples/conference "$@"
} | tee -a "$results"
