#!/usr/bin/env python3
"""Runs every scenario against every server and appends one JSON line per
run to bench/out/results.jsonl. bench/run.sh calls it after the build.

Each run: the server is started pinned to CPU 0, fed by `mjpeg-probe source`
pinned to CPU 1; `mjpeg-probe watch --json` (or wrk) runs on CPU 1; the
server's CPU time (utime + stime from /proc/PID/stat) is taken at the start
and the end of the measured window, and its VmRSS is sampled through it.
Every process is bounded by a timeout and ended by its own PID.

The `relay-*` scenarios put a second instance of this server between the
first and the clients: source → this server (the origin, on ORIGIN_PORT) →
this server as a relay (`--input http://127.0.0.1:ORIGIN_PORT/video.mjpg`,
on the port the clients use) → clients. Both run on CPU 0; the figures
(latency, CPU, RSS, `--stats`) are the relay's, with the origin's CPU, its
`--stats` and its `/stats` viewer count beside them. Set beside the same
scenario without the relay (`1c-90` and `relay-1c-90`), the difference is
what one relay hop adds; the two run in turn, rep by rep.
"""

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(HERE), "target"))
PROBE = os.path.join(TARGET, "release", "mjpeg-probe")
SERVER = os.path.join(TARGET, "release", "raspivid_mjpeg_server")
FLOOR = os.path.join(OUT, "floor_relay")
FLASK = os.path.join(HERE, "peers", "flask_server.py")
# VLC's mpjpeg mux writes its own fixed delimiter: the mime must declare it.
VLC_BOUNDARY = "7b3cc56e5f51db803f790dad720ed50a"
CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVER_CPU = "0"
CLIENT_CPU = "1"

# Seconds of each watch run, and of its warm-up (not measured).
SECONDS = 12.0
WARMUP = 2.0
# Seconds a server runs on its input with no client before the clients come,
# for the idle RSS.
IDLE = 1.5
WRK_SECONDS = 15

SOURCES = {
    "640": os.path.join(OUT, "src640.mjpg"),
    "720": os.path.join(OUT, "src720.mjpg"),
}

# name, source, fps, reading clients, stalled clients, kind
SCENARIOS = [
    ("1c-90", "640", 90, 1, 0, "watch"),
    ("10c-90", "640", 90, 10, 0, "watch"),
    ("100c-90", "640", 90, 100, 0, "watch"),
    ("1000c-90", "640", 90, 1000, 0, "watch"),
    ("1000c-30", "640", 30, 1000, 0, "watch"),
    ("1c+200stalled-90", "640", 90, 1, 200, "watch"),
    ("720p-1c-25", "720", 25, 1, 0, "watch"),
    ("720p-100c-25", "720", 25, 100, 0, "watch"),
    ("relay-1c-90", "640", 90, 1, 0, "relay"),
    ("relay-100c-90", "640", 90, 100, 0, "relay"),
    ("wrk-video", "640", 30, 1000, 0, "wrk-video"),
    ("wrk-snapshot", "640", 30, 1000, 0, "wrk-snapshot"),
]


# Scenarios run --reps times (of this server, and of the floor at 1 client).
REPEATED = ("1c-90", "100c-90", "1000c-90", "1000c-30", "relay-1c-90", "relay-100c-90")

# A relay scenario's origin listens this far above the relay's port.
ORIGIN_OFFSET = 10000


def server_argv(name, port):
    """The command of each server, pinned to the server's CPU."""
    pin = ["taskset", "-c", SERVER_CPU]
    if name == "this":
        # THIS_ARGS: extra flags for this server, for an A/B of a setting.
        extra = os.environ.get("THIS_ARGS", "").split()
        return pin + [SERVER, "-p", str(port), "--bind", "127.0.0.1", "--stats", "1"] + extra
    if name == "floor":
        return pin + [FLOOR, str(port)]
    if name == "vlc":
        # VLC refuses to run as root; setpriv execs, so the PID stays VLC's.
        sout = (
            "#standard{access=http{mime=multipart/x-mixed-replace;boundary=%s},"
            "mux=mpjpeg,dst=127.0.0.1:%d/video.mjpg}" % (VLC_BOUNDARY, port)
        )
        return pin + [
            "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "env", "HOME=/tmp", "vlc", "-I", "dummy", "-q", "--play-and-exit",
            "fd://0", "--sout", sout,
        ]
    if name == "flask":
        return pin + [os.path.realpath(sys.executable), FLASK, str(port)]
    raise ValueError(name)


