"""Drives Firefox or WebKitGTK (under Xvfb) at the server and reports what
it saw, for tests/browsers.rs to judge. Measures, never asserts.

Usage:
    browser_check.py ENGINE viewer PAGE_URL SINGLE_FRAME_PAGE_URL
    browser_check.py ENGINE favicon SERVER_PORT
    browser_check.py ENGINE cors ALLOWED_STREAM_URL REFUSED_STREAM_URL

ENGINE is firefox or webkit. Prints one JSON object on stdout.

- viewer: the viewer page PAGE_URL (a server with the test pattern):
  whether the page reaches `load`, frame ages, the time strip read off the
  screen a few times (is the picture on screen moving?), the age readout
  over 2 s, a second window on the same page (how long until its picture
  and its connection), then the page of a server that has exactly one frame
  (does that frame show without waiting for another?), and every page error
  that could be read.
- favicon: /video.mjpg opened directly, through a counting proxy in front
  of the server, for 5 s: every request path the browser sent.
- cors: a page from another origin (an HTTP server here on 127.0.0.1) with
  a crossOrigin="anonymous" <img> of each stream URL, read back through
  createImageBitmap and getImageData (which fail if the picture is tainted).

Every wait is bounded; traffic goes to 127.0.0.1 only.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webdriver  # noqa: E402

# Installed in each page (and again after each navigation): what the page
# throws or logs as an error, which WebKit gives WebDriver no other way to read.
HOOKS = """
if (!window.__errors) {
  window.__errors = [];
  addEventListener("error", (e) => {
    if (e instanceof ErrorEvent) window.__errors.push("error: " + e.message + " at " + e.filename + ":" + e.lineno);
  });
  addEventListener("unhandledrejection", (e) => window.__errors.push("unhandled rejection: " + e.reason));
  for (const level of ["error", "warn"]) {
    const original = console[level].bind(console);
    console[level] = (...args) => { window.__errors.push("console." + level + ": " + args.join(" ")); original(...args); };
  }
}
return true;
"""

# Firefox's own console, from its chrome context: every script error and
# warning of a page from the server, and what the page logged. Scripts this
# checker runs through WebDriver have a null principal ("moz-nullprincipal:");
# on a loaded machine Firefox may stop one of them for its time ("Script
# terminated by timeout"), which says nothing of the page.
FIREFOX_CONSOLE = """
const out = [];
for (const m of Services.console.getMessageArray() || []) {
  if (m instanceof Ci.nsIScriptError) {
    if (m.isFromChromeContext || /^(chrome|resource|moz-extension|moz-nullprincipal):/.test(m.sourceName || "")) continue;
    if (m.flags & Ci.nsIScriptError.infoFlag) continue;
    out.push(`${m.flags & 1 ? "warning" : "error"} [${m.category}] ${m.errorMessage} at ${m.sourceName}:${m.lineNumber}`);
  } else if (m.wrappedJSObject && m.wrappedJSObject.level) {
    const c = m.wrappedJSObject;
    if (c.level === "error" || c.level === "warn") out.push(`console.${c.level}: ${c.arguments}`);
  }
}
return out;
"""

# A 4x4 magenta square fixed at the viewport's top left: where it is on the
# screen tells where the page is.
MARKER = """
const m = document.createElement("div");
m.id = "__marker";
m.style.cssText = arguments[1];
document.body.appendChild(m);
const r = document.getElementById(arguments[0]).getBoundingClientRect();
return [r.left, r.top, r.width, r.height];
"""


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.load(r)


def stream_viewers(port):
    """How many streams the server is sending."""
    viewers = stats(port).get("viewers")
    return len(viewers) if isinstance(viewers, list) else int(viewers)


def screen_stamps(browser, element_id, seconds):
    """The pattern's time strip read off the screen for `seconds`: the
    distinct plausible values, in the order they appeared."""
    left, top, _, _ = browser.evaluate(MARKER, element_id, webdriver.MARKER_STYLE)
    screen = webdriver.Screen(browser.xvfb.display)
    try:
        deadline = time.monotonic() + 5
        origin = None
        while origin is None:
            origin = webdriver.find_marker(screen, *browser.xvfb.size)
            if origin is None:
                if time.monotonic() > deadline:
                    return {"error": "the page's marker is not on the screen"}
                time.sleep(0.05)
        x, y = origin[0] + round(left), origin[1] + round(top)
        seen, reads = [], 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pixels = screen.grab(x, y, webdriver.STRIP_W, webdriver.STRIP_H)
            value = webdriver.read_strip(pixels, webdriver.STRIP_W * 4) if pixels else 0
            reads += 1
            if abs(time.time() * 1000 - value) < 60000 and (not seen or seen[-1] != value):
                seen.append(value)
            time.sleep(0.005)
        return {"at": [x, y], "reads": reads, "stamps": seen}
    finally:
        screen.close()
        browser.evaluate("document.getElementById('__marker').remove(); return true;")


def page_errors(browser):
    errors = list(browser.evaluate("return window.__errors || ['the error hooks are gone'];"))
    if browser.name == "firefox":
        errors += browser.chrome_script(FIREFOX_CONSOLE)
    return errors


def viewer(browser, page, single_page):
    report = {"engine": browser.name, "version": browser.version}
    port = urllib.parse.urlsplit(page).port
    start = time.monotonic()
    browser.navigate(page)
    # The viewer's script has run (this is no longer the previous page)...
    browser.wait_for("window.frameAges !== undefined", timeout=10)
    browser.evaluate(HOOKS)
    # ...and the page fires load: WebKit never does while a multipart <img>
    # loads, so the page starts its stream after load.
    browser.wait_for("document.readyState === 'complete'", timeout=10)
    report["load_s"] = time.monotonic() - start
    browser.wait_for("window.frameAges.length >= 3", timeout=10)
    report["first_frame_ms"] = browser.evaluate(
        "return window.firstFrameAt - window.streamRequestedAt;")
    report["stream_src"] = browser.evaluate("return document.getElementById('video').src;")
    report["natural_size"] = browser.evaluate(
        "const v = document.getElementById('video'); return [v.naturalWidth, v.naturalHeight];")

    report["screen"] = screen_stamps(browser, "video", 1.0)

    # The readout over 2 s.
    before = browser.evaluate(
        "return [window.frameAges.length, document.getElementById('age').textContent];")
    time.sleep(2)
    after = browser.evaluate(
        "return [window.frameAges.length, document.getElementById('age').textContent];")
    report["age_texts"] = [before[1], after[1]]
    report["new_ages_in_2_s"] = after[0] - before[0]
    report["frame_ages"] = browser.evaluate("return window.frameAges.slice(-40);")

    # A second window on the same page while the first keeps its stream.
    first = browser.call("GET", "/window")
    viewers_before = stream_viewers(port)
    browser.new_window()
    start = time.monotonic()
    browser.navigate(page)
    picture = connected = None
    deadline = start + 10
    while (picture is None or connected is None) and time.monotonic() < deadline:
        now = time.monotonic()
        try:
            if picture is None and browser.evaluate(
                    "const v = document.getElementById('video');"
                    " return !!v && v.naturalWidth > 0;"):
                picture = now - start
        except RuntimeError:
            pass
        if connected is None and stream_viewers(port) > viewers_before:
            connected = now - start
        time.sleep(0.02)
    report["second_window"] = {"picture_s": picture, "connected_s": connected,
                               "viewers": stream_viewers(port)}
    browser.evaluate(HOOKS)
    # (Firefox's console, read below, has every window's.)
    second_errors = browser.evaluate("return window.__errors || [];")
    browser.close_window()
    browser.switch_to(first)
    seen = browser.evaluate("return window.frameAges.length;")
    try:
        browser.wait_for(f"window.frameAges.length >= {seen + 3}", timeout=5)
        report["first_window_live_after"] = True
    except webdriver.Timeout:
        report["first_window_live_after"] = False
    report["errors"] = page_errors(browser) + second_errors

    # A server with exactly one frame: it must show without a second one.
    browser.navigate(single_page)
    browser.wait_for(f"location.href === {json.dumps(single_page)} && window.frameAges !== undefined",
                     timeout=10)
    browser.evaluate(HOOKS)
    try:
        browser.wait_for("window.firstFrameAt !== null", timeout=5)
        report["single_frame_ms"] = browser.evaluate(
            "return window.firstFrameAt - window.streamRequestedAt;")
    except webdriver.Timeout:
        report["single_frame_ms"] = None
    report["single_frame_natural_width"] = browser.evaluate(
        "return document.getElementById('video').naturalWidth;")
    report["errors"] += page_errors(browser)
    return report


class CountingProxy:
    """Forwards 127.0.0.1:port to the server and records each request's path."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.requests = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.open = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, source, sink, requests):
        pending = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if requests:
                    # Requests here have no bodies: each ends at a blank line.
                    pending += data
                    while b"\r\n\r\n" in pending:
                        head, pending = pending.split(b"\r\n\r\n", 1)
                        line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                        with self.lock:
                            self.requests.append(line)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (sink, source):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.open = False
        self.listener.close()


