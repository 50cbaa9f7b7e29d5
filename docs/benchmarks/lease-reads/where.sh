#!/usr/bin/env bash
# Lease reads at C clients of `chorus bench` (native client) on a fresh `chorus up --lease-reads`,
# with every client on the leader (WHERE=leader), on one follower (WHERE=follower) or spread over
# the three nodes (WHERE=all, as `chorus bench compare` does); prints the bench line and the CPU
# seconds each node and the generator used over 4 s of the run (from /proc, per thread kind).
# WL=write measures writes instead, and LEASE= starts the cluster without lease reads.
# usage: BIN=target/release/chorus WHERE=all C=64 DUR=6s PORT=7600 [WL=read] [LEASE=--lease-reads] bash where.sh
set -u
BIN=${BIN:?}; C=${C:-64}; PORT=${PORT:-7600}; DUR=${DUR:-6s}; WHERE=${WHERE:-all}; WL=${WL:-read}; LEASE=${LEASE---lease-reads}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/leasewhere.XXXX)
"$BIN" up --data-dir "$dir/data" --base-port "$PORT" $LEASE > "$dir/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; sleep 1; rm -rf "$dir"' EXIT
leader=$(PORT=$PORT bash "$(dirname "$0")/../leader.sh")
[ -n "$leader" ] || { echo "no leader"; exit 1; }
eps="127.0.0.1:$((PORT+101)),127.0.0.1:$((PORT+102)),127.0.0.1:$((PORT+103))"
"$BIN" bench --endpoints "$eps" --clients 16 --workload write --duration 2s --no-progress > /dev/null 2>&1
follower=$(( leader % 3 + 1 ))
case "$WHERE" in
  leader) eps="127.0.0.1:$((PORT+100+leader))" ;;
  follower) eps="127.0.0.1:$((PORT+100+follower))" ;;
esac
pids=$(pgrep -f "server --config $dir" | tr '\n' ' ')
( sleep 3; python3 "$here/cpu.py" 4 $pids $(pgrep -f "bench --endpoints $eps" | head -1) > "$dir/cpu.out" ) &
cpu=$!
"$BIN" bench --endpoints "$eps" --clients "$C" --workload "$WL" --duration "$DUR" --warmup 1s --no-progress 2>&1 | tail -1
wait $cpu
echo "where=$WHERE leader=$leader load=$(cut -d' ' -f1 /proc/loadavg)"
cat "$dir/cpu.out"
