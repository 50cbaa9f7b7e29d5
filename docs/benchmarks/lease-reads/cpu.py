"""CPU seconds each process's threads used over a window, summed by thread kind.

usage: python3 cpu.py SECONDS PID...   (utime + stime from /proc/PID/task/*/stat)
"""
import os
import sys
import time

window = float(sys.argv[1])
pids = sys.argv[2:]


def sample():
    ticks = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                stat = open(f"/proc/{pid}/task/{task}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")].rstrip("0123456789-")
            fields = stat[stat.rindex(")") + 2:].split()
            key = (pid, name)
            ticks[key] = ticks.get(key, 0) + int(fields[11]) + int(fields[12])
    return ticks


before = sample()
time.sleep(window)
after = sample()
hz = os.sysconf("SC_CLK_TCK")
total = 0.0
for key in sorted(after):
    used = (after[key] - before.get(key, 0)) / hz
    total += used
    if used > 0.01:
        print(f"pid {key[0]} {key[1]}: {used:.2f} s")
print(f"total: {total:.2f} s over {window:g} s")
