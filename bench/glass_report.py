#!/usr/bin/env python3
"""The tables of the newest bench/glass.py run: bench/out/glass.jsonl (its
last block) and the per-frame timelines it names. Prints Markdown.

Per server and rate, the frames of all repetitions are pooled: the absolute
figure is each read frame's arrival minus the clock it shows; the server's
share is its arrival minus the tee's note of its last byte entering the
server's pipe (every frame, read or not, paired by content key).
"""

import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NAMES = {
    "this": "this server",
    "this-page": "this server, page reading",
    "vlc": "VLC (cvlc, mpjpeg)",
    "flask": "Flask pattern",
    "original": "original (tokio/hyper)",
}


def rank(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[max(1, min(len(s), -int(-q * len(s) // 1))) - 1]


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "out", "glass.jsonl")
    blocks = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "machine" in row:
                blocks.append((row, []))
            elif blocks:
                blocks[-1][1].append(row)
    head, rows = blocks[-1]
    m = head["machine"]
    print(f"Run {m['date']} on {m['cpu']} ({m['cpus']} CPUs), {m['kernel']}; commit {m['commit']}; "
          f"{m['chromium']}; {m['ffmpeg']}; Xvfb {m['xvfb']}; VLC {m['vlc']}; Flask {m['flask']}; "
          f"load average at the start {', '.join(f'{x:.2f}' for x in m['load'])}.")
    print()
    groups = {}
    for r in rows:
        groups.setdefault((r["server"], r["fps"]), []).append(r)
    print("| server | fps | runs | frames read / received | glass-to-glass p50 | p90 | p99 "
          "| server's share p50 | p90 | p99 | max | clock to pipe p50 | page p50 (readings) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    order = ["this", "vlc", "flask", "original", "this-page"]
    for (server, fps) in sorted(groups, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else 9)):
        runs = groups[(server, fps)]
        glass, share, upstream = [], [], []
        frames = read = 0
        errors = [r["error"] for r in runs if r.get("error")]
        for r in runs:
            timeline = os.path.join(ROOT, r["timeline"])
            if not os.path.exists(timeline):
                continue
            with open(timeline) as f:
                for row in csv.DictReader(f):
                    frames += 1
                    if row["outcome"] == "read":
                        read += 1
                        glass.append(float(row["latency_ms"]))
                    if row["server_ms"]:
                        share.append(float(row["server_ms"]))
                        if row["outcome"] == "read":
                            upstream.append(float(row["latency_ms"]) - float(row["server_ms"]))
        pages = [r["page"] for r in runs if r.get("page") and r["page"].get("reads")]
        page = "–"
        if pages:
            p = pages[0]
            page = f"{fmt(p['p50_ms'], 0)} ({p['count']})"
        note = f" ({'; '.join(errors)})" if errors else ""
        print(f"| {NAMES.get(server, server)}{note} | {fps} | {len(runs)} | {read} / {frames} "
              f"| {fmt(rank(glass, .5))} | {fmt(rank(glass, .9))} | {fmt(rank(glass, .99))} "
              f"| {fmt(rank(share, .5), 2)} | {fmt(rank(share, .9), 2)} | {fmt(rank(share, .99), 2)} "
              f"| {fmt(max(share) if share else None, 2)} | {fmt(rank(upstream, .5))} | {page} |")


if __name__ == "__main__":
    main()
