#!/usr/bin/env bash
# CPU time, syscalls and context switches per committed write, measured with perf stat on the
# three node processes of a fresh `chorus up` while redis-benchmark writes to the leader.
# usage: BIN=target/release/chorus N=100000 C=50 P=1 PORT=7600 bash cost.sh
set -u
BIN=${BIN:?}; N=${N:-100000}; C=${C:-50}; P=${P:-1}; D=${D:-100}; PORT=${PORT:-7600}
dir=$(mktemp -d /tmp/costrun.XXXX)
"$BIN" up --data-dir "$dir/data" --base-port "$PORT" > "$dir/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; sleep 1; rm -rf "$dir"' EXIT
leader=$(PORT=$PORT bash "$(dirname "$0")/../leader.sh")
[ -n "$leader" ] || { echo "no leader"; cat "$dir/up.log"; exit 1; }
pids=$(pgrep -f "server --config $dir" | paste -sd,)
redis-benchmark -p $((PORT+100+leader)) -t set -c "$C" -d "$D" -P "$P" -n 20000 -q > /dev/null 2>&1
load=$(cut -d' ' -f1 /proc/loadavg)
out=$(perf stat -x, -e task-clock,raw_syscalls:sys_enter,context-switches -p "$pids" -- redis-benchmark -p $((PORT+100+leader)) -t set -c "$C" -d "$D" -P "$P" -n "$N" -q 2>&1)
rps=$(echo "$out" | grep -o 'SET: [0-9][0-9.]*' | tail -1 | awk '{print $2}')
clock=$(echo "$out" | grep task-clock | cut -d, -f1)
sys=$(echo "$out" | grep raw_syscalls | cut -d, -f1)
cs=$(echo "$out" | grep context-switches | cut -d, -f1)
python3 -c "
n=$N; print(f'load={float(\"$load\"):.2f} rps={float(\"$rps\"):.0f} cpu_us/write={float(\"$clock\")*1000/n:.1f} syscalls/write={float(\"$sys\")/n:.2f} ctxsw/write={float(\"$cs\")/n:.2f}')" 2>&1 || echo "$out" | tail -5
