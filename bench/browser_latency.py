#!/usr/bin/env python3
"""How long a frame takes from the server's pipe to the screen of a browser.

Starts the release server with its test pattern, opens the viewer page in
headless Chromium, and collects the page's window.frameAges: for each new
frame, Date.now() at the first animation frame that shows it, less the time
the pattern wrote into its timestamp strip (the moment the frame went into
the server's pipe). So an age is write-to-first-paint, rounded up to the
page's animation frame.

Each run uses a fresh server and a fresh browser profile; the framing is
chosen through the page's query (/?advance_headers=0 or 1; none: the
server's default, chosen by the User-Agent).

    cargo build --release
    python3 bench/browser_latency.py            # 25 and 90 fps, 3 framings
    python3 bench/browser_latency.py --fps 30 --seconds 5 --framings 1

Reports, never asserts. Only 127.0.0.1 is used.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
import cdp  # noqa: E402

FRAMINGS = {
    "default": ("", "server's default for a browser's <img> (advance headers)"),
    "1": ("?advance_headers=1", "advance headers: next part's headers right after each frame"),
    "0": ("?advance_headers=0", "Content-Length per part, next headers with the next frame"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", default="25,90", help="comma-separated pattern rates (default 25,90)")
    p.add_argument("--framings", default="default,1,0",
                   help="comma-separated: default, 1 (advance headers), 0 (Content-Length)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    p.add_argument("--warmup", type=float, default=2.0, help="time before measuring")
    p.add_argument("--server", default=None,
                   help="the binary (default: $CARGO_TARGET_DIR or target/, release)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to CPU 0 and Chromium to CPU 1")
    p.add_argument("--screenshot", default=None,
                   help="save a screenshot of the page from the first run here")
    return p.parse_args()


def server_binary(given):
    if given:
        return given
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "raspivid_mjpeg_server")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run cargo build --release first")
    return path


class Server:
    def __init__(self, binary, fps, pin):
        command = [binary, "--pattern", "--fps", str(fps), "-p", "0", "--bind", "127.0.0.1"]
        if pin:
            command = ["taskset", "-c", "0", *command]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stderr.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.close()
            sys.exit(f"the server did not start: {line}")
        self.port = int(match.group(1))

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.load(r)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def run(binary, fps, framing, args, screenshot=None):
    server = Server(binary, fps, pin=not args.no_pin)
    try:
        with cdp.Browser(width=800, height=600, taskset_cpu=None if args.no_pin else 1) as b:
            b.navigate(f"http://127.0.0.1:{server.port}/{FRAMINGS[framing][0]}")
            b.wait_for("window.frameAges && window.frameAges.length > 0", timeout=15)
            b.pump(args.warmup)
            # Counts the page's animation frames too: ages are read once per
            # animation frame, so their rate bounds what can be seen.
            start = b.evaluate(
                "window.rafCount = 0; (function count() { window.rafCount++;"
                " requestAnimationFrame(count); })(); window.frameAges.length"
            )
            b.pump(args.seconds)
            ages = b.evaluate(f"window.frameAges.slice({start})")
            raf = b.evaluate("window.rafCount") / args.seconds
            stats = server.stats()
            if screenshot:
                b.screenshot(screenshot)
            errors = b.errors()
            version = b.version()
    finally:
        server.close()
    # The pattern stamps each frame with its slot's time; a producer that
    # fell behind its slots (a busy CPU) writes frames later than stamped,
    # which would count as delivery delay: say so.
    behind_ms = max(0.0, (stats["uptime_s"] * fps - stats["frames_in"]) / fps * 1000)
    return ages, raf, errors, version, behind_ms, stats["frames_skipped"]


def main():
    args = parse_args()
    binary = server_binary(args.server)
    rates = [int(f) for f in args.fps.split(",")]
    framings = args.framings.split(",")
    rows = []
    version = None
    load_before = loadavg()
    screenshot = args.screenshot
    for fps in rates:
        for framing in framings:
            ages, raf, errors, version, behind_ms, skipped = run(binary, fps, framing, args, screenshot)
            screenshot = None
            if not ages:
                print(f"{fps} fps, {framing}: no frame painted", file=sys.stderr)
                continue
            row = {
                "fps": fps,
                "framing": framing,
                "painted": len(ages) / args.seconds,
                "raf": raf,
                "behind": behind_ms,
                "skipped": skipped,
                "median": statistics.median(ages),
                "p90": percentile(ages, 90),
                "p99": percentile(ages, 99),
                "min": min(ages),
                "max": max(ages),
            }
            rows.append(row)
            print(f"{fps} fps, advance_headers={framing}: {len(ages)} frames, "
                  f"median {row['median']} ms, p90 {row['p90']} ms"
                  + (f", page errors: {errors}" if errors else ""), file=sys.stderr)
    print(f"{version}, Linux {platform.release()}, "
          f"{'server on CPU 0, Chromium on CPU 1' if not args.no_pin else 'not pinned'}, "
          f"{args.seconds:g} s measured after {args.warmup:g} s; "
          f"load average {load_before} before, {loadavg()} after")
    print()
    print("| pattern fps | framing (`advance_headers`) | new frames seen/s | animation frames/s "
          "| median ms | p90 ms | p99 ms | min ms | max ms | pattern behind ms | frames skipped |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['fps']} | {r['framing']} | {r['painted']:.1f} | {r['raf']:.1f} "
              f"| {r['median']:g} "
              f"| {r['p90']:g} | {r['p99']:g} | {r['min']:g} | {r['max']:g} "
              f"| {r['behind']:.0f} | {r['skipped']} |")


if __name__ == "__main__":
    main()
