#!/usr/bin/env python3
"""Turns bench/out/results.jsonl into markdown tables (bench/out/results.md)
and the latency plot (docs/bench-latency.png). Uses the newest run only,
unless --run-id says which.
"""

import argparse
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SERVERS = ["this", "floor", "vlc", "flask"]
LABEL = {
    "this": "this server",
    "floor": "floor relay",
    "vlc": "VLC (cvlc, mpjpeg)",
    "flask": "Flask pattern",
}
SCENARIO_TITLE = {
    "1c-90": "640x480 at 90 fps, 1 client",
    "10c-90": "640x480 at 90 fps, 10 clients",
    "100c-90": "640x480 at 90 fps, 100 clients",
    "1000c-90": "640x480 at 90 fps, 1000 clients",
    "1000c-30": "640x480 at 30 fps, 1000 clients",
    "1c+200stalled-90": "640x480 at 90 fps, 1 reading client + 200 stalled",
    "720p-1c-25": "1280x720 at 25 fps, 1 client",
    "720p-100c-25": "1280x720 at 25 fps, 100 clients",
    "relay-1c-90": "640x480 at 90 fps, 1 client, through one relay",
    "relay-100c-90": "640x480 at 90 fps, 100 clients, through one relay",
}

# Relay scenarios and the direct ones they are set beside.
RELAYED = {"relay-1c-90": "1c-90", "relay-100c-90": "100c-90"}

# The original tokio/hyper server, as measured elsewhere on this kind of
# machine: reference figures only, it is not run here.
ORIGINAL = {
    "1c_p50": 0.37, "1c_p99": 1.5, "100c_p50": 1.2, "100c_cpu": 16.0,
    "1000c_fps": (60, 74), "1000c_fps_min": 44, "1000c_cpu": 95.0,
    "stalled_rss_mb": 92, "idle_rss_mb": 2.3, "wrk_rss_mb": 20.3,
}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mib(kb):
    return None if kb is None else kb / 1024.0


def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def load(path, run_id):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    if not rows:
        raise SystemExit(f"{path}: no runs")
    run_id = run_id or rows[-1]["run_id"]
    return run_id, [r for r in rows if r["run_id"] == run_id]


def group(rows):
    out = {}
    for r in rows:
        out.setdefault((r["scenario"], r["server"]), []).append(r)
    return out


def pick(runs, path):
    """Median over runs of a value found by a path of keys."""
    values = []
    for r in runs:
        v = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        values.append(v)
    return median(values)


def client_frames_per_cpu_s(r):
    p, cpu = r.get("probe") or {}, r.get("cpu_pct")
    if not p.get("frames") or not cpu or not p.get("seconds"):
        return None
    return p["frames"] / p["seconds"] / (cpu / 100.0)


def source_fps(r):
    """The rate the server read frames at in the window, from its --stats lines."""
    import re

    values = []
    for line in (r.get("server_stats") or {}).get("lines_in_window") or []:
        m = re.search(r"fps in ([\d.]+)", line)
        if m:
            values.append(float(m.group(1)))
    return statistics.mean(values) if values else None


def note(runs):
    notes = []
    for r in runs:
        p = r.get("probe") or {}
        if r.get("error"):
            notes.append(r["error"])
        if r.get("probe_exit") not in (0, None):
            notes.append(f"probe exit {r['probe_exit']}")
        if p.get("connected") is not None and p["connected"] < p.get("clients", 0):
            notes.append(f"{p['connected']}/{p['clients']} connected")
        if p.get("failed"):
            notes.append(f"{p['failed']} failed connects")
        if p.get("closed"):
            notes.append(f"{p['closed']} closed by server")
        if r.get("sample_error"):
            notes.append(r["sample_error"])
    seen = []
    for n in notes:
        if n not in seen:
            seen.append(n)
    return "; ".join(seen[:4])


