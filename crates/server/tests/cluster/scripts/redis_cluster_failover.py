"""redis-py's RedisCluster client across a failover of a Chorus cluster.

Usage: redis_cluster_failover.py PORT [PORT ...]

Connects a RedisCluster client (redis-py's default retry policy: it retries a command on a
connection error and refreshes its slot table from the other nodes), writes `a`, prints
`ready`, and waits for a line on stdin (the test kills the master meanwhile). Then it writes
`b` with the same client object, retrying for up to 20 s on any error (SET is idempotent, so
a retried SET is harmless), and prints the values of `a` and `b` and the number of tries.
"""

import sys
import time

from redis.cluster import ClusterNode, RedisCluster

ports = [int(port) for port in sys.argv[1:]]
client = RedisCluster(
    startup_nodes=[ClusterNode("127.0.0.1", port) for port in ports],
    protocol=2,
    socket_timeout=2,
)
assert client.set("a", "1")
print("ready", flush=True)
sys.stdin.readline()
tries = 0
deadline = time.monotonic() + 20
while True:
    tries += 1
    try:
        assert client.set("b", "2")
        break
    except Exception as error:  # noqa: BLE001 - any failure is retried until the deadline
        if time.monotonic() > deadline:
            print(f"gave up after {tries} tries: {error!r}", flush=True)
            sys.exit(1)
        time.sleep(0.2)
print(f"a={client.get('a').decode()} b={client.get('b').decode()} tries={tries}", flush=True)
