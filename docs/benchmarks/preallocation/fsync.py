#!/usr/bin/env python3
"""One 237-byte write plus fdatasync, N times, into a file grown three ways.

usage: python3 fsync.py MODE N PATH, with MODE one of
  append  the file grows with every write (how Chorus wrote its WAL before preallocation);
  zero    64 MiB of zeros written and synced first, then written over;
  falloc  64 MiB allocated with posix_fallocate first (what Chorus does now), then written over.
Prints p50, p90, p99 and the mean in microseconds. Run three at once (one per file) to see
three nodes' fsyncs on one disk:
  for i in 1 2 3; do python3 fsync.py falloc 2000 /tmp/f$i & done; wait
"""
import os
import statistics
import sys
import time

mode, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
record = b"x" * 237
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
size = 64 << 20
if mode == "zero":
    zeros = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        os.write(fd, zeros)
    os.fsync(fd)
elif mode == "falloc":
    os.posix_fallocate(fd, 0, size)
    os.fsync(fd)
elif mode != "append":
    sys.exit(f"unknown mode {mode}")
latencies = []
offset = 0
for _ in range(n):
    start = time.perf_counter()
    os.pwrite(fd, record, offset)
    offset += len(record)
    os.fdatasync(fd)
    latencies.append((time.perf_counter() - start) * 1e6)
os.close(fd)
os.unlink(path)
latencies.sort()
at = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))]
print(f"{mode} p50={at(0.5):.0f}us p90={at(0.9):.0f} p99={at(0.99):.0f} "
      f"mean={statistics.mean(latencies):.0f}")