def applies(server, scenario):
    """The floor serves one client and nothing else; only this server relays."""
    if scenario.startswith("relay-"):
        return server == "this"
    return server != "floor" or scenario == "1c-90"


def relay_argv(port, origin_port):
    """This server relaying the origin, pinned beside it."""
    extra = os.environ.get("THIS_ARGS", "").split()
    return ["taskset", "-c", SERVER_CPU, SERVER, "-p", str(port), "--bind", "127.0.0.1",
            "--stats", "1", "--input", f"http://127.0.0.1:{origin_port}/video.mjpg"] + extra


def stats_json(port):
    """This server's /stats figures that matter here, or None; "viewers"
    is its count of streaming viewers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
            doc = json.load(r)
    except (OSError, ValueError):
        return None
    out = {k: doc[k] for k in ("clients", "frames_in", "fps_in", "bytes_in", "garbage_bytes")}
    out["viewers"] = doc["streaming"]
    out["source_kind"], out["source_state"] = doc["source"]["kind"], doc["source"]["state"]
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime


def cpu_busy():
    """Busy and total jiffies of each CPU, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = list(map(int, fields[:8]))
                idle = v[3] + v[4]
                out[name] = (sum(v) - idle, sum(v))
    return out


def mem_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
            if key == "Threads":
                out[key] = int(value)
    return out


def listening(port):
    """True when something listens on 127.0.0.1:port (from /proc/net/tcp)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(
            fields[1] == want and fields[3] == "0A"
            for fields in (line.split() for line in f.readlines()[1:])
        )


class Lines(threading.Thread):
    """Reads a process's stderr into a log, keeping each line's arrival time."""

    def __init__(self, stream, path):
        super().__init__(daemon=True)
        self.stream, self.path, self.lines = stream, path, []

    def run(self):
        with open(self.path, "w") as log:
            for raw in self.stream:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((time.monotonic(), line))
                log.write(line + "\n")


def end(proc, grace=5.0):
    """Waits for proc to exit by itself, then SIGTERM, then SIGKILL; by PID."""
    for sig, wait in ((None, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if sig is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=wait)
            return sig
        except subprocess.TimeoutExpired:
            continue
    return "unkillable"


def parse_distribution(text):
    """The percentiles of the server's HdrHistogram text at exit, in ms."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)\s+([\d.]+)\s+(\d+)", line)
        if m:
            rows.append((float(m.group(1)), float(m.group(2)), int(m.group(3))))
    if not rows:
        return None

    def at(q):
        return next((v for v, p, _ in rows if p >= q), rows[-1][0])

    m = re.search(r"Max\s*=\s*([\d.]+), Total count\s*=\s*(\d+)", text)
    return {
        "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p999_ms": at(0.999),
        "max_ms": float(m.group(1)) if m else rows[-1][0],
        "count": int(m.group(2)) if m else rows[-1][2],
    }


