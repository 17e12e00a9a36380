#!/usr/bin/env python3
"""Sums up one run of bench/scaleout.sh: OUTDIR/summary.md (printed too)
and OUTDIR/summary.json.

    python3 bench/scaleout/report.py OUTDIR
"""

import glob
import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        return json.loads(text.splitlines()[-1])
    except ValueError:
        return {"error": text[-300:]}


def reconnect(outdir, name):
    """The probe's reconnect figures, from its JSON (`--reconnect`)."""
    j = load(os.path.join(outdir, name + ".json")) or {}
    return j if "losses" in j else None


def f(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def diff(a, b):
    return None if a is None or b is None else a - b


def main():
    outdir = sys.argv[1]
    summary = {"outdir": outdir}
    md = []
    try:
        machine = open(os.path.join(outdir, "machine.txt")).read().strip()
    except FileNotFoundError:
        machine = ""
    md += ["# Scale-out run", "", "```text", machine, "```", ""]

    # --- frame size and hops ---------------------------------------------------
    hs = load(os.path.join(outdir, "hops-sample.json")) or {}
    origin = (hs.get("stats") or {}).get("origin") or {}
    if origin.get("frames_in"):
        size = origin["bytes_in"] / origin["frames_in"]
        fps = origin.get("fps_in") or 30.0
        summary["frame_bytes"] = round(size)
        summary["mbit_per_viewer"] = round(size * 8 * fps / 1e6, 2)
        md += [f"Frames at the origin: {size / 1000:.1f} kB on average at {fps:.1f} fps = "
               f"**{size * 8 * fps / 1e6:.2f} Mbit/s per viewer** (payload; plus about 120 bytes of "
               f"part headers a frame and TCP/IP overhead).", ""]
    hops = {k: load(os.path.join(outdir, f"hops-{k}.json")) or {} for k in ("origin", "relay", "balancer")}
    summary["hops"] = hops
    md += ["## Latency through each hop (one viewer each, at the same time)", "",
           "Source write → viewer read, mjpeg-probe, ms. The origin's row includes its uplink (tbf).", "",
           "| viewer of | p50 | p90 | p99 | max | fps | added p50 | added p99 |",
           "|---|---|---|---|---|---|---|---|"]
    prev = None
    for k, label in (("origin", "the origin"), ("relay", "relay1 (origin → relay)"),
                     ("balancer", "the balancer (origin → relay → HAProxy)")):
        h = hops[k]
        add50 = diff(h.get("p50_ms"), (prev or {}).get("p50_ms")) if prev else None
        add99 = diff(h.get("p99_ms"), (prev or {}).get("p99_ms")) if prev else None
        md.append(f"| {label} | {f(h.get('p50_ms'), 3)} | {f(h.get('p90_ms'), 3)} | {f(h.get('p99_ms'), 3)} | "
                  f"{f(h.get('max_ms'), 3)} | {f(h.get('fps_median'))} | {f(add50, 3)} | {f(add99, 3)} |")
        prev = h
    md.append("")

    # --- load ------------------------------------------------------------------
    loads = []
    for path in glob.glob(os.path.join(outdir, "load-*-sample.json")):
        n = int(re.search(r"load-(\d+)-sample", path).group(1))
        s = load(path) or {}
        p = load(os.path.join(outdir, f"load-{n}.json")) or {}
        r = load(os.path.join(outdir, f"load-{n}-relay.json")) or {}
        st = s.get("stats") or {}
        cpu = s.get("cpu_pct") or {}
        hap = s.get("haproxy") or {}
        v1 = (st.get("relay1") or {}).get("viewers")
        v2 = (st.get("relay2") or {}).get("viewers")
        per_core = []
        for role, v in (("relay1", v1), ("relay2", v2)):
            c = cpu.get(role)
            # relay1 has the extra direct viewer too
            if v and c:
                per_core.append(v / (c / 100.0))
        row = {
            "viewers": n, "probe": p, "relay_direct": r, "cpu_pct": cpu, "busy_pct": s.get("busy_pct"),
            "irq_pct": s.get("irq_pct"), "rss_kb": s.get("rss_kb"),
            "origin_viewers": (st.get("origin") or {}).get("viewers"),
            "origin_clients": (st.get("origin") or {}).get("clients"),
            "relay_viewers": [v1, v2],
            "haproxy_sessions": [(hap.get("relays/relay1") or {}).get("scur"),
                                 (hap.get("relays/relay2") or {}).get("scur")],
            "viewers_per_relay_core": round(sum(per_core) / len(per_core)) if per_core else None,
            "viewers_per_haproxy_core": round(n / (cpu["haproxy"] / 100.0)) if cpu.get("haproxy") else None,
        }
        # This run's processes, against everything else that kept the CPUs
        # busy apart from softirq (the machine may be shared).
        busy, irq = s.get("busy_pct") or {}, s.get("irq_pct") or {}
        ours = sum(v for v in cpu.values() if v)
        row["ours_pct"] = round(ours, 1)
        row["softirq_pct"] = round(sum(irq.values()), 1)
        row["others_pct"] = round(max(0.0, sum(busy.values()) - ours - sum(irq.values())), 1)
        row["ours_per_viewer_pct"] = round(ours / n, 4)
        loads.append(row)
    loads.sort(key=lambda r: r["viewers"])
    summary["load"] = loads
    md += ["## Load: N viewers through the balancer", "",
           "Viewers: the probe's figures over the window after its warm-up. `relay1 direct`: one more "
           "viewer straight at relay1 at the same time. Connections at the origin: its /stats "
           "`viewers` halfway through. CPU: utime + stime from /proc over the window, % of one core; "
           "softirq time (the veths' and TCP's packet work) is counted apart, per CPU. `this run's "
           "processes` is the sum of the columns before; `other work` the CPUs' busy time less "
           "those and softirq (the machine may be shared).", "",
           "| viewers | connected | fps min / median / max | p50 / p99 ms (balancer) | p50 / p99 ms (relay1 direct) | "
           "origin viewers | relay1 / relay2 viewers | CPU % origin | relay1 | relay2 | HAProxy | probe | "
           "CPU0 / CPU1 busy % (of which softirq) | this run's processes / other work, % of a core | "
           "viewers per relay core | viewers per HAProxy core | corrupt / skipped |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in loads:
        p, d, c, b, q = r["probe"], r["relay_direct"], r["cpu_pct"], r["busy_pct"] or {}, r["irq_pct"] or {}
        md.append(
            f"| {r['viewers']} | {p.get('connected')} | {f(p.get('fps_min'))} / {f(p.get('fps_median'))} / "
            f"{f(p.get('fps_max'))} | {f(p.get('p50_ms'), 3)} / {f(p.get('p99_ms'), 3)} | "
            f"{f(d.get('p50_ms'), 3)} / {f(d.get('p99_ms'), 3)} | {r['origin_viewers']} | "
            f"{r['relay_viewers'][0]} / {r['relay_viewers'][1]} | {f(c.get('origin'), 1)} | "
            f"{f(c.get('relay1'), 1)} | {f(c.get('relay2'), 1)} | {f(c.get('haproxy'), 1)} | "
            f"{f(c.get('probe'), 1)} | {f(b.get('cpu0'), 0)} / {f(b.get('cpu1'), 0)} "
            f"({f(q.get('cpu0'), 0)} / {f(q.get('cpu1'), 0)}) | {f(r['ours_pct'], 0)} / {f(r['others_pct'], 0)} | "
            f"{f(r['viewers_per_relay_core'])} | {f(r['viewers_per_haproxy_core'])} | "
            f"{p.get('corrupt')} / {p.get('skipped')} |")
    md.append("")

    # --- failover ----------------------------------------------------------------
    before = load(os.path.join(outdir, "failover-before.json")) or {}
    after = load(os.path.join(outdir, "failover-after.json")) or {}
    fp = load(os.path.join(outdir, "failover.json")) or {}
    rc = reconnect(outdir, "failover") or {}
    bst, ast = before.get("stats") or {}, after.get("stats") or {}
    hap = after.get("haproxy") or {}
    fo = {
        "viewers": fp.get("clients"), "probe": fp, "reconnect": rc,
        "relay1_viewers_before": (bst.get("relay1") or {}).get("viewers"),
        "relay2_viewers_before": (bst.get("relay2") or {}).get("viewers"),
        "relay2_viewers_after": (ast.get("relay2") or {}).get("viewers"),
        "origin_viewers_after": (ast.get("origin") or {}).get("viewers"),
        "relay1_status_after": (hap.get("relays/relay1") or {}).get("status"),
        "relay2_cpu_after": (after.get("cpu_pct") or {}).get("relay2"),
    }
    summary["failover"] = fo
    md += ["## Failover: relay1 killed (SIGKILL) under load", "",
           f"- viewers: {fo['viewers']}; on relay1 / relay2 just before the kill: "
           f"{fo['relay1_viewers_before']} / {fo['relay2_viewers_before']}",
           f"- streams lost: {rc.get('losses')}; back with a frame: {rc.get('reconnects')} "
           f"({rc.get('reconnect_attempts')} attempts); gave up: {rc.get('gave_up')}; "
           f"still without a frame at the end: {rc.get('unrecovered')} "
           f"(probe policy: {rc.get('reconnect_tries')} tries, first after {rc.get('reconnect_first_ms')} ms, "
           f"doubling to {rc.get('reconnect_max_ms')} ms)",
           f"- loss → next frame, ms: min {f(rc.get('recover_ms_min'), 1)}, p50 {f(rc.get('recover_ms_p50'), 1)}, "
           f"p90 {f(rc.get('recover_ms_p90'), 1)}, max {f(rc.get('recover_ms_max'), 1)}",
           f"- afterwards: relay2 has {fo['relay2_viewers_after']} viewers at "
           f"{f(fo['relay2_cpu_after'], 1)} % CPU, the origin {fo['origin_viewers_after']} connection(s); "
           f"HAProxy marks relay1 {fo['relay1_status_after']}",
           f"- the probe over the whole phase: fps min / median / max {f(fp.get('fps_min'))} / "
           f"{f(fp.get('fps_median'))} / {f(fp.get('fps_max'))}, corrupt {fp.get('corrupt')}, "
           f"failed connects {fp.get('failed')}, closed {fp.get('closed')}", ""]

    with open(os.path.join(outdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    text = "\n".join(md) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
