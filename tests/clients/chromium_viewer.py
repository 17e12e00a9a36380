"""Loads the viewer page in headless Chromium and reports what it showed.

Usage: chromium_viewer.py PAGE_URL OUT_DIR
Waits for the page to decode a few frame ages from the test pattern, takes
two screenshots of the picture some frames apart (OUT_DIR/a.png, b.png),
and prints one JSON line: whether the two pictures differ, the frame ages,
the age text on screen, and every console error the page logged.
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402

url, out = sys.argv[1], sys.argv[2]
report = {}
with cdp.Browser(width=800, height=600) as browser:
    report["version"] = browser.version()
    browser.navigate(url)
    browser.wait_for("window.frameAges && window.frameAges.length >= 3", timeout=15)
    rect = browser.evaluate(
        "(() => { const r = document.getElementById('video').getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
    )
    clip = dict(rect, scale=1)
    report["picture"] = rect
    shots = []
    for name in ("a", "b"):
        seen = browser.evaluate("window.frameAges.length")
        # Some new frames between the two shots, whatever the rate.
        browser.wait_for(f"window.frameAges.length >= {seen + 3}", timeout=10)
        data = browser.call("Page.captureScreenshot", {"format": "png", "clip": clip})["data"]
        shots.append(data)
        with open(os.path.join(out, f"{name}.png"), "wb") as f:
            f.write(base64.b64decode(data))
    report["pictures_differ"] = shots[0] != shots[1]
    browser.screenshot(os.path.join(out, "page.png"))
    report["frame_ages"] = browser.evaluate("window.frameAges")
    report["age_text"] = browser.evaluate("document.getElementById('age').textContent")
    report["natural_size"] = browser.evaluate(
        "[document.getElementById('video').naturalWidth,"
        " document.getElementById('video').naturalHeight]"
    )
    browser.pump(0.2)
    report["errors"] = browser.errors()
print(json.dumps(report))
