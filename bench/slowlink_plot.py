"""Latency over time from `mjpeg-probe watch --timeline` CSV files.

    python3 bench/slowlink_plot.py OUT.png TITLE LABEL=FILE.csv [LABEL=FILE.csv ...]

Each file is one line on the plot (its every sample as a dot, joined); the
y axis is logarithmic so that a loopback viewer's fraction of a millisecond
and a slow link's seconds fit on one plot.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    out, title, series = sys.argv[1], sys.argv[2], sys.argv[3:]
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    for spec in series:
        label, path = spec.split("=", 1)
        t, lat = [], []
        with open(path) as f:
            for row in csv.DictReader(f):
                t.append(float(row["t_s"]))
                lat.append(float(row["latency_ms"]))
        ax.plot(t, lat, marker=".", markersize=2, linewidth=0.6, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time since the viewer connected (s)")
    ax.set_ylabel("latency, source write to viewer read (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
