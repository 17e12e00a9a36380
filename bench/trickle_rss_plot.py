#!/usr/bin/env python3
"""Peak RSS less idle RSS against the number of trickling viewers, from
bench/trickle_rss.py's JSON lines: one line per server name, and the line
N x 1 MB, what a copy of each frame in each client's buffer would hold (the
way uStreamer and mjpg-streamer serve a client): arithmetic, not measured.

    python3 bench/trickle_rss_plot.py RESULTS.jsonl OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1024 * 1024


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    labels = {
        "before": "before: each trickler holds the frame it joined on",
        "after": "after: --max-held-bytes 32 MiB (default)",
    }
    for name in sorted({r["server"] for r in rows}, key=lambda s: (s != "before", s)):
        # The last run of each N for this server.
        by_n = {r["viewers"]: r for r in rows if r["server"] == name}
        ns = sorted(by_n)
        ys = [(by_n[n]["peak_rss_kib"] - by_n[n]["idle_rss_kib"]) / 1024 for n in ns]
        ax.plot(ns, ys, marker="o", label=labels.get(name, name))
    ns = sorted({r["viewers"] for r in rows})
    frame = max(r["frame_bytes"] for r in rows)
    ax.plot(
        ns,
        [n * frame / MIB for n in ns],
        linestyle="--",
        color="grey",
        label="a copy per client: N × 1 MB\n(µStreamer, mjpg-streamer; arithmetic, not measured)",
    )
    ax.set_xlabel("trickling viewers (each reads 8 KiB every 4 s)")
    ax.set_ylabel("server RSS, peak less idle, MiB")
    ax.set_title("1 MB frames at 10 fps, every one distinct")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