def favicon(browser, server_port):
    report = {"engine": browser.name, "version": browser.version}
    proxy = CountingProxy(server_port)
    try:
        browser.navigate(f"http://127.0.0.1:{proxy.port}/video.mjpg")
        start = time.monotonic()
        browser.wait_for("document.images.length > 0 && document.images[0].naturalWidth > 0",
                         timeout=10)
        # The picture is up: now what it asks for while it plays.
        time.sleep(max(0.0, 5.0 - (time.monotonic() - start)))
        report["natural_width"] = browser.evaluate("return document.images[0].naturalWidth;")
        report["seconds"] = time.monotonic() - start
        browser.navigate("about:blank")
        browser.wait_for("document.readyState === 'complete'", timeout=10)
        time.sleep(0.2)
        with proxy.lock:
            report["requests"] = list(proxy.requests)
    finally:
        proxy.close()
    report["favicon_requests"] = sum(1 for r in report["requests"] if " /favicon.ico" in r)
    report["stream_requests"] = sum(1 for r in report["requests"] if " /video.mjpg" in r)
    return report


CORS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body>
<img id="picture" crossorigin="anonymous" alt="">
<script>
"use strict";
const img = document.getElementById("picture");
const canvas = document.createElement("canvas");
canvas.width = 336; canvas.height = 32;
const ctx = canvas.getContext("2d", { willReadFrequently: true });
window.result = { stamps: [], error: null, errorEvent: false };
img.addEventListener("error", () => { window.result.errorEvent = true; });
addEventListener("load", () => {
  const stream = new URL(new URLSearchParams(location.search).get("stream"));
  stream.searchParams.set("load", Date.now());
  img.src = stream;
});
let reading = false;
function tick() {
  requestAnimationFrame(tick);
  if (reading || img.naturalWidth < 336) return;
  reading = true;
  createImageBitmap(img, 0, 0, 336, 32).then((bitmap) => {
    reading = false;
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    let px;
    try { px = ctx.getImageData(0, 0, 336, 32).data; } catch (e) { window.result.error = e.name; return; }
    let value = 0;
    for (let bit = 0; bit < 42; bit++) {
      const x = (bit % 21) * 16 + 8, y = Math.floor(bit / 21) * 16 + 8, i = (y * 336 + x) * 4;
      value = value * 2 + ((px[i] + px[i + 1] + px[i + 2]) / 3 > 127 ? 1 : 0);
    }
    const s = window.result.stamps;
    if (s[s.length - 1] !== value) s.push(value);
  }, (e) => { reading = false; window.result.error = String(e); });
}
requestAnimationFrame(tick);
</script>
</body></html>
"""


class PageServer:
    """Serves CORS_PAGE from 127.0.0.1 on a port of its own."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = CORS_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def cors(browser, allowed, refused):
    report = {"engine": browser.name, "version": browser.version}
    pages = PageServer()
    try:
        for name, stream in (("allowed", allowed), ("refused", refused)):
            query = urllib.parse.urlencode({"stream": stream})
            browser.navigate(f"http://127.0.0.1:{pages.port}/page.html?{query}")
            browser.wait_for(f"window.result !== undefined && location.search === {json.dumps('?' + query)}",
                             timeout=10)
            browser.evaluate(HOOKS)
            browser.wait_for("document.readyState === 'complete'", timeout=10)
            try:
                browser.wait_for("window.result.stamps.length >= 3 || window.result.error"
                                 " || window.result.errorEvent", timeout=5)
            except webdriver.Timeout:
                pass
            result = browser.evaluate(
                "const i = document.getElementById('picture');"
                " return Object.assign({naturalWidth: i.naturalWidth}, window.result);")
            now = time.time() * 1000
            result["plausible_stamps"] = sum(1 for s in result["stamps"] if abs(now - s) < 60000)
            result["page_errors"] = page_errors(browser) if name == "allowed" else []
            report[name] = result
    finally:
        pages.close()
    return report


def main():
    engine, check, *args = sys.argv[1:]
    # Bounded as a whole; SIGTERM (from the test, on its own timeout) and
    # SIGALRM both unwind through the `with`, which ends what was started.
    def give_up(signum, frame):
        raise SystemExit(f"browser_check.py: signal {signum}")
    signal.signal(signal.SIGTERM, give_up)
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(120)
    with webdriver.Engine(engine) as browser:
        if check == "viewer":
            report = viewer(browser, *args)
        elif check == "favicon":
            report = favicon(browser, int(args[0]))
        elif check == "cors":
            report = cors(browser, *args)
        else:
            raise SystemExit(f"unknown check {check}")
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
