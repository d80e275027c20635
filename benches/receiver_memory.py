#!/usr/bin/env python3
"""Peak resident memory of `span-sessions serve` under concurrent large requests.

Usage: python3 benches/receiver_memory.py target/release/span-sessions THREADS [REQUESTS] [--gzip-bomb]

Starts the receiver on a fresh store (--max-body-bytes 20 MiB), sends REQUESTS
(default 4) protobuf requests at once, each of 40,000 spans with 20 small
integer attributes (8.2 MiB, decoding into about ten times that), and prints
the statuses and the receiver's VmHWM. Run it with MALLOC_ARENA_MAX=1 to see
the live memory without glibc's per-thread arenas (README, "serve").

With --gzip-bomb each request is instead about 20 KB of gzip that unpacks to
just under the body limit (spaces, so decoding fails at once with 400):
RELIABILITY item 19, e.g. `... span-sessions 1 64 --gzip-bomb`.
"""
import gzip
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def delimited(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def integer(num, v):
    return varint(num << 3) + varint(v)


def body(n_spans, seed):
    """An ExportTraceServiceRequest: one resource, one scope, n spans."""
    kv = delimited(1, b"k") + delimited(2, integer(3, 1))  # key, AnyValue.int_value
    attrs = delimited(9, kv) * 20
    spans = bytearray()
    for i in range(n_spans):
        trace_id = (seed * 10_000_000 + i + 1).to_bytes(16, "big")
        span_id = (i + 1).to_bytes(8, "big")
        spans += delimited(2, delimited(1, trace_id) + delimited(2, span_id) + delimited(5, b"s") + attrs)
    return delimited(1, delimited(2, bytes(spans)))


def peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024
    return None


def main():
    bomb = "--gzip-bomb" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--gzip-bomb"]
    binary, threads = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 4
    store = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [binary, "--store", store + "/s", "serve", "--listen", "127.0.0.1:0",
         "--threads", threads, "--max-body-bytes", str(20 << 20)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = re.search(r"http://([^/]+)/", proc.stdout.readline()).group(1)
    if bomb:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        bodies = [gzip.compress(b" " * ((20 << 20) - 4096), 9)] * n
    else:
        headers = {"Content-Type": "application/x-protobuf"}
        bodies = [body(40_000, s) for s in range(n)]
    print("body MiB", round(len(bodies[0]) / 2**20, 1), "start peak MiB", peak_mib(proc.pid))
    statuses = []

    def send(b):
        req = urllib.request.Request(f"http://{addr}/v1/traces", data=b,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                statuses.append(r.status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)

    threads_ = [threading.Thread(target=send, args=(b,)) for b in bodies]
    started = time.time()
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    print("statuses", statuses, "in", round(time.time() - started, 1), "s; peak MiB", peak_mib(proc.pid))
    proc.terminate()
    proc.wait()


if __name__ == "__main__":
    main()
