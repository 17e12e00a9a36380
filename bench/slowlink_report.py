"""Markdown tables from bench/slowlink.sh's results.jsonl.

    python3 bench/slowlink_report.py OUTDIR/results.jsonl
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def main():
    rows = load(sys.argv[1])
    runs = {}
    for r in rows:
        key = (r["server"], r["rate_mbit"], r["max_queued"])
        runs.setdefault(key, {})[r["role"]] = r

    print("| server | slow link | slow p50 ms | slow p99 ms | slow fps | loopback p50 ms | loopback p99 ms | loopback fps |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (server, rate, maxq), roles in runs.items():
        if maxq is not None:
            continue
        slow = roles.get("slow", {})
        fast = roles.get("fast") or roles.get("alone") or {}
        link = "none (loopback alone)" if rate is None else f"{rate:g} Mbit/s"
        print(f"| {server} | {link} | {fmt(slow.get('p50_ms'))} | {fmt(slow.get('p99_ms'))} | "
              f"{fmt(slow.get('fps_median'), 1)} | {fmt(fast.get('p50_ms'), 1)} | "
              f"{fmt(fast.get('p99_ms'), 1)} | {fmt(fast.get('fps_median'), 1)} |")

    sweep = [(k, v) for k, v in runs.items() if k[2] is not None]
    if sweep:
        print()
        print("| --max-queued-bytes | slow link | slow p50 ms | slow p99 ms | slow fps | loopback p50 ms | loopback fps |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for (server, rate, maxq), roles in sorted(sweep, key=lambda kv: kv[0][2]):
            slow = roles.get("slow", {})
            fast = roles.get("fast", {})
            print(f"| {maxq} | {rate:g} Mbit/s | {fmt(slow.get('p50_ms'))} | {fmt(slow.get('p99_ms'))} | "
                  f"{fmt(slow.get('fps_median'), 1)} | {fmt(fast.get('p50_ms'), 1)} | "
                  f"{fmt(fast.get('fps_median'), 1)} |")

    bad = [r for r in rows if r.get("corrupt") or r.get("error")]
    for r in bad:
        print(f"\nwarning: {r['server']} {r['rate_mbit']} {r['role']}: "
              f"corrupt={r.get('corrupt')} error={r.get('error')}", file=sys.stderr)


if __name__ == "__main__":
    main()
