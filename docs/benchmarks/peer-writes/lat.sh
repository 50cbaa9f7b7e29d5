#!/usr/bin/env bash
# Throughput and p50 of redis-benchmark SETs on the leader of a fresh `chorus up`.
# usage: BIN=target/release/chorus N=5000 C=1 P=1 PORT=7600 bash lat.sh
set -u
BIN=${BIN:?}; N=${N:-100000}; C=${C:-50}; P=${P:-1}; D=${D:-100}; PORT=${PORT:-7600}
dir=$(mktemp -d /tmp/costrun.XXXX)
"$BIN" up --data-dir "$dir/data" --base-port "$PORT" > "$dir/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; sleep 1; rm -rf "$dir"' EXIT
leader=$(PORT=$PORT bash "$(dirname "$0")/../leader.sh")
[ -n "$leader" ] || { echo "no leader"; cat "$dir/up.log"; exit 1; }
pids=$(pgrep -f "server --config $dir" | paste -sd,)
redis-benchmark -p $((PORT+100+leader)) -t set -c "$C" -d "$D" -P "$P" -n $((N / 5)) -q > /dev/null 2>&1
load=$(cut -d' ' -f1 /proc/loadavg)
out=$(redis-benchmark -p $((PORT+100+leader)) -t set -c "$C" -d "$D" -P "$P" -n "$N" -q 2>&1)
rps=$(echo "$out" | grep -o 'SET: [0-9][0-9.]*' | tail -1 | awk '{print $2}')
p50=$(echo "$out" | grep -o 'p50=[0-9.]*' | tail -1)
echo "load=$load rps=$rps $p50 leader=$leader"
