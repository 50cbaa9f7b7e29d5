#!/usr/bin/env bash
# Measures what issue 11's "done when" asks of snapshots and compaction, on a local
# three-node cluster (`chorus up`, release build, default settings):
#   - each node's RSS and data directory after 1, 2 and 3 million SETs over 10,000 keys
#     (redis-benchmark -t set -n 1000000 -r 10000 -d 100 -c 50 -P 16, three times);
#   - the time from starting the whole cluster again (all nodes killed) to the first
#     acknowledged SET, on a fresh data directory and three times after each million writes,
#     and how many log entries each node replayed on its start.
#
# Usage: docs/benchmarks/snapshots/measure.sh [path/to/chorus] [base-port]
# Needs redis-benchmark and redis-cli (apt-get install redis-tools). Writes its cluster under
# a temporary directory and removes it at the end.
set -euo pipefail

CHORUS=${1:-target/release/chorus}
BASE=${2:-17000}
RESP=$((BASE + 101))
DIR=$(mktemp -d /tmp/chorus-snapshots-XXXXXX)
UP_PID=

cleanup() {
    if [[ -n "$UP_PID" ]]; then stop_cluster; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

node_pids() {
    # The node processes `chorus up` started, by their configuration path (read-only lookup).
    for id in 1 2 3; do pgrep -f -- "--config $DIR/data/node-$id.toml" | head -1 || true; done
}

start_cluster() {
    "$CHORUS" up --data-dir "$DIR/data" --base-port "$BASE" >"$DIR/up.log" 2>&1 &
    UP_PID=$!
}

stop_cluster() {
    # Kill every node at once (SIGKILL: a crash, nothing flushed), then `chorus up`.
    local pids
    pids=$(node_pids || true)
    if [[ -n "$pids" ]]; then kill -9 $pids 2>/dev/null || true; fi
    kill -9 "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=
    for _ in $(seq 100); do
        [[ -z "$(node_pids || true)" ]] && return
        sleep 0.05
    done
}

# Starts the cluster and sets RESTART_SECONDS to the time until the first SET is acknowledged.
# (Not called in a command substitution: the subshell would lose UP_PID.)
time_to_first_write() {
    local started now
    started=$(date +%s.%N)
    start_cluster
    for _ in $(seq 3000); do
        if [[ "$(timeout 1 redis-cli -p "$RESP" SET restart-probe 1 2>/dev/null)" == "OK" ]]; then
            now=$(date +%s.%N)
            RESTART_SECONDS=$(printf '%.3f' "$(echo "$now - $started" | bc -l)")
            return
        fi
        sleep 0.01
    done
    echo "no write acknowledged within 30 s" >&2
    return 1
}

report() {
    local label=$1
    echo "== $label"
    local id=1
    for pid in $(node_pids); do
        local rss_kib du_kib
        rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        du_kib=$(du -sk "$DIR/data/node-$id" | cut -f1)
        printf 'node %d: RSS %6.1f MiB, data dir %6.1f MiB (%s)\n' "$id" \
            "$(echo "$rss_kib / 1024" | bc -l)" "$(echo "$du_kib / 1024" | bc -l)" \
            "$(find "$DIR/data/node-$id" -type f | wc -l) files"
        id=$((id + 1))
    done
    "$CHORUS" status --endpoints "127.0.0.1:$((BASE + 201)),127.0.0.1:$((BASE + 202)),127.0.0.1:$((BASE + 203))" || true
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
time_to_first_write
echo "start (empty data dir): $RESTART_SECONDS s to the first acknowledged SET"
report "empty"
for million in 1 2 3; do
    redis-benchmark -p "$RESP" -t set -n 1000000 -r 10000 -d 100 -c 50 -P 16 -q | tr '\r' '\n' | grep 'requests per second'
    sleep 2 # let the followers apply and any snapshot finish
    report "after $million million SETs"
    echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # Three whole-cluster restarts: the time includes an election, whose timeout is random.
    times=()
    for _ in 1 2 3; do
        stop_cluster
        time_to_first_write
        times+=("$RESTART_SECONDS")
        sleep 0.5
    done
    echo "restart after $million million SETs: ${times[*]} s to the first acknowledged SET"
    # What each node replayed on its last start (bounded by the snapshot interval).
    grep -h "recovered from disk" "$DIR"/data/node-*.log | tail -3 | sed 's/\x1b\[[0-9;]*m//g' \
        | grep -o 'node=[0-9]* entries=[0-9]*' | tr '\n' ' '
    echo
    sleep 1
    report "after the restart"
done
