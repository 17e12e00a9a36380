#!/usr/bin/env python3
"""One measured window of bench/scaleout.sh: CPU time of each process and
of each CPU, and the servers' and HAProxy's own figures in the middle.

    python3 bench/scaleout/sample.py --delay 4 --length 15 --out W.json \\
        --pid origin=123 --pid relay1=124 ... \\
        --stats origin=http://10.214.0.1:8554/stats ... \\
        --haproxy /path/to/haproxy.sock

With `--up SOCKET COUNT` it only says whether COUNT relays are UP in
HAProxy's eyes (exit 0) or not (1).

Waits DELAY seconds, takes utime + stime of every PID (/proc/PID/stat, all
threads) and the busy time of every CPU (/proc/stat), waits LENGTH seconds
(fetching every --stats URL and HAProxy's `show stat` halfway), takes them
again, and writes one JSON object: cpu_pct per process (% of one core),
busy_pct per CPU, and the figures. It runs inside the viewers' network
namespace, from which every server is reachable; /proc is the same there.
"""

import argparse
import json
import os
import re
import socket
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (FileNotFoundError, ProcessLookupError):
        return None


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpus():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = list(map(int, fields[:8]))
                out[name] = (sum(v) - v[3] - v[4], sum(v), v[6] + v[5])  # busy, total, irq+softirq
    return out


def server_stats(url):
    """The numbers of this server's /stats that matter here; "viewers" is
    its count of streaming viewers ("streaming" in /stats)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for key in ("clients", "streaming", "frames_in", "fps_in", "fps_out", "bytes_in", "bytes_out",
                "frames_out", "frames_skipped", "garbage_bytes"):
        m = re.search(r'"%s":([\d.]+)' % key, text)
        if m:
            name = "viewers" if key == "streaming" else key
            out[name] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    m = re.search(r'"source":\{"kind":"(\w+)","state":"(\w+)"', text)
    if m:
        out["source_kind"], out["source_state"] = m.groups()
    m = re.search(r'"restarts":(\d+)', text)
    if m:
        out["source_restarts"] = int(m.group(1))
    return out


def haproxy_stat(path):
    """`show stat` on HAProxy's admin socket: per proxy and server, the
    current sessions, status, check status and totals."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(path)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError as e:
        return {"error": str(e)}
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        if not line:
            continue
        row = dict(zip(head, line.split(",")))
        out[f"{row['pxname']}/{row['svname']}"] = {
            k: row.get(k) for k in ("scur", "smax", "stot", "status", "check_status", "bout", "econ",
                                    "eresp", "wretr", "wredis", "hrsp_5xx")
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delay", type=float)
    ap.add_argument("--length", type=float)
    ap.add_argument("--out")
    ap.add_argument("--up", nargs=2, metavar=("SOCKET", "COUNT"),
                    help="only check that COUNT servers of HAProxy's backend are UP (exit 0) or not (1)")
    ap.add_argument("--pid", action="append", default=[], help="ROLE=PID")
    ap.add_argument("--stats", action="append", default=[], help="ROLE=URL")
    ap.add_argument("--haproxy")
    args = ap.parse_args()
    if args.up:
        stat = haproxy_stat(args.up[0])
        up = [k for k, v in stat.items() if k.startswith("relays/") and not k.endswith("/BACKEND")
              and v.get("status") == "UP"]
        raise SystemExit(0 if len(up) >= int(args.up[1]) else 1)
    if args.delay is None or args.length is None or not args.out:
        ap.error("--delay, --length and --out are needed")
    pids = dict(p.split("=", 1) for p in args.pid)
    urls = dict(s.split("=", 1) for s in args.stats)

    time.sleep(args.delay)
    t0, c0, k0 = time.monotonic(), cpus(), {r: ticks(p) for r, p in pids.items()}
    time.sleep(args.length / 2)
    mid = {r: server_stats(u) for r, u in urls.items()}
    hap = haproxy_stat(args.haproxy) if args.haproxy else None
    rss = {r: rss_kb(p) for r, p in pids.items()}
    time.sleep(max(0.0, t0 + args.length - time.monotonic()))
    t1, c1, k1 = time.monotonic(), cpus(), {r: ticks(p) for r, p in pids.items()}
    wall = t1 - t0
    out = {
        "seconds": round(wall, 3),
        "cpu_pct": {
            r: (None if k0[r] is None or k1[r] is None
                else round(100.0 * (k1[r] - k0[r]) / CLK_TCK / wall, 1))
            for r in pids
        },
        "rss_kb": rss,
        "busy_pct": {
            c: round(100.0 * (c1[c][0] - c0[c][0]) / max(1, c1[c][1] - c0[c][1]), 1) for c in c1 if c in c0
        },
        "irq_pct": {
            c: round(100.0 * (c1[c][2] - c0[c][2]) / max(1, c1[c][1] - c0[c][1]), 1) for c in c1 if c in c0
        },
        "stats": mid,
        "haproxy": hap,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
