#!/usr/bin/env python3
"""On-screen lag of Firefox, WebKitGTK and Chromium showing the stream, read
off the X screen: for each frame of the test pattern, the first time its time strip
is on the Xvfb screen, less the time the pattern wrote into it (the moment
the frame went into the server's pipe).

For each engine (one browser for the whole run, in an Xvfb of its own), each
pattern rate (a fresh release server with --pattern --fps F) and each framing
(the viewer page /, /?advance_headers=0, /?advance_headers=1, in an order
that rotates with each repetition): a fresh load of the viewer page, a warm-up,
then a measured period in which this script polls the picture's 336x32 time
strip off the screen (XGetSubImage, a few hundred times a second) and records
when each new stamp first shows. It also collects the page's own frame ages
(window.frameAges: the same strip, read with createImageBitmap on each
animation frame), and checks from /stats that the server skipped no frame.

    cargo build --release
    python3 bench/browser_screen_lag.py                      # everything, ~12 min
    python3 bench/browser_screen_lag.py --engines webkit --fps 30 --reps 1

Needs what .ci/browsers-setup.sh installs, and for Chromium (not under Xvfb
anywhere else in the project) Debian's chromium and chromium-driver.

Reports, never asserts. Only 127.0.0.1 is used. The server and this poller
run on CPU 0, the browser on CPU 1 (--no-pin: anywhere).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
import webdriver  # noqa: E402

FRAMINGS = {"default": "", "0": "?advance_headers=0", "1": "?advance_headers=1"}

MARKER = """
const m = document.createElement("div");
m.style.cssText = arguments[0];
document.body.appendChild(m);
const r = document.getElementById("video").getBoundingClientRect();
return [r.left, r.top];
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="chromium,firefox,webkit")
    p.add_argument("--fps", default="30,90")
    p.add_argument("--framings", default="default,0,1")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--server", default=None)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--json", default=None, help="also append each cell as a JSON line here")
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
        self.proc = webdriver.start(command, log=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.close()
            sys.exit(f"the server did not start: {line}")
        self.port = int(match.group(1))
        self.started = time.monotonic()

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.load(r)

    def close(self):
        webdriver.stop(self.proc)


def page_viewer(stats):
    """The per-viewer figures of the newest stream (the page just loaded),
    and how many older streams the server is still sending (a browser may
    keep a left page's stream open for a while)."""
    for value in stats.values():
        if isinstance(value, list) and value and isinstance(value[0], dict) and "skipped" in value[0]:
            newest = min(value, key=lambda v: v.get("age_s", 0))
            return newest, len(value) - 1
    return None, 0


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def locate(browser, screen):
    """The picture's top left on the screen, from a marker at the viewport's."""
    left, top = browser.evaluate(MARKER, webdriver.MARKER_STYLE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        origin = webdriver.find_marker(screen, *browser.xvfb.size)
        if origin:
            return origin[0] + round(left), origin[1] + round(top)
        time.sleep(0.05)
    raise RuntimeError("the marker is not on the screen")


def measure(browser, screen, server, framing, args):
    url = f"http://127.0.0.1:{server.port}/{FRAMINGS[framing]}"
    browser.navigate(url)
    # This page (not the one before) has shown a frame: the picture is laid out.
    browser.wait_for(f"location.href === {json.dumps(url)} && window.frameAges !== undefined"
                     " && window.frameAges.length > 0", timeout=15)
    x, y = locate(browser, screen)
    time.sleep(args.warmup)
    stats_before = server.stats()
    start_ages = browser.evaluate("return window.frameAges.length;")
    first_seen = {}
    reads = invalid = backwards = 0
    newest = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        pixels = screen.grab(x, y, webdriver.STRIP_W, webdriver.STRIP_H)
        now = time.time() * 1000
        value = webdriver.read_strip(pixels, webdriver.STRIP_W * 4) if pixels else 0
        reads += 1
        if abs(now - value) > 10000:
            invalid += 1
        elif value < newest:
            backwards += 1
        elif value not in first_seen:
            first_seen[value] = now
            newest = value
        time.sleep(0.001)
    ages = browser.evaluate(f"return window.frameAges.slice({start_ages});")
    stats_after = server.stats()
    lags = [seen - stamp for stamp, seen in first_seen.items()]
    frames_in = stats_after["frames_in"] - stats_before["frames_in"]
    viewer_before, _ = page_viewer(stats_before)
    viewer_after, others = page_viewer(stats_after)
    if viewer_before and viewer_after:
        skipped = viewer_after["skipped"] - viewer_before["skipped"]
    else:
        skipped = stats_after["frames_skipped"] - stats_before["frames_skipped"]
    return {
        "lags": lags,
        "ages": ages,
        "reads": reads,
        "invalid": invalid,
        "backwards": backwards,
        "frames_in": frames_in,
        "skipped": skipped,
        "other_streams": others,
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    args = parse_args()
    binary = server_binary(args.server)
    pin = not args.no_pin
    if pin:
        os.sched_setaffinity(0, {0})
    rows = []
    load_before = loadavg()
    versions = {}
    for engine in args.engines.split(","):
        with webdriver.Engine(engine, pin=1 if pin else None) as browser:
            versions[engine] = browser.version
            screen = webdriver.Screen(browser.xvfb.display)
            try:
                for fps in [int(f) for f in args.fps.split(",")]:
                    framings = args.framings.split(",")
                    cells = {f: [] for f in framings}
                    server = Server(binary, fps, pin)
                    try:
                        for rep in range(args.reps):
                            order = framings[rep % len(framings):] + framings[:rep % len(framings)]
                            for framing in order:
                                cell = measure(browser, screen, server, framing, args)
                                cells[framing].append(cell)
                                med = statistics.median(cell["lags"]) if cell["lags"] else None
                                print(f"{engine} {fps} fps {framing} rep {rep + 1}: "
                                      f"{len(cell['lags'])} frames on screen, median {med} ms, "
                                      f"{cell['reads'] / args.seconds:.0f} reads/s, "
                                      f"invalid {cell['invalid']}, skipped {cell['skipped']}",
                                      file=sys.stderr)
                                if args.json:
                                    with open(args.json, "a") as f:
                                        f.write(json.dumps({"engine": engine, "version": browser.version,
                                                            "fps": fps, "framing": framing, "rep": rep + 1,
                                                            "date": time.strftime("%Y-%m-%d"), **cell}) + "\n")
                    finally:
                        server.close()
                    for framing in framings:
                        reps = cells[framing]
                        lags = [lag for c in reps for lag in c["lags"]]
                        ages = [a for c in reps for a in c["ages"]]
                        if not lags:
                            continue
                        rows.append({
                            "engine": engine, "fps": fps, "framing": framing,
                            "rep_medians": [statistics.median(c["lags"]) for c in reps if c["lags"]],
                            "median": statistics.median(lags), "p90": percentile(lags, 90),
                            "seen": statistics.mean(len(c["lags"]) for c in reps) / args.seconds,
                            "in_page": statistics.median(ages) if ages else float("nan"),
                            "frames_in": statistics.mean(c["frames_in"] for c in reps) / args.seconds,
                            "invalid": sum(c["invalid"] for c in reps),
                            "backwards": sum(c["backwards"] for c in reps),
                            "skipped": sum(c["skipped"] for c in reps),
                            "reads": statistics.mean(c["reads"] for c in reps) / args.seconds,
                        })
            finally:
                screen.close()
    print(f"{time.strftime('%Y-%m-%d')}; " + "; ".join(f"{e}: {v}" for e, v in versions.items())
          + f"; Linux {platform.release()}; "
          + ("server and poller on CPU 0, browser on CPU 1" if pin else "not pinned")
          + f"; {args.reps} x {args.seconds:g} s measured after {args.warmup:g} s each;"
          f" load average {load_before} before, {loadavg()} after")
    print()
    print("| engine | pattern fps | framing (`advance_headers`) | on-screen median ms (per rep) "
          "| on-screen p90 ms | in-page median ms | new frames on screen/s | frames in/s "
          "| screen reads/s | bad reads | skipped for the page |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        reps = " / ".join(f"{m:.0f}" for m in r["rep_medians"])
        print(f"| {r['engine']} | {r['fps']} | {r['framing']} | **{r['median']:.0f}** ({reps}) "
              f"| {r['p90']:.0f} | {r['in_page']:.0f} | {r['seen']:.1f} | {r['frames_in']:.1f} "
              f"| {r['reads']:.0f} | {r['invalid'] + r['backwards']} | {r['skipped']} |")


if __name__ == "__main__":
    main()