def parse_server_stats(lines, window):
    """This server's --stats output: the lines printed in the measured
    window, the final summary and the whole distribution."""
    t0, t1 = window
    in_window = [l for t, l in lines if l.startswith("stats:") and t0 + 1.0 <= t <= t1 + 0.5]
    text = "\n".join(l for _, l in lines)
    done = next((l for _, l in lines if l.startswith("done:")), None)
    dist_at = text.find("latency from read to write")
    p50s, p99s, maxes = [], [], []
    for l in in_window:
        m = re.search(r"latency p50 (\d+) p99 (\d+) max (\d+)", l)
        if m:
            p50s.append(int(m.group(1)))
            p99s.append(int(m.group(2)))
            maxes.append(int(m.group(3)))
    return {
        "lines_in_window": in_window,
        "window_p50_us_median": sorted(p50s)[len(p50s) // 2] if p50s else None,
        "window_p99_us_max": max(p99s) if p99s else None,
        "window_max_us": max(maxes) if maxes else None,
        "done": done,
        "distribution": parse_distribution(text[dist_at:]) if dist_at >= 0 else None,
        "distribution_text": text[dist_at:] if dist_at >= 0 else None,
    }


def parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    out["requests_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", text)
    if m:
        out["requests"], out["duration"], out["read"] = int(m.group(1)), m.group(2), m.group(3)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non_2xx"] = int(m.group(1))
    m = re.search(r"Transfer/sec:\s*([\d.]+\w+)", text)
    out["transfer_per_s"] = m.group(1) if m else None
    return out


class Sampler(threading.Thread):
    """Takes the CPU time of the server (and of the clients' processes) at t0
    and t1, and the server's memory every 0.25 s in between."""

    def __init__(self, pid, t0, t1, others=None):
        super().__init__(daemon=True)
        self.pid, self.t0, self.t1 = pid, t0, t1
        self.others = others or {}
        self.cpu = None
        self.others_cpu = {}
        self.busy = {}
        self.rss_max = 0
        self.last = {}
        self.error = None

    def run(self):
        try:
            while time.monotonic() < self.t0:
                time.sleep(min(0.05, max(0.0, self.t0 - time.monotonic())))
            c0, w0 = cpu_ticks(self.pid), time.monotonic()
            o0 = {k: ticks_or_none(p) for k, p in self.others.items()}
            b0 = cpu_busy()
            while time.monotonic() < self.t1:
                self.rss_max = max(self.rss_max, mem_kb(self.pid)["VmRSS"])
                time.sleep(min(0.25, max(0.0, self.t1 - time.monotonic())))
            c1, w1 = cpu_ticks(self.pid), time.monotonic()
            o1 = {k: ticks_or_none(p) for k, p in self.others.items()}
            b1 = cpu_busy()
            self.busy = {
                k: round(100.0 * (b1[k][0] - b0[k][0]) / max(1, b1[k][1] - b0[k][1]), 1)
                for k in b1 if k in b0
            }
            self.last = mem_kb(self.pid)
            self.rss_max = max(self.rss_max, self.last["VmRSS"])
            pct = lambda a, b: round(100.0 * (b - a) / CLK_TCK / (w1 - w0), 2)
            self.cpu = pct(c0, c1)
            self.others_cpu = {
                k: pct(o0[k], o1[k]) for k in self.others if o0[k] is not None and o1[k] is not None
            }
        except (FileNotFoundError, ProcessLookupError, KeyError) as e:
            self.error = f"server gone while sampling: {e!r}"


def ticks_or_none(pid):
    try:
        return cpu_ticks(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None


def one_run(server, scenario, rep, port, run_id):
    name, src, fps, clients, stalled, kind = scenario
    tag = f"{name}.{server}.{rep}"
    logs = os.path.join(OUT, "logs")
    os.makedirs(logs, exist_ok=True)
    record = {
        "run_id": run_id, "server": server, "scenario": name, "rep": rep, "port": port,
        "source": os.path.basename(SOURCES[src]), "fps_in": fps, "clients": clients,
        "stalled": stalled, "kind": kind, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_before": open("/proc/loadavg").read().split()[0],
    }
    # The floor reads nothing before its client comes; a source started at
    # once would fill the pipe and its first read would hold several frames.
    # So its source starts after the client, within the warm-up.
    delayed = server == "floor"
    measure = WRK_SECONDS if kind.startswith("wrk") else SECONDS
    src_seconds = measure + IDLE + 20.0
    src_cmd = ["taskset", "-c", CLIENT_CPU, PROBE, "source", SOURCES[src], "--fps", str(fps),
               "--seconds", str(src_seconds)]
    if delayed:
        src_cmd = ["sh", "-c", 'sleep 1; exec "$@"', "source"] + src_cmd
    source = subprocess.Popen(src_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    origin = origin_log = None
    if kind == "relay":
        origin_port = port + ORIGIN_OFFSET
        record["origin_port"] = origin_port
        argv = server_argv(server, origin_port)
        record["origin_command"] = " ".join(argv)
        origin = subprocess.Popen(argv, stdin=source.stdout, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        origin_log = Lines(origin.stderr, os.path.join(logs, tag + ".origin.log"))
        origin_log.start()
        argv = relay_argv(port, origin_port)
        srv_stdin = subprocess.DEVNULL
    else:
        argv = server_argv(server, port)
        srv_stdin = source.stdout
    record["command"] = " ".join(argv)
    srv = subprocess.Popen(argv, stdin=srv_stdin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    source.stdout.close()
    errlog = Lines(srv.stderr, os.path.join(logs, tag + ".server.log"))
    errlog.start()
    try:
        give_up = time.monotonic() + 10
        while not listening(port) or (origin is not None and not listening(record["origin_port"])):
            if srv.poll() is not None or time.monotonic() > give_up:
                record["error"] = f"server did not listen (exit {srv.poll()})"
                return record
            if origin is not None and origin.poll() is not None:
                record["error"] = f"origin did not listen (exit {origin.poll()})"
                return record
            time.sleep(0.02)
        if not delayed:
            time.sleep(IDLE)
        try:
            record["idle"] = mem_kb(srv.pid)
        except FileNotFoundError:
            pass
        if kind == "relay":
            run_watch(record, srv, source.pid, port, clients, stalled,
                      {"origin": origin.pid})
            record["origin_stats"] = stats_json(record["origin_port"])
            record["relay_stats"] = stats_json(port)
        elif kind == "watch":
            run_watch(record, srv, source.pid, port, clients, stalled)
        else:
            run_wrk(record, srv, source.pid, port, kind, tag, logs)
    finally:
        # The end of the input ends this server, the floor and VLC; Flask
        # needs SIGTERM, and so does a relay, which would wait for its
        # upstream to come back: it goes first, before its origin ends.
        # Either way, by PID.
        if origin is not None:
            record["server_end"] = str(end(srv, grace=0.0))
        if source.poll() is None:
            os.kill(source.pid, signal.SIGTERM)
        source.wait(timeout=10)
        if origin is not None:
            record["origin_end"] = str(end(origin, grace=5.0))
            record["origin_exit"] = origin.returncode
            origin_log.join(timeout=5)
        else:
            record["server_end"] = str(end(srv, grace=5.0 if server in ("this", "floor") else 3.0))
        record["server_exit"] = srv.returncode
        errlog.join(timeout=5)
        window = record.pop("window", None)
        if server == "this":
            if window:
                record["server_stats"] = parse_server_stats(errlog.lines, window)
                if origin_log is not None:
                    record["origin_server_stats"] = parse_server_stats(origin_log.lines, window)
        else:
            tail = [l for _, l in errlog.lines][-5:]
            if tail:
                record["server_stderr_tail"] = tail
    return record


def run_watch(record, srv, source_pid, port, clients, stalled, others=None):
    url = f"http://127.0.0.1:{port}/video.mjpg"
    cmd = ["taskset", "-c", CLIENT_CPU, PROBE, "watch", url, "--clients", str(clients),
           "--stalled", str(stalled), "--seconds", str(SECONDS), "--warmup", str(WARMUP),
           "--json"]
    record["probe_command"] = " ".join(cmd)
    start = time.monotonic()
    probe = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(srv.pid, start + WARMUP, start + SECONDS - 0.1,
                      {"probe": probe.pid, "source": source_pid, **(others or {})})
    sampler.start()
    record["window"] = (start + WARMUP, start + SECONDS)
    try:
        stdout, stderr = probe.communicate(timeout=SECONDS + 30)
        record["probe_exit"] = probe.returncode
        out = stdout.decode().strip().splitlines()
        if out:
            record["probe"] = json.loads(out[-1])
        if stderr.strip():
            record["probe_stderr"] = stderr.decode(errors="replace").strip()[-500:]
    except subprocess.TimeoutExpired:
        record["probe_exit"] = "timeout"
        end(probe, grace=0)
    sampler.join(timeout=5)
    fill_sample(record, sampler)


def fill_sample(record, sampler):
    record["cpu_pct"] = None if sampler.cpu is None else round(sampler.cpu, 2)
    record["rss_kb_max"] = sampler.rss_max or None
    record["rss_kb_end"] = sampler.last.get("VmRSS")
    record["hwm_kb"] = sampler.last.get("VmHWM")
    record["threads"] = sampler.last.get("Threads")
    record["clients_cpu_pct"] = sampler.others_cpu
    # How busy each CPU was, with everything on it: the machine is shared.
    record["cpu_busy_pct"] = sampler.busy
    if sampler.error:
        record["sample_error"] = sampler.error


def run_wrk(record, srv, source_pid, port, kind, tag, logs):
    path = "/video.mjpg" if kind == "wrk-video" else "/snapshot.jpg"
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-c", "1000", "-d", str(WRK_SECONDS), "-t", "2",
           f"http://127.0.0.1:{port}{path}"]
    record["wrk_command"] = " ".join(cmd)
    start = time.monotonic()
    wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The window: the middle of the load, past its connection storm.
    sampler = Sampler(srv.pid, start + 2.0, start + WRK_SECONDS - 0.5,
                      {"wrk": wrk.pid, "source": source_pid})
    sampler.start()
    try:
        stdout, stderr = wrk.communicate(timeout=WRK_SECONDS + 30)
        text = stdout.decode(errors="replace")
        record["wrk_exit"] = wrk.returncode
        record["wrk"] = parse_wrk(text)
        with open(os.path.join(logs, tag + ".wrk.txt"), "w") as f:
            f.write(text + stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        record["wrk_exit"] = "timeout"
        end(wrk, grace=0)
    sampler.join(timeout=5)
    fill_sample(record, sampler)
    # Memory once the 1000 connections are gone.
    time.sleep(2.0)
    try:
        record["after"] = mem_kb(srv.pid)
    except FileNotFoundError:
        record["after"] = None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--servers", default="this,floor,vlc,flask")
    ap.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    ap.add_argument("--reps", type=int, default=3,
                    help="runs of this server's and the floor's 1-client scenario, and of "
                         "this server's 100- and 1000-client and relay ones")
    ap.add_argument("--out", default=os.path.join(OUT, "results.jsonl"))
    ap.add_argument("--port", type=int, default=18600)
    args = ap.parse_args()

    # Many sockets, for 1000 clients and wrk.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    servers = args.servers.split(",")
    wanted = args.scenarios.split(",")
    run_id = time.strftime("%Y%m%dT%H%M%S")
    port = args.port
    began = time.monotonic()
    reps_of = lambda name: args.reps if name in REPEATED else 1
    # A relay scenario runs in turn with its direct one (relay-1c-90 with
    # 1c-90), rep by rep, when both are asked for.
    batches = []
    for scenario in [s for s in SCENARIOS if s[0] in wanted]:
        direct = [b for b in batches if "relay-" + b[0][0] == scenario[0]]
        if direct:
            direct[0].append(scenario)
        else:
            batches.append([scenario])
    # Alternatives in turn, rep by rep, so that drifts in the machine's load
    # fall on all of them alike.
    plan = [
        (rep, scenario, server)
        for batch in batches
        for rep in range(max(reps_of(s[0]) for s in batch))
        for scenario in batch
        if rep < reps_of(scenario[0])
        for server in servers
        if applies(server, scenario[0])
        and (rep == 0 or server == "this" or (server == "floor" and scenario[0] == "1c-90"))
    ]
    with open(args.out, "a") as out:
        for rep, scenario, server in plan:
            name = scenario[0]
            port += 1
            t = time.monotonic()
            record = one_run(server, scenario, rep, port, run_id)
            record["elapsed_s"] = round(time.monotonic() - t, 1)
            out.write(json.dumps(record) + "\n")
            out.flush()
            p = record.get("probe") or {}
            w = record.get("wrk") or {}
            print(
                f"[{time.monotonic() - began:6.0f}s] {name:18} {server:6} #{rep} "
                f"p50 {p.get('p50_ms')} p99 {p.get('p99_ms')} fps "
                f"{p.get('fps_min')}/{p.get('fps_median')}/{p.get('fps_max')} "
                f"corrupt {p.get('corrupt')} req/s {w.get('requests_per_s')} "
                f"cpu {record.get('cpu_pct')}% {record.get('clients_cpu_pct')} "
                f"busy {record.get('cpu_busy_pct')} "
                f"rss {record.get('rss_kb_max')} kB "
                f"{record.get('error', '')}",
                flush=True,
            )
            time.sleep(1.0)
    print(f"run {run_id} done in {time.monotonic() - began:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
