"""Shows the glass-to-glass clock page full screen on an X display and runs
a probe command while it is up; reports what the page and the probe read.

Usage: glass_page.py PAGE_URL [--settle S] [--screenshot PNG] -- PROBE_COMMAND...

DISPLAY must name the X server (Xvfb) whose screen is being grabbed.
Chromium runs there headful in kiosk mode (the page fills the screen, no
browser frame), driven over the DevTools pipe of cdp.py. The script waits
until the page draws its clock (and, when it reads the stream, until it has
read at least 3 frames, for at most --settle seconds), then runs the probe
command to its end (at most its own --seconds plus 30 s), and prints one
JSON line: the page's readings in the probe's window (median, p90, count,
min, max, counts of frames not read), the probe's last stdout line parsed
as JSON, the browser version and any console errors.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402


def nearest_rank(values, q):
    if not values:
        return None
    s = sorted(values)
    rank = max(1, min(len(s), int(-(-q * len(s) // 1))))
    return s[rank - 1]


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: glass_page.py PAGE_URL [--settle S] [--screenshot PNG] -- PROBE...")
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("page")
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--screenshot")
    args = parser.parse_args(argv[:split])
    probe = argv[split + 1:]
    if "DISPLAY" not in os.environ:
        sys.exit("glass_page.py: DISPLAY is not set")
    width, height = map(int, os.environ.get("GLASS_SCREEN", "640x480").split("x"))
    # Headful, full screen: the picture must reach the X server's screen.
    cdp.FLAGS = [f for f in cdp.FLAGS if f != "--headless"] + [
        "--kiosk",
        "--test-type",  # no infobar for --no-sandbox
        "--window-position=0,0",
        "--noerrdialogs",
        "--disable-features=Translate,MediaRouter",
        "--password-store=basic",
    ]
    report = {}
    with cdp.Browser(width=width, height=height) as browser:
        report["version"] = browser.version()
        browser.navigate(args.page)
        browser.wait_for("window.glass && window.glass.drawn > 30", timeout=15)
        reads = browser.evaluate("!/[?&]read=0/.test(location.search)")
        settled = True
        if reads:
            try:
                browser.wait_for("window.glass.readings.length >= 3", timeout=args.settle)
            except cdp.Timeout:
                settled = False
        report["page_settled"] = settled
        t0 = browser.evaluate("Date.now()")
        started = time.monotonic()
        seconds = 10.0
        if "--seconds" in probe:
            seconds = float(probe[probe.index("--seconds") + 1])
        try:
            out = subprocess.run(probe, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=seconds + 30, check=False)
            report["probe_status"] = out.returncode
            lines = out.stdout.decode(errors="replace").strip().splitlines()
            try:
                report["probe"] = json.loads(lines[-1]) if lines else None
            except ValueError:
                report["probe"] = None
                report["probe_stdout"] = "\n".join(lines[-20:])
            if out.returncode != 0:
                report["probe_stderr"] = out.stderr.decode(errors="replace")[-2000:]
        except subprocess.TimeoutExpired:
            report["probe_status"] = "timeout"
            report["probe"] = None
        report["probe_wall_s"] = round(time.monotonic() - started, 3)
        t1 = browser.evaluate("Date.now()")
        if args.screenshot:
            browser.screenshot(args.screenshot)
        state = browser.evaluate(
            "JSON.stringify({readings: glass.readings, frames: glass.frames, invalid: glass.invalid,"
            " notFound: glass.notFound, unreadable: glass.unreadable, implausible: glass.implausible,"
            " drawn: glass.drawn, module: glass.module, error: glass.error})"
        )
        state = json.loads(state)
        window = [r["ms"] for r in state["readings"] if t0 <= r["t"] <= t1]
        report["page"] = {
            "reads": reads,
            "count": len(window),
            "p50_ms": nearest_rank(window, 0.5),
            "p90_ms": nearest_rank(window, 0.9),
            "min_ms": min(window) if window else None,
            "max_ms": max(window) if window else None,
            "seconds": round((t1 - t0) / 1000, 3),
            "frames_total": state["frames"],
            "invalid_total": state["invalid"],
            "not_found_total": state["notFound"],
            "unreadable_total": state["unreadable"],
            "implausible_total": state["implausible"],
            "drawn": state["drawn"],
            "module_px": state["module"],
            "error": state["error"],
        }
        browser.pump(0.2)
        # A page that shows another server's stream logs nothing; a missing
        # favicon is no error of the page.
        report["errors"] = [e for e in browser.errors() if "favicon" not in e]
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
