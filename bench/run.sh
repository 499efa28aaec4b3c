#!/usr/bin/env bash
# Measures parlo-server with parlo-bench on this machine: lookups at several connection
# counts, then registration churn. Builds both release binaries, starts the server on a
# free 127.0.0.x port with a database in a temporary directory, runs the load generator
# against it with --server-pid (server RSS and CPU per run), and stops the server.
#
# Usage: bench/run.sh            (from the repository root or anywhere)
# Settings, from the environment:
#   CONNS="1 100 1000 10000"   lookup runs, one per connection count
#   HOLD_CONNS="10000" HOLD_ACTIVE=100   lookup runs where only HOLD_ACTIVE of the
#                              connections look up and the rest hold registrations
#   CHURN_CONNS="100"          churn runs, one per connection count ("" for none)
#   CONNECT_CONNS="100"        connect runs (a new connection + PING, over and over), one
#                              per connection count ("" for none)
#   NOISE=1                    also run every run over Noise (the server's key from
#                              `parlo-server id`), after its plain JSON twin; 0: plain only
#   DURATION=10 WARMUP=2       seconds measured, seconds of warm-up, per run
#   THREADS=1                  load-generator threads
#   BIND=""                    local addresses to connect from, e.g. 127.0.0.2,127.0.0.3
#   SERVER_ARGS=""             extra parlo-server options, e.g. "--log-level warn"
#   NO_BUILD=1                 use the binaries already in target/release
#   SERVER_BIN=PATH            measure another server binary taking --listen and --db
#   RESULTS=FILE               where to keep the reports [default: bench-results.txt]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
conns=${CONNS-"1 100 1000 10000"}
hold_conns=${HOLD_CONNS-"10000"}
hold_active=${HOLD_ACTIVE:-100}
churn_conns=${CHURN_CONNS-"100"}
connect_conns=${CONNECT_CONNS-"100"}
noise=${NOISE:-1}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
threads=${THREADS:-1}
bind=${BIND:-}
server_args=${SERVER_ARGS-}
results=${RESULTS:-bench-results.txt}

if [[ -z ${NO_BUILD:-} ]]; then
    (cd "$root" && cargo build --release -p parlo-server -p parlo-bench)
fi
server_bin=${SERVER_BIN:-$root/target/release/parlo-server}
bench_bin=$root/target/release/parlo-bench

# Both programs hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)"

# The load comes from one address (or the few of BIND): lift the server's per-address
# limit, when it has one, so that it counts every connection of the run as a phone.
if "$server_bin" --help | grep -q -- --max-per-address; then
    server_args="--max-per-address 0 $server_args"
fi

addr_base=127.0.0
tmp=$(mktemp -d)
# A server with an identity keeps it beside the database; one without speaks no Noise.
if "$server_bin" --help | grep -q -- --identity; then
    server_args="--identity $tmp/identity $server_args"
else
    noise=0
fi
server_pid=
stop_server() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        local status=0
        wait "$server_pid" || status=$?
        echo "parlo-server stopped with exit status $status"
    fi
    server_pid=
}
trap 'stop_server; rm -rf "$tmp"' EXIT

# A free 127.0.0.x:port: try random ones until the server keeps running and accepts.
for attempt in 1 2 3 4 5 6 7 8; do
    addr=$addr_base.$((RANDOM % 200 + 20))
    port=$((20000 + RANDOM % 30000))
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of options.
    "$server_bin" --listen "$addr:$port" --db "$tmp/directory.db" $server_args \
        2>"$tmp/server.log" &
    server_pid=$!
    for _ in $(seq 50); do
        if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
        if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then break 2; fi
        sleep 0.1
    done
    status=0
    wait "$server_pid" 2>/dev/null || status=$?
    echo "parlo-server did not start on $addr:$port (exit status $status):" >&2
    tail -n 5 "$tmp/server.log" >&2
    server_pid=
    if [[ $attempt == 8 ]]; then exit 2; fi
done
echo "parlo-server pid $server_pid listening on $addr:$port (options: $server_args)"
key=
if [[ $noise == 1 ]]; then
    # The server makes its identity once its database is open: wait for it.
    for _ in $(seq 50); do [[ -s $tmp/identity ]] && break; sleep 0.1; done
    key=$("$server_bin" id --identity "$tmp/identity" | awk '/^key /{print $2}')
    echo "server key $key"
fi

: >"$results"
run() {
    run_once "$1" "$2" "${3:-$2}"
    if [[ -n $key ]]; then run_once "$1" "$2" "${3:-$2}" noise; fi
}
run_once() {
    local mode=$1 c=$2 active=${3:-$2} encrypted=${4:-}
    local extra=(--active "$active") tag=plain
    if [[ -n $bind ]]; then
        extra+=(--bind "$bind")
    elif [[ $mode == connect ]]; then
        # Thousands of new connections a second: more source addresses than one's ~28,000
        # ephemeral ports, which TIME_WAIT holds for a minute.
        extra+=(--bind "$addr_base.2,$addr_base.3,$addr_base.4,$addr_base.5,$addr_base.6,$addr_base.7")
    fi
    if [[ -n $encrypted ]]; then
        extra+=(--noise "$key")
        tag=noise
    fi
    # Let the server finish closing the previous run's connections first.
    sleep 2
    echo
    "$bench_bin" --server "$addr:$port" --server-pid "$server_pid" --mode "$mode" \
        --connections "$c" --threads "$threads" --duration "$duration" --warmup "$warmup" \
        --prefix "$mode$c-$active-$tag-" "${extra[@]}" | tee -a "$results" || true
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "parlo-server died during the run; its last log lines:" >&2
        tail -n 20 "$tmp/server.log" >&2
        exit 2
    fi
}
for c in $conns; do run lookup "$c"; done
for c in $hold_conns; do run lookup "$c" "$hold_active"; done
for c in $churn_conns; do run churn "$c"; done
for c in $connect_conns; do run connect "$c"; done
echo
stop_server
echo "reports kept in $results"