def scenario_table(name, groups):
    lines = [
        f"#### {SCENARIO_TITLE[name]} (`{name}`)",
        "",
        "| server | runs | p50 ms | p90 ms | p99 ms | max ms | fps/client min / median / max | skipped | corrupt | server CPU % | RSS MiB (max) | VmHWM MiB | probe CPU % | CPU0 / CPU1 busy % | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in SERVERS:
        runs = groups.get((name, server))
        if not runs:
            continue
        p = lambda k: pick(runs, ["probe", k])
        fps = f"{fmt(p('fps_min'))} / {fmt(p('fps_median'))} / {fmt(p('fps_max'))}"
        busy = f"{fmt(pick(runs, ['cpu_busy_pct', 'cpu0']), 0)} / {fmt(pick(runs, ['cpu_busy_pct', 'cpu1']), 0)}"
        skipped = p("skipped")
        corrupt = sum((r.get("probe") or {}).get("corrupt") or 0 for r in runs)
        lines.append(
            f"| {LABEL[server]} | {len(runs)} | {fmt(p('p50_ms'), 3)} | {fmt(p('p90_ms'), 3)} | "
            f"{fmt(p('p99_ms'), 3)} | {fmt(p('max_ms'), 3)} | {fps} | {fmt(skipped, 0)} | {corrupt} | "
            f"{fmt(pick(runs, ['cpu_pct']), 1)} | {fmt(mib(pick(runs, ['rss_kb_max'])))} | "
            f"{fmt(mib(pick(runs, ['hwm_kb'])))} | {fmt(pick(runs, ['clients_cpu_pct', 'probe']), 1)} | "
            f"{busy} | {note(runs)} |"
        )
    if any(len(groups.get((name, s), [])) > 1 for s in SERVERS):
        lines.append("")
        lines.append("Each run of the repeated ones, p50 / p99 ms (CPU %):")
        lines.append("")
        for server in SERVERS:
            runs = groups.get((name, server), [])
            if len(runs) > 1:
                each = ", ".join(
                    f"{fmt((r.get('probe') or {}).get('p50_ms'), 3)} / {fmt((r.get('probe') or {}).get('p99_ms'), 3)} ({fmt(r.get('cpu_pct'), 1)})"
                    for r in runs
                )
                lines.append(f"- {LABEL[server]}: {each}")
    return "\n".join(lines) + "\n"


def relay_table(groups):
    """What one relay hop adds: each relay scenario beside its direct one.
    The two ran in turn, rep by rep, so per-rep differences are paired."""
    lines = [
        "| clients | runs | direct p50 / p90 / p99 ms | through a relay p50 / p90 / p99 ms | "
        "added p50 ms (difference of medians; median of paired reps) | added p99 ms | "
        "relay CPU % | origin CPU % | origin viewers | relay garbage bytes / frame | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for relayed, direct in RELAYED.items():
        rr, dr = groups.get((relayed, "this"), []), groups.get((direct, "this"), [])
        if not rr or not dr:
            continue
        q = lambda runs, k: pick(runs, ["probe", k])
        paired = [
            (r.get("probe") or {}).get("p50_ms") - (d.get("probe") or {}).get("p50_ms")
            for r, d in zip(sorted(rr, key=lambda r: r["rep"]), sorted(dr, key=lambda r: r["rep"]))
            if (r.get("probe") or {}).get("p50_ms") is not None
            and (d.get("probe") or {}).get("p50_ms") is not None
        ]
        add50 = None if q(rr, "p50_ms") is None else q(rr, "p50_ms") - q(dr, "p50_ms")
        add99 = None if q(rr, "p99_ms") is None else q(rr, "p99_ms") - q(dr, "p99_ms")
        garbage = median([
            (r.get("relay_stats") or {}).get("garbage_bytes", 0) / r["relay_stats"]["frames_in"]
            for r in rr if (r.get("relay_stats") or {}).get("frames_in")
        ])
        lines.append(
            f"| {rr[0]['clients']} | {len(rr)} / {len(dr)} | "
            f"{fmt(q(dr, 'p50_ms'), 3)} / {fmt(q(dr, 'p90_ms'), 3)} / {fmt(q(dr, 'p99_ms'), 3)} | "
            f"{fmt(q(rr, 'p50_ms'), 3)} / {fmt(q(rr, 'p90_ms'), 3)} / {fmt(q(rr, 'p99_ms'), 3)} | "
            f"{fmt(add50, 3)}; {fmt(median(paired), 3)} | {fmt(add99, 3)} | "
            f"{fmt(pick(rr, ['cpu_pct']), 1)} | {fmt(pick(rr, ['clients_cpu_pct', 'origin']), 1)} | "
            f"{fmt(pick(rr, ['origin_stats', 'viewers']), 0)} | {fmt(garbage, 0)} | {note(rr)} |"
        )
        each = ", ".join(
            f"{fmt((d.get('probe') or {}).get('p50_ms'), 3)} → {fmt((r.get('probe') or {}).get('p50_ms'), 3)}"
            for r, d in zip(sorted(rr, key=lambda r: r["rep"]), sorted(dr, key=lambda r: r["rep"]))
        )
        lines.append(f"| | each rep, p50 direct → relayed: {each} | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def wrk_table(groups):
    lines = [
        "| server | URL | requests/s | requests | non-2xx | socket errors (connect/read/write/timeout) | read | server CPU % | RSS MiB idle → max under load → 2 s after | VmHWM MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, path in (("wrk-video", "/video.mjpg"), ("wrk-snapshot", "/snapshot.jpg")):
        for server in SERVERS:
            for r in groups.get((name, server), []):
                w = r.get("wrk") or {}
                e = w.get("errors")
                errs = "/".join(str(e[k]) for k in ("connect", "read", "write", "timeout")) if e else "0/0/0/0"
                idle = (r.get("idle") or {}).get("VmRSS")
                after = (r.get("after") or {}).get("VmRSS")
                hwm = (r.get("after") or {}).get("VmHWM") or r.get("hwm_kb")
                extra = "" if r.get("wrk_exit") in (0, None) else f" (wrk exit {r['wrk_exit']})"
                if r.get("error"):
                    extra += f" ({r['error']})"
                lines.append(
                    f"| {LABEL[server]} | `{path}` | {fmt(w.get('requests_per_s'), 0)}{extra} | {fmt(w.get('requests'))} | "
                    f"{fmt(w.get('non_2xx', 0))} | {errs} | {w.get('read', '–')} | {fmt(r.get('cpu_pct'), 1)} | "
                    f"{fmt(mib(idle))} → {fmt(mib(r.get('rss_kb_max')))} → {fmt(mib(after))} | {fmt(mib(hwm))} |"
                )
    return "\n".join(lines) + "\n"


def stats_table(groups, scenarios):
    lines = [
        "| scenario | run | measured by | p50 | p90 | p99 | p99.9 | max | samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
    for name in scenarios:
        for r in groups.get((name, "this"), []):
            st = r.get("server_stats") or {}
            s, p = st.get("distribution"), r.get("probe")
            if not s or not p:
                continue
            us = lambda v: None if v is None else v / 1000.0
            lines.append(
                f"| {name} | {r['rep']} | server, whole run (`--stats` at exit) | "
                + " | ".join(fmt(s[k], 3) for k in keys) + f" | {s['count']} |"
            )
            lines.append(
                f"| | | server, window (`--stats 1` lines: median p50, highest p99, max) | "
                f"{fmt(us(st.get('window_p50_us_median')), 3)} | | {fmt(us(st.get('window_p99_us_max')), 3)} | | "
                f"{fmt(us(st.get('window_max_us')), 3)} | |"
            )
            lines.append(
                f"| | | probe, window | " + " | ".join(fmt(p[k], 3) for k in keys) + f" | {p['frames']} |"
            )
    return "\n".join(lines) + "\n"


def stats_agree(groups, scenarios):
    """How often the probe's figure is at least the server's (it should be:
    the probe's span contains the server's)."""
    n = ok50 = ok99 = 0
    for name in scenarios:
        for r in groups.get((name, "this"), []):
            st, p = r.get("server_stats") or {}, r.get("probe") or {}
            if st.get("window_p50_us_median") is None or p.get("p50_ms") is None:
                continue
            n += 1
            ok50 += p["p50_ms"] * 1000 >= st["window_p50_us_median"]
            ok99 += p["p99_ms"] * 1000 >= (st.get("window_p99_us_max") or 0)
    return (f"In {ok50} of {n} runs the probe's p50 is at least the server's window p50, "
            f"and in {ok99} of {n} its p99 is at least the highest p99 of the server's "
            f"per-second lines.\n")


def stats_lines(groups):
    out = []
    for name in SCENARIO_TITLE:
        runs = groups.get((name, "this"), [])
        if runs:
            s = runs[0].get("server_stats") or {}
            ls = s.get("lines_in_window") or []
            if ls:
                out.append(f"- `{name}`: `{ls[len(ls) // 2]}`")
            if s.get("done"):
                out.append(f"  - `{s['done']}`")
    return "\n".join(out) + "\n"


def targets(groups):
    """Each target: what it asks, the figure, met or not."""
    rows = []

    def add(what, figure, met):
        rows.append((what, figure, "met" if met else ("**missed**" if met is False else "n/a")))

    this1, floor1 = groups.get(("1c-90", "this"), []), groups.get(("1c-90", "floor"), [])
    t50, f50 = pick(this1, ["probe", "p50_ms"]), pick(floor1, ["probe", "p50_ms"])
    t99, f99 = pick(this1, ["probe", "p99_ms"]), pick(floor1, ["probe", "p99_ms"])
    if t50 and f50:
        add("1 client, 90 fps: p50 ≤ 1.15× the floor's",
            f"{t50:.3f} vs {f50:.3f} ms = {t50 / f50:.2f}×", t50 <= 1.15 * f50)
    if t99 and f99:
        add("1 client, 90 fps: p99 ≤ 1.3× the floor's",
            f"{t99:.3f} vs {f99:.3f} ms = {t99 / f99:.2f}×", t99 <= 1.3 * f99)
    c100 = groups.get(("100c-90", "this"), [])
    p50 = pick(c100, ["probe", "p50_ms"])
    cpu = pick(c100, ["cpu_pct"])
    if p50 is not None:
        add("100 clients: p50 ≤ 0.6 ms (half the original's 1.2)", f"{p50:.3f} ms", p50 <= 0.6)
    if cpu is not None:
        add("100 clients: CPU ≤ 9.6 % (0.6× the original's 16 %)", f"{cpu:.1f} %", cpu <= 9.6)
    c1000 = groups.get(("1000c-90", "this"), [])
    if c1000:
        spreads = []
        for r in c1000:
            p = r.get("probe") or {}
            if p.get("fps_median"):
                spreads.append(max(p["fps_median"] - p["fps_min"], p["fps_max"] - p["fps_median"]) / p["fps_median"])
        worst = max(spreads) if spreads else None
        fmin, fmed = pick(c1000, ["probe", "fps_min"]), pick(c1000, ["probe", "fps_median"])
        add("1000 clients, 90 fps: every client within 10 % of the median fps",
            f"min {fmt(fmin)} / median {fmt(fmed)} fps; worst spread in any run {worst * 100:.1f} %" if worst is not None else "–",
            worst is not None and worst <= 0.10)
        eff = median([client_frames_per_cpu_s(r) for r in c1000])
        lo, hi = ORIGINAL["1000c_fps"]
        orig = 1000 * (lo + hi) / 2 / (ORIGINAL["1000c_cpu"] / 100)
        if eff:
            add("1000 clients, 90 fps: client-frames per CPU-second ≥ 1.5× the original's",
                f"{eff:,.0f} vs {orig:,.0f} (1000 × 67 fps / 0.95) = {eff / orig:.2f}×", eff >= 1.5 * orig)
    c30 = groups.get(("1000c-30", "this"), [])
    if c30:
        fmin = min((r.get("probe") or {}).get("fps_min") or 0 for r in c30)
        fmax = max((r.get("probe") or {}).get("fps_max") or 0 for r in c30)
        skipped = sum((r.get("probe") or {}).get("skipped") or 0 for r in c30)
        src = median([source_fps(r) for r in c30])
        p99 = pick(c30, ["probe", "p99_ms"])
        add("1000 clients, 30 fps: every client 30 fps (≥ 29.7 in every run)",
            f"clients {fmin:.2f} to {fmax:.2f} fps; frames skipped by the server {skipped}; "
            f"source's own rate in the window (`--stats` fps in) {fmt(src, 1)}", fmin >= 29.7)
        if p99 is not None:
            add("1000 clients, 30 fps: p99 < 10 ms", f"{p99:.3f} ms", p99 < 10)
    idle = median([(r.get("idle") or {}).get("VmRSS") for rs in groups.values() for r in rs if r["server"] == "this"])
    if idle:
        add("idle RSS ≤ 2 MiB", f"{mib(idle):.2f} MiB (median over all runs, before clients)", mib(idle) <= 2)
    rss1000 = max([r.get("rss_kb_max") or 0 for k in ("1000c-90", "1000c-30", "wrk-video") for r in groups.get((k, "this"), [])] or [0])
    if rss1000:
        add("RSS with 1000 clients ≤ 6 MiB", f"{mib(rss1000):.2f} MiB (highest of the 1000-client runs)", mib(rss1000) <= 6)
    st = groups.get(("1c+200stalled-90", "this"), [])
    if st and this1:
        delta = pick(st, ["rss_kb_max"]) - pick(this1, ["rss_kb_max"])
        add("200 stalled clients add ≤ 2 MiB",
            f"{mib(pick(st, ['rss_kb_max'])):.2f} − {mib(pick(this1, ['rss_kb_max'])):.2f} MiB = {mib(delta):+.2f} MiB", mib(delta) <= 2)
    relayed, direct = groups.get(("relay-1c-90", "this"), []), this1
    r50, d50 = pick(relayed, ["probe", "p50_ms"]), pick(direct, ["probe", "p50_ms"])
    if r50 is not None and d50 is not None:
        add("1 client, 90 fps: one relay hop adds ≤ 0.3 ms p50",
            f"{r50:.3f} − {d50:.3f} = {r50 - d50:+.3f} ms", r50 - d50 <= 0.3)
    corrupt = sum((r.get("probe") or {}).get("corrupt") or 0 for rs in groups.values() for r in rs if r["server"] == "this")
    add("zero corrupt frames (this server, every run)", f"{corrupt}", corrupt == 0)
    lines = ["| target | this server | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def plot(groups, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    keys = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
    labels = ["p50", "p90", "p99", "p99.9", "max"]
    style = {"this": ("C0", "o"), "floor": ("C2", "s"), "vlc": ("C1", "^"), "flask": ("C3", "v")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, (name, title) in zip(axes, (("1c-90", "1 client"), ("100c-90", "100 clients"))):
        for server in SERVERS:
            runs = groups.get((name, server))
            if not runs:
                continue
            ys = [pick(runs, ["probe", k]) for k in keys]
            if all(y is None for y in ys):
                continue
            color, marker = style[server]
            n = f" (median of {len(runs)})" if len(runs) > 1 else ""
            ax.plot(labels, ys, marker=marker, color=color, label=LABEL[server] + n)
        ref = {"1c-90": {"p50": 0.37, "p99": 1.5}, "100c-90": {"p50": 1.2}}[name]
        ax.plot([labels.index(k) for k in ref], list(ref.values()), linestyle="none", marker="D",
                markerfacecolor="none", color="k", label="original tokio/hyper (reference, not run here)")
        ax.set_yscale("log")
        ax.set_title(f"640x480 at 90 fps, {title}")
        ax.set_xlabel("percentile")
        ax.grid(True, which="both", axis="y", alpha=0.3)
    axes[0].set_ylabel("latency, source write → client read (ms, log scale)")
    axes[0].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].yaxis.set_minor_formatter(
        ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    handles = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l.split(" (median")[0], h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("mjpeg-probe latency per server (medians where repeated)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=os.path.join(HERE, "out", "results.jsonl"))
    ap.add_argument("--run-id")
    ap.add_argument("--md", default=os.path.join(HERE, "out", "results.md"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "bench-latency.png"))
    args = ap.parse_args()
    run_id, rows = load(args.results, args.run_id)
    groups = group(rows)
    scenarios = [s for s in SCENARIO_TITLE if any(k[0] == s for k in groups)]
    parts = [f"## Results of run {run_id}\n", "Medians over the runs of each cell. Latency: mjpeg-probe, source write → last byte read.\n"]
    parts += [scenario_table(s, groups) for s in scenarios]
    if any(groups.get((r, "this")) and groups.get((d, "this")) for r, d in RELAYED.items()):
        parts += ["### One relay hop (this server relaying this server, both on CPU 0)\n", relay_table(groups)]
    parts += ["### wrk -c 1000 -d 15 -t 2\n", wrk_table(groups)]
    parts += ["### This server's `--stats` beside the probe (ms)\n", stats_table(groups, scenarios),
              stats_agree(groups, scenarios)]
    parts += ["A `--stats` line from the middle of each measured window (µs), and the final summary:\n", stats_lines(groups)]
    parts += ["### Targets\n", targets(groups)]
    with open(args.md, "w") as f:
        f.write("\n".join(parts))
    plot(groups, args.png)
    print(f"wrote {args.md} and {args.png} from run {run_id} ({len(rows)} runs)")


if __name__ == "__main__":
    main()
