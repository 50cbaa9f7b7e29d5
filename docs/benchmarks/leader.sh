#!/usr/bin/env bash
# Prints the id of the node that leads a fresh `chorus up` on base port PORT (it asks each
# node's /status, at PORT+201..203), waiting up to 20 s; prints nothing if none leads by then.
# usage: PORT=7600 bash leader.sh
set -u
PORT=${PORT:-7600}
for _ in $(seq 1 100); do
  sleep 0.2
  for id in 1 2 3; do
    role=$(curl -s --max-time 0.5 "http://127.0.0.1:$((PORT+200+id))/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])' 2>/dev/null)
    if [ "$role" = leader ]; then echo "$id"; exit 0; fi
  done
done
