#!/usr/bin/env python3
"""Server CPU per 1,000 snapshots, with a connection per snapshot and with
keep-alive, and wrk on /snapshot: the figures in docs/BENCHMARKS.md.

    python3 bench/keepalive.py NAME=BIN [NAME=BIN ...] > OUT.jsonl

Each server runs pinned to CPU 0 (taskset), with one 640x480 JPEG written to
its stdin, which is then left open: nothing else runs in it, so its CPU time
is what the requests cost. The client (this script, or wrk) runs on CPU 1.

Snapshot runs: REQUESTS (20000) sequential GET /snapshot requests, each
variant RUNS (5) times. The variants are interleaved run by run, and the
servers' order is reversed every other run, so that a change in the
machine's load, or what one run leaves behind, falls on all of them alike.
CPU is the server's utime + stime from /proc/PID/stat (all its threads, in
clock ticks) and, to the nanosecond, its loop thread's run time from
/proc/PID/schedstat, both read before and after the requests. Variants:

- close: a new connection per request (`Connection: close`), read to the
  server's end, as every client was served before keep-alive;
- keep-alive: one connection, a request at a time; when a reply says
  `Connection: close` (the 100th), a new connection, as a client must;
- pipelined: as keep-alive, with DEPTH (10) requests in flight.

A server that closes after every reply gets only `close`.

wrk runs, in the same rounds: `wrk -t1 -c10 -d10s
http://127.0.0.1:PORT/snapshot` (WRK_SECONDS); wrk keeps connections alive
by default, so against a server that closes it reconnects for every
request. The server's CPU over the run is reported as a share of one core.
For a server that keeps connections, wrk is also run with
`-H 'Connection: close'`.

Last, unless SYSCALLS is 0, each variant once more with `perf stat`
counting the server's system calls (tracepoints, which do not slow it the
way strace does), for SYSCALLS (20000) requests: the system calls a
snapshot costs, by name.

Each line of output is one run, as JSON; a summary of medians goes to stderr.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REQUESTS = int(os.environ.get("REQUESTS", "20000"))
RUNS = int(os.environ.get("RUNS", "5"))
DEPTH = int(os.environ.get("DEPTH", "10"))
WRK_SECONDS = int(os.environ.get("WRK_SECONDS", "10"))
SYSCALLS = int(os.environ.get("SYSCALLS", "20000"))
TRACED = ["accept4", "recvfrom", "writev", "epoll_wait", "epoll_ctl", "shutdown", "close",
          "setsockopt", "ioctl", "getsockopt"]
HZ = os.sysconf("SC_CLK_TCK")

REQUEST = b"GET /snapshot HTTP/1.1\r\nHost: bench\r\n\r\n"
REQUEST_CLOSE = b"GET /snapshot HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg():
    path = os.path.join(tempfile.mkdtemp(), "snapshot.jpg")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x480",
         "-frames:v", "1", "-q:v", "5", "-f", "mjpeg", path],
        check=True,
    )
    with open(path, "rb") as f:
        return f.read()


def cpu(pid):
    """(utime + stime in seconds, the main thread's run time in seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    with open(f"/proc/{pid}/schedstat") as f:
        run_ns = int(f.read().split()[0])
    return ticks / HZ, run_ns / 1e9


class Conn:
    """A connection read one response at a time, by `Content-Length`."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def fill(self):
        chunk = self.s.recv(262144)
        if not chunk:
            raise EOFError("the connection ended in a response")
        self.buf += chunk

    def response(self):
        """The next response's head (its body is read and dropped)."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self.fill()
        end += 4
        head = bytes(self.buf[:end])
        length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))
        while len(self.buf) < end + length:
            self.fill()
        del self.buf[: end + length]
        return head

    def to_end(self):
        """Everything until the server closes, with what is buffered."""
        while chunk := self.s.recv(262144):
            self.buf += chunk
        return bytes(self.buf)

    def close(self):
        self.s.close()


def run_close(port, n):
    """n requests, each on a new connection read to its end."""
    size = None
    for _ in range(n):
        c = Conn(port)
        c.s.sendall(REQUEST_CLOSE)
        got = len(c.to_end())
        c.close()
        if size is not None and got != size:
            raise RuntimeError(f"read {got} bytes, then {size}")
        size = got
    return n


def run_kept(port, n, depth):
    """n requests with up to `depth` in flight on a connection, a new
    connection whenever a reply says close. Returns the connections made."""
    c = Conn(port)
    connects = 1
    sent = done = 0
    while done < n:
        while sent - done < depth and sent < n:
            c.s.sendall(REQUEST)
            sent += 1
        head = c.response()
        done += 1
        if b"\r\nConnection: keep-alive\r\n" not in head and done < n:
            # The last reply on this connection: the requests sent after it
            # are not answered, so they go again on a new one.
            c.close()
            c = Conn(port)
            connects += 1
            sent = done
    c.close()
    return connects


def keeps_alive(port):
    c = Conn(port)
    c.s.sendall(REQUEST)
    head = c.response()
    c.close()
    return b"\r\nConnection: keep-alive\r\n" in head


