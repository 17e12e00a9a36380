#!/usr/bin/env python3
"""Frame age against the consumer's rate, from bench/slow_readers.sh's JSON
lines: one line per server and framing (`?fps=N` or not), one plot per MTU,
the age's median with its 90th percentile as a bar, on a log scale.

    python3 bench/slow_readers_plot.py RESULTS.jsonl OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    rows = [r for r in rows if r["camera_fps"] == 30]
    mtus = sorted({r["mtu"] for r in rows})
    fig, axes = plt.subplots(1, len(mtus), figsize=(6 * len(mtus), 4.5), dpi=100, squeeze=False)
    for ax, mtu in zip(axes[0], mtus):
        series = sorted({(r["server"], r["fps_cap"]) for r in rows if r["mtu"] == mtu})
        for server, cap in series:
            points = sorted(
                (r["rate"], r["age_p50_ms"], r["age_p90_ms"])
                for r in rows
                if r["mtu"] == mtu and r["server"] == server and r["fps_cap"] == cap
            )
            label = f"{server}" + (", ?fps=N" if cap == "yes" else "")
            xs = [p[0] for p in points]
            ax.errorbar(
                xs,
                [p[1] for p in points],
                yerr=[[0] * len(points), [p[2] - p[1] for p in points]],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_yscale("log")
        ax.set_xlabel("consumer reads, frames/s (camera 30 fps)")
        ax.set_ylabel("frame age when read, ms (median, bar to p90)")
        ax.set_title("loopback (64 KiB MTU)" if mtu == "lo" else f"MTU {mtu}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
