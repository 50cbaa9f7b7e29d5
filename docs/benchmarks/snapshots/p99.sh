#!/usr/bin/env bash
# Write latency with and without a snapshot being written, on a large state: a local
# three-node cluster (`chorus up`, release build, default settings) is loaded with about a
# million keys of 100 bytes, then `chorus bench` writes at a fixed rate twice for the same
# time: once with no snapshot due (the log since the last snapshot is far smaller than the
# snapshot, so none is taken), once with `POST /snapshot` forcing one on every node three
# seconds in.
#
# Usage: [SNAP_NODES="1 2 3"] docs/benchmarks/snapshots/p99.sh [path/to/chorus] [base-port] [rate]
# SNAP_NODES names the nodes told to snapshot (default: all three, which on one machine
# means three snapshot writers share its cores at once).
set -euo pipefail

CHORUS=${1:-target/release/chorus}
BASE=${2:-18000}
RATE=${3:-5000}
SNAP_NODES=${SNAP_NODES:-1 2 3}
RESP=$((BASE + 101))
ADMIN="127.0.0.1:$((BASE + 201)),127.0.0.1:$((BASE + 202)),127.0.0.1:$((BASE + 203))"
ENDPOINTS="127.0.0.1:$((BASE + 101)),127.0.0.1:$((BASE + 102)),127.0.0.1:$((BASE + 103))"
DIR=$(mktemp -d /tmp/chorus-p99-XXXXXX)

"$CHORUS" up --data-dir "$DIR/data" --base-port "$BASE" >"$DIR/up.log" 2>&1 &
UP_PID=$!
cleanup() {
    for id in 1 2 3; do
        pid=$(pgrep -f -- "--config $DIR/data/node-$id.toml" | head -1 || true)
        if [[ -n "$pid" ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    kill -9 "$UP_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
for _ in $(seq 300); do
    [[ "$(timeout 1 redis-cli -p "$RESP" SET probe 1 2>/dev/null)" == "OK" ]] && break
    sleep 0.1
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
redis-benchmark -p "$RESP" -t set -n 3000000 -r 1000000 -d 100 -c 50 -P 16 -q | tr '\r' '\n' | grep 'requests per second'
# Settle: a snapshot now on every node, and time for it and the load's own to finish, so that
# neither measured phase crosses the automatic threshold (100,000 entries) by itself (without
# this, an automatic snapshot fell into the "no snapshot" phase in about half the runs).
for id in 1 2 3; do curl -s -X POST "http://127.0.0.1:$((BASE + 200 + id))/snapshot" >/dev/null; done
sleep 20
"$CHORUS" status --endpoints "$ADMIN"
bench() {
    "$CHORUS" bench --target chorus --endpoints "$ENDPOINTS" --clients 16 --workload write \
        --keys 1000000 --value-size 100 --rate "$RATE" --duration 12s --warmup 2s --no-progress \
        --label "$1"
}
echo "== no snapshot"
bench no-snapshot
echo "== a snapshot on node(s) $SNAP_NODES, forced 3 s in"
(sleep 3 && for id in $SNAP_NODES; do curl -s -X POST "http://127.0.0.1:$((BASE + 200 + id))/snapshot"; done) &
SNAP=$!
bench snapshot
wait "$SNAP"
grep -h "took a snapshot" "$DIR"/data/*.log | tail -3
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