def start(binary, frame):
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", binary, "-p", str(port), "--bind", "127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    proc.stdin.write(frame)
    proc.stdin.flush()
    deadline = time.monotonic() + 15
    while True:
        try:
            c = Conn(port)
            c.s.sendall(REQUEST_CLOSE)
            head = c.response()
            c.close()
            if head.startswith(b"HTTP/1.1 200"):
                break
        except (OSError, EOFError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{binary} did not serve the snapshot")
        time.sleep(0.05)
    return proc, port


def wrk(port, pid, extra):
    before = cpu(pid)
    start_time = time.monotonic()
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c10", f"-d{WRK_SECONDS}s", "--latency", *extra,
         f"http://127.0.0.1:{port}/snapshot"],
        check=True, capture_output=True, text=True,
    ).stdout
    wall = time.monotonic() - start_time
    after = cpu(pid)

    def ms(value):
        number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "wrk_requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "latency_p50_ms": ms(percentiles["50"]),
        "latency_p99_ms": ms(percentiles["99"]),
        "socket_errors": [int(x) for x in errors.groups()] if errors else [0, 0, 0, 0],
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_cpu_percent": 100 * (after[0] - before[0]) / wall,
        "server_loop_cpu_percent": 100 * (after[1] - before[1]) / wall,
    }


def syscalls(pid, work):
    """System calls by name that the server makes while `work` runs, and
    their total."""
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{name}" for name in TRACED]
    counter = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid)],
        stderr=subprocess.PIPE, text=True,
    )
    # perf says nothing when it starts counting: give it a moment.
    time.sleep(0.5)
    work()
    counter.send_signal(signal.SIGINT)
    calls = {}
    for line in counter.communicate()[1].splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            calls[fields[2].rsplit(":", 1)[1].removeprefix("sys_enter_")] = int(fields[0])
    return calls


def main():
    specs = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not specs or any(len(s) != 2 for s in specs):
        sys.exit(__doc__)
    frame = jpeg()
    servers = {}
    for name, binary in specs:
        proc, port = start(binary, frame)
        servers[name] = (proc, port, keeps_alive(port))
    meta = {
        "kernel": os.uname().release,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "?"),
        "jpeg_bytes": len(frame),
    }
    results = []
    try:
        for run in range(RUNS):
            # Each server goes first in every other run, so that what one
            # leaves behind (sockets in TIME_WAIT, a warm cache) falls on
            # both alike.
            order = list(servers.items())
            for name, (proc, port, kept) in order if run % 2 == 0 else reversed(order):
                modes = ["close"] + (["keep-alive", "pipelined"] if kept else [])
                for mode in modes:
                    before = cpu(proc.pid)
                    t = time.monotonic()
                    if mode == "close":
                        connects = run_close(port, REQUESTS)
                    else:
                        connects = run_kept(port, REQUESTS, 1 if mode == "keep-alive" else DEPTH)
                    wall = time.monotonic() - t
                    after = cpu(proc.pid)
                    row = {
                        "bench": "snapshots", "server": name, "mode": mode, "run": run,
                        "requests": REQUESTS,
                        "connections": connects,
                        "cpu_ms_per_1000": 1e6 * (after[0] - before[0]) / REQUESTS,
                        "loop_cpu_ms_per_1000": 1e6 * (after[1] - before[1]) / REQUESTS,
                        "client_requests_per_s": REQUESTS / wall,
                        **meta,
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
                wrk_modes = [("wrk", [])]
                if kept:
                    wrk_modes.append(("wrk Connection: close", ["-H", "Connection: close"]))
                for mode, extra in wrk_modes:
                    row = {"bench": "wrk", "server": name, "mode": mode, "run": run,
                           **wrk(port, proc.pid, extra), **meta}
                    results.append(row)
                    print(json.dumps(row), flush=True)
        if SYSCALLS:
            for name, (proc, port, kept) in servers.items():
                modes = ["close"] + (["keep-alive", "pipelined"] if kept else [])
                for mode in modes:
                    if mode == "close":
                        work = lambda: run_close(port, SYSCALLS)
                    else:
                        depth = 1 if mode == "keep-alive" else DEPTH
                        work = lambda: run_kept(port, SYSCALLS, depth)
                    calls = syscalls(proc.pid, work)
                    total = calls.pop("sys_enter", 0)
                    row = {"bench": "syscalls", "server": name, "mode": mode,
                           "requests": SYSCALLS, "per_request": {
                               k: round(v / SYSCALLS, 3) for k, v in calls.items() if v},
                           "total_per_request": round(total / SYSCALLS, 2),
                           **meta}
                    print(json.dumps(row), flush=True)
                    print(f"{name:>8} {mode:<22} {row['total_per_request']:6.2f} system calls "
                          f"a snapshot: {row['per_request']}", file=sys.stderr)
    finally:
        for proc, *_ in servers.values():
            proc.kill()
            proc.wait()
    keys = sorted({(r["bench"], r["server"], r["mode"]) for r in results},
                  key=lambda k: (k[0], [s[0] for s in specs].index(k[1]), k[2]))
    for bench, server, mode in keys:
        rows = [r for r in results if (r["bench"], r["server"], r["mode"]) == (bench, server, mode)]
        med = lambda field: statistics.median(r[field] for r in rows)
        if bench == "snapshots":
            print(f"{server:>8} {mode:<22} cpu {med('cpu_ms_per_1000'):6.1f} ms/1000 "
                  f"(loop {med('loop_cpu_ms_per_1000'):6.1f}), client "
                  f"{med('client_requests_per_s'):7.0f} req/s", file=sys.stderr)
        else:
            print(f"{server:>8} {mode:<22} {med('requests_per_s'):8.0f} req/s, p50 "
                  f"{med('latency_p50_ms'):.3f} ms, p99 {med('latency_p99_ms'):.3f} ms, server cpu "
                  f"{med('server_cpu_percent'):.0f} %", file=sys.stderr)


if __name__ == "__main__":
    main()
