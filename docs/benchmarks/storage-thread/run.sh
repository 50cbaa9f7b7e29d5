#!/usr/bin/env bash
# Interleaved before/after: one-client and 64-client writes, chorus bench, 3-node local cluster.
# Put the two release binaries in $BENCH_DIR (default /tmp/bench) as chorus-before and
# chorus-after, then run this on a quiet machine.
set -u
BEFORE=${BENCH_DIR:-/tmp/bench}/chorus-before
AFTER=${BENCH_DIR:-/tmp/bench}/chorus-after
EP=127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103
for round in 1 2 3; do
  for which in before after; do
    bin=$BEFORE; [ $which = after ] && bin=$AFTER
    dir=${BENCH_DIR:-/tmp/bench}/data-$which-$round
    rm -rf "$dir"
    "$bin" up --data-dir "$dir" --base-port 27000 > "$dir.up.log" 2>&1 &
    up=$!
    sleep 4
    for clients in 1 64; do
      echo "== round $round $which clients=$clients load: $(cut -d' ' -f1-3 /proc/loadavg)"
      "$bin" bench --endpoints $EP --clients $clients --duration 8s --warmup 2s --workload write 2>&1 | grep -E "^chorus " | tail -1
    done
    kill -INT $up; wait $up 2>/dev/null
    rm -rf "$dir"
  done
done
