"""redis-py's default retry policy against a Chorus node whose replies get lost.

Usage: redis_py_retry.py PORT bound|unbound

Runs a TCP proxy in front of the Chorus RESP port PORT that forwards everything, except that
every third reply to a write (an INCR's integer reply, or a transaction's EXEC array) is
dropped: the proxy closes both sides of the connection instead of forwarding it. So the write
was applied, and the client sees "Connection closed by server".

A client made with redis-py's defaults (redis.Redis(): Retry(ExponentialWithJitterBackoff(
base=0.01, cap=1), retries=10) on ConnectionError and TimeoutError, which reconnects and
resends the command; a pipeline is resent whole) runs 60 INCRs of `n` and 30 transactions
(`r.pipeline()`, MULTI/EXEC by default) each `INCR t` and `RPUSH log <i>`, through the proxy.
With `bound` the client is made with client_name="chorus-session:<uuid>", which redis-py
sends (CLIENT SETNAME) on every connect; with `unbound` it has no name.

Prints one JSON line: the retry policy in force, the INCR replies, the transactions' replies,
the final `n`, `t` and `log` read directly (not through the proxy), and how many replies the
proxy dropped.
"""

import json
import socket
import sys
import threading
import uuid

import redis

port = int(sys.argv[1])
bound = sys.argv[2] == "bound"

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
proxy_port = listener.getsockname()[1]
lock = threading.Lock()
counts = {"writes": 0, "dropped": 0}


def is_write_reply(chunk):
    # INCR answers an integer; EXEC of the two-command transaction an array of two.
    return chunk.startswith(b":") or b"*2\r\n" in chunk


def forward(source, sink, replies):
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            if replies and is_write_reply(chunk):
                with lock:
                    counts["writes"] += 1
                    drop = counts["writes"] % 3 == 0
                    if drop:
                        counts["dropped"] += 1
                if drop:
                    break
            sink.sendall(chunk)
    except OSError:
        pass
    for end in (source, sink):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()


def accept():
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=forward, args=(client, server, False), daemon=True).start()
        threading.Thread(target=forward, args=(server, client, True), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()

name = "chorus-session:" + uuid.uuid4().hex if bound else None
client = redis.Redis(host="127.0.0.1", port=proxy_port, protocol=2, client_name=name)
retry = client.get_retry()
policy = "%s retries=%d backoff=%s on %s" % (
    type(retry).__name__,
    retry.get_retries(),
    type(retry._backoff).__name__,
    ",".join(sorted(error.__name__ for error in retry._supported_errors)),
)

incr_replies = [client.incr("n") for _ in range(60)]
transaction_replies = []
for i in range(30):
    pipe = client.pipeline()  # transaction=True: MULTI ... EXEC
    pipe.incr("t")
    pipe.rpush("log", i)
    transaction_replies.append(pipe.execute())

direct = redis.Redis(host="127.0.0.1", port=port, protocol=2, decode_responses=True)
print(
    json.dumps(
        {
            "policy": policy,
            "incr": incr_replies,
            "transactions": transaction_replies,
            "n": int(direct.get("n")),
            "t": int(direct.get("t")),
            "log": [int(item) for item in direct.lrange("log", 0, -1)],
            "dropped": counts["dropped"],
        }
    ),
    flush=True,
)
