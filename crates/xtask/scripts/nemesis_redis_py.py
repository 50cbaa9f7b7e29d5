"""The nemesis's redis-py clients: redis-py 8, its default retry policy, session binding on.

Usage: nemesis_redis_py.py SEED CLIENTS bound|unbound HOST:PORT [HOST:PORT ...]

Runs CLIENTS threads until a line (or end of file) arrives on stdin, then prints every
operation they ran as one JSON line each, in the HISTORY.md format, with `call` and `return`
in nanoseconds since this script started. Each thread is one client: a `redis.Redis` made
with client_name="chorus-session:<unique>" (which binds its connections to one session;
redis-py re-sends the name on every reconnect) and redis-py's default retry policy
(Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), retries=10) on ConnectionError and
TimeoutError: reconnect and resend); with `unbound` (the control) the clients have no name.
Only `socket_timeout=2` and `socket_connect_timeout=1`
are set, so that a partition shows as a TimeoutError (which the policy retries) rather than
a hang.

The workload is the Rust workers' (crates/xtask/src/workload.rs): register keys
`e<epoch>r<k>` with get, put and cas (`SET k v IFEQ old`), append keys `e<epoch>a<k>` with
get and append of a suffix unique to the operation, renewed every 5 s. Every written value
is unique, so no write repeats its session's previous one. A read that raises is `fail`; a
write that raises an error reply the server gives before proposing (UNAVAILABLE, BUSY,
MOVED) or the bound-session refusal (a connection the session has left: never applied) is
`fail`; any other error is `unknown`. After any error the client moves to the next node
with a new `redis.Redis` of the same name, so its session continues there.
"""

import json
import random
import sys
import threading
import time
import uuid

import redis

START_NS = time.monotonic_ns()
EPOCH_NS = 5_000_000_000
REGISTER_KEYS = 4
APPEND_KEYS = 5
REFUSED = ("UNAVAILABLE", "BUSY", "MOVED", "this connection's session has moved")

seed = int(sys.argv[1])
clients = int(sys.argv[2])
bound = sys.argv[3] == "bound"
endpoints = [(address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1])) for address in sys.argv[4:]]
stop = threading.Event()
histories = [[] for _ in range(clients)]


def now():
    return time.monotonic_ns() - START_NS


def connect(name, index):
    host, port = endpoints[index % len(endpoints)]
    return redis.Redis(
        host=host,
        port=port,
        protocol=2,
        client_name=name,
        socket_timeout=2,
        socket_connect_timeout=1,
    )


def text(value):
    return None if value is None else value.decode("utf-8", "replace")


def refused(error):
    message = str(error)
    return any(message.startswith(kind) or kind in message for kind in REFUSED)


def worker(client):
    rng = random.Random(seed * 1_000_003 + client)
    name = "chorus-session:nemesis-%d-%d-%s" % (seed, client, uuid.uuid4().hex) if bound else None
    index = client
    connection = connect(name, index)
    seen = {}
    counter = 0
    history = histories[client]
    while not stop.is_set():
        counter += 1
        epoch = now() // EPOCH_NS
        unique = "%d.%d" % (client, counter)
        roll = rng.randrange(100)
        register = "e%dr%d" % (epoch, rng.randrange(REGISTER_KEYS))
        append = "e%da%d" % (epoch, rng.randrange(APPEND_KEYS))
        if roll < 20:
            op = {"op": "get", "key": register}
        elif roll < 40:
            op = {"op": "get", "key": append}
        elif roll < 65:
            op = {"op": "append", "key": append, "value": "[%s]" % unique}
        elif roll < 82:
            op = {"op": "put", "key": register, "value": unique}
        else:
            op = {"op": "cas", "key": register, "value": unique, "from": seen.get(register, "0")}
        op["client"] = client
        op["call"] = now()
        try:
            if op["op"] == "get":
                value = text(connection.get(op["key"]))
                op["output"] = value
                if value is not None:
                    seen[op["key"]] = value
            elif op["op"] == "put":
                connection.set(op["key"], op["value"])
            elif op["op"] == "append":
                op["output"] = int(connection.append(op["key"], op["value"]))
            else:
                reply = connection.execute_command("SET", op["key"], op["value"], "IFEQ", op["from"])
                op["output"] = reply is not None
            op["status"] = "ok"
        except Exception as error:  # every failure is classified, none ends the run
            op.pop("output", None)
            # A refusal answers the last attempt only: an earlier attempt that redis-py
            # retried may still be in flight and take effect, so a write that raised is
            # never known to have failed.
            if op["op"] == "get":
                op["status"] = "fail"
            else:
                op["status"] = "unknown"
            connection.close()
            index += 1
            connection = connect(name, index)
        op["return"] = max(now(), op["call"])
        history.append(op)
        pause = rng.randrange(2, 12) if op["status"] == "ok" else rng.randrange(50, 150)
        time.sleep(pause / 1000)
    connection.close()


threads = [threading.Thread(target=worker, args=(client,)) for client in range(clients)]
for thread in threads:
    thread.start()
sys.stdin.readline()
stop.set()
for thread in threads:
    thread.join()
for history in histories:
    for op in history:
        print(json.dumps(op))
sys.stdout.flush()
