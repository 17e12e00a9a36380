#!/usr/bin/env python3
"""Frame age against the consumer's rate, from bench/slow_readers.sh's JSON
lines: one line per server and framing (`?fps=N` or not), one plot per MTU
and place of the consumer (beside the server, or elsewhere: REMOTE=1), the
age's median with its 90th percentile as a bar, on a log scale.

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
    # Lines from before REMOTE existed had the consumer beside the server.
    panel = lambda r: (r["mtu"], r.get("consumer", "here"))  # noqa: E731
    panels = sorted({panel(r) for r in rows})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 4.5), dpi=100, squeeze=False
    )
    for ax, (mtu, where) in zip(axes[0], panels):
        mine = [r for r in rows if panel(r) == (mtu, where)]
        for server, cap in sorted({(r["server"], r["fps_cap"]) for r in mine}):
            points = sorted(
                (r["rate"], r["age_p50_ms"], r["age_p90_ms"])
                for r in mine
                if r["server"] == server and r["fps_cap"] == cap
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
        title = "loopback (64 KiB MTU)" if mtu == "lo" else f"MTU {mtu}"
        if where == "elsewhere":
            title += ", consumer in another namespace"
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
