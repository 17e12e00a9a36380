"""Drives Firefox or WebKitGTK (under Xvfb) at the server and reports what
it saw, for tests/browsers.rs to judge. Measures, never asserts.

Usage:
    browser_check.py ENGINE viewer PAGE_URL SINGLE_FRAME_PAGE_URL
    browser_check.py ENGINE favicon SERVER_PORT
    browser_check.py ENGINE cors ALLOWED_STREAM_URL REFUSED_STREAM_URL
    browser_check.py ENGINE fetch MODE[,MODE...] ALLOWING_BASE_URL PLAIN_BASE_URL N

ENGINE is firefox, webkit or chromium (chromedriver). Prints one JSON object on stdout.

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
- fetch: a page from another origin whose worker reads /?action=stream
  with fetch() as Mainsail ("length") or Fluidd ("boundary") does, or
  which polls /?action=snapshot as Mainsail's adaptive mode does
  ("adaptive"), until N pictures are decoded: on a server with
  --allow-origin (ALLOWING_BASE_URL, http://127.0.0.1:PORT), then on one
  without; for each MODE (see READER_WORKER and READER_PAGE). "length"
  also reads the first server's stream with ?advance_headers=1.

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


def page_errors(browser, since=0):
    """The page's errors, and Firefox's console messages from the
    `since`th on (console_mark)."""
    errors = list(browser.evaluate("return window.__errors || ['the error hooks are gone'];"))
    if browser.name == "firefox":
        errors += browser.chrome_script(FIREFOX_CONSOLE)[since:]
    return errors


def console_mark(browser):
    """How many messages Firefox's console holds: what page_errors skips."""
    return len(browser.chrome_script(FIREFOX_CONSOLE)) if browser.name == "firefox" else 0


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
    """Serves CORS_PAGE (or `files`: path to content type and text, any
    query ignored) from 127.0.0.1 on a port of its own: another origin than
    the camera server's."""

    def __init__(self, files=None):
        files = files or {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                kind, text = files.get(path, ("text/html; charset=utf-8", CORS_PAGE))
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
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


# The fetch() readers of printer web UIs, run in a dedicated worker as they
# are, each written here for this check:
#
# - "length", as Mainsail's "MJPEG-Streamer" mode reads: everything before a
#   JPEG's start (FF D8) is the part's headers, which must carry
#   Content-Length (without it Mainsail's buffer of length -1 throws); that
#   many bytes are the JPEG, handed on once a byte after them has come;
#   decoded in the worker with createImageBitmap.
# - "boundary", as Fluidd's "MJPEG Stream" mode reads: the Content-Type must
#   contain "multipart" and boundary=B (taken as written, up to a ";"); the
#   body is read in 8 KiB BYOB reads and cut at each "--B"; a part's bytes
#   after its blank line, up to the next "--B", are the picture, which the
#   page shows through an <img> of a blob: URL.
# - "boundary-default": the same, read with the body's default reader
#   instead of a BYOB one.
#
# Each appends a cache-busting parameter of its own (timestamp=, cacheBust=).
READER_WORKER = r"""
"use strict";
const SOI0 = 0xff, SOI1 = 0xd8;

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a); out.set(b, a.length);
  return out;
}

function find(buffer, pattern, from) {
  for (let i = buffer.indexOf(pattern[0], from); i !== -1 && i + pattern.length <= buffer.length;
       i = buffer.indexOf(pattern[0], i + 1)) {
    let k = 1;
    while (k < pattern.length && buffer[i + k] === pattern[k]) k++;
    if (k === pattern.length) return i;
  }
  return -1;
}

// Sized by Content-Length, found before the JPEG's first two bytes.
async function byLength(body) {
  const reader = body.getReader();
  let head = [];            // header bytes of the part being read
  let jpeg = null, filled = 0;
  let pendingFF = false;    // a header chunk ended in FF
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    let i = 0;
    while (i < value.length) {
      if (jpeg && filled === jpeg.length) {
        // A byte after the body: the JPEG is whole.
        decode(jpeg);
        jpeg = null; filled = 0; head = [];
        continue;
      }
      if (jpeg) {
        const n = Math.min(jpeg.length - filled, value.length - i);
        jpeg.set(value.subarray(i, i + n), filled);
        filled += n; i += n;
        continue;
      }
      const b = value[i];
      const soi = pendingFF ? b === SOI1 : (b === SOI0 && i + 1 < value.length && value[i + 1] === SOI1);
      if (soi) {
        const text = String.fromCharCode(...head);
        const m = /^content-length:[ \t]*(\d+)[ \t]*\r?$/im.exec(text);
        if (!m) throw new RangeError("no Content-Length in the part headers: " + JSON.stringify(text.slice(-200)));
        jpeg = new Uint8Array(Number(m[1]));
        jpeg[0] = SOI0; filled = 1;
        if (pendingFF) head.pop(); else i += 1;
        pendingFF = false;
        continue;
      }
      pendingFF = b === SOI0 && i + 1 === value.length;
      head.push(b);
      i += 1;
    }
  }
}

let decoding = 0;
function decode(jpeg) {
  postMessage({ type: "part", bytes: jpeg.length });
  decoding++;
  createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })).then(
    (bitmap) => { decoding--; postMessage({ type: "bitmap", bitmap }, [bitmap]); },
    (e) => { decoding--; postMessage({ type: "error", message: "decode: " + e }); });
}

// Cut at each --boundary, as given in the Content-Type.
async function byBoundary(body, contentType, byob) {
  if (!contentType.includes("multipart")) throw new Error("not multipart: " + contentType);
  const m = /boundary=([^;]+)/.exec(contentType);
  if (!m) throw new Error("no boundary in " + contentType);
  const delimiter = new TextEncoder().encode("--" + m[1]);
  const blank = new Uint8Array([13, 10, 13, 10]);
  const reader = byob ? body.getReader({ mode: "byob" }) : body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { done, value } = await (byob ? reader.read(new Uint8Array(8192)) : reader.read());
    if (done) return;
    buffer = concat(buffer, value);
    for (;;) {
      const start = find(buffer, delimiter, 0);
      if (start === -1) break;
      const next = find(buffer, delimiter, start + delimiter.length);
      if (next === -1) break;
      const end = find(buffer, blank, start + delimiter.length);
      if (end !== -1 && end < next) {
        const part = buffer.slice(end + 4, next);
        postMessage({ type: "jpeg", part }, [part.buffer]);
      }
      buffer = buffer.slice(next);
    }
  }
}

onmessage = async (event) => {
  const { url, mode } = event.data;
  try {
    const u = new URL(url);
    u.searchParams.append(mode === "length" ? "timestamp" : "cacheBust", String(Date.now()));
    const response = await fetch(u, { mode: "cors" });
    const contentType = response.headers.get("content-type") || "";
    postMessage({ type: "response", status: response.status, contentType });
    if (!response.ok) throw new Error("HTTP " + response.status);
    if (mode === "length") await byLength(response.body);
    else await byBoundary(response.body, contentType, mode === "boundary");
    postMessage({ type: "error", message: "the stream ended" });
  } catch (e) {
    postMessage({ type: "error", message: (e && e.name ? e.name + ": " : "") + (e && e.message || e) });
  }
};
"""

READER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>a fetch() reader on another origin</title></head>
<body>
<img id="picture" alt="">
<script>
"use strict";
const params = new URLSearchParams(location.search);
const canvas = document.createElement("canvas");
canvas.width = 336; canvas.height = 32;
const ctx = canvas.getContext("2d", { willReadFrequently: true });
const img = document.getElementById("picture");
window.result = { response: null, parts: 0, decoded: 0, stamps: [], errors: [], sizes: [],
                  startedAt: null, firstAt: null };

// The pattern's time strip (42 blocks of 16 px, 21 a row) off a picture.
function stamp(source) {
  ctx.drawImage(source, 0, 0, 336, 32, 0, 0, 336, 32);
  const px = ctx.getImageData(0, 0, 336, 32).data;
  let value = 0;
  for (let bit = 0; bit < 42; bit++) {
    const x = (bit % 21) * 16 + 8, y = Math.floor(bit / 21) * 16 + 8, i = (y * 336 + x) * 4;
    value = value * 2 + ((px[i] + px[i + 1] + px[i + 2]) / 3 > 127 ? 1 : 0);
  }
  return value;
}

function shown(width, height, value) {
  const r = window.result;
  r.decoded++;
  if (r.firstAt === null) r.firstAt = performance.now();
  if (r.sizes.length < 5) r.sizes.push([width, height]);
  if (r.stamps[r.stamps.length - 1] !== value) r.stamps.push(value);
}

// Fluidd shows each part through an <img> of a blob: URL, one at a time.
const queue = [];
let showing = false;
function showNext() {
  if (showing || !queue.length) return;
  showing = true;
  const url = URL.createObjectURL(new Blob([queue.shift()], { type: "image/jpeg" }));
  img.onload = () => {
    createImageBitmap(img).then((bitmap) => {
      shown(bitmap.width, bitmap.height, stamp(bitmap));
      bitmap.close();
    }, (e) => window.result.errors.push("bitmap of the img: " + e)).finally(() => {
      URL.revokeObjectURL(url); showing = false; showNext();
    });
  };
  img.onerror = () => {
    window.result.errors.push("the img did not decode a part");
    URL.revokeObjectURL(url); showing = false; showNext();
  };
  img.src = url;
}

// Mainsail's "Adaptive MJPEG-Streamer" mode: an <img> (no crossOrigin) of
// the snapshot URL with bypassCache=ms, asked again once a picture has
// loaded, 10 a second less the time a request takes (smoothed).
let requestedAt = 0, requestTime = 0;
function poll() {
  const u = new URL(params.get("stream"));
  u.searchParams.append("bypassCache", String(Date.now()));
  requestedAt = performance.now();
  img.src = u;
}
function adaptive() {
  img.onload = () => {
    requestTime = requestTime * 0.2 + (performance.now() - requestedAt) * 0.8;
    img.decode().then(() => {
      const r = window.result;
      r.parts++; r.decoded++;
      if (r.firstAt === null) r.firstAt = performance.now();
      if (r.sizes.length < 5) r.sizes.push([img.naturalWidth, img.naturalHeight]);
    }, (e) => window.result.errors.push("decode: " + e)).finally(() => {
      setTimeout(poll, Math.max(0, 100 - requestTime));
    });
  };
  img.onerror = () => { window.result.errors.push("a snapshot did not load"); };
  window.result.startedAt = performance.now();
  poll();
}

addEventListener("load", () => {
  if (params.get("mode") === "adaptive") return adaptive();
  const worker = new Worker("/reader.js");
  worker.onerror = (e) => window.result.errors.push("worker: " + e.message);
  worker.onmessage = (event) => {
    const m = event.data, r = window.result;
    if (m.type === "response") { r.response = { status: m.status, contentType: m.contentType }; }
    else if (m.type === "part") { r.parts++; }
    else if (m.type === "bitmap") {
      shown(m.bitmap.width, m.bitmap.height, stamp(m.bitmap));
      m.bitmap.close();
    } else if (m.type === "jpeg") {
      r.parts++;
      if (queue.length < 4) queue.push(m.part);
      showNext();
    } else if (m.type === "error") { r.errors.push(m.message); }
  };
  window.result.startedAt = performance.now();
  worker.postMessage({ url: params.get("stream"), mode: params.get("mode") });
});
</script>
</body></html>
"""


def fetch_readers(browser, modes, allowing, plain, frames):
    """Each reader of `modes` on a page of another origin: on the server at
    `allowing` (a base URL; the server has --allow-origin) until it has
    decoded `frames` pictures or reported an error; on the one at `plain`
    (no --allow-origin) until it reports an error or decodes a picture
    (all `frames`, for "adaptive", which needs no CORS)."""
    report = {"engine": browser.name, "version": browser.version}
    pages = PageServer({"/reader.js": ("text/javascript; charset=utf-8", READER_WORKER),
                        "/reader.html": ("text/html; charset=utf-8", READER_PAGE)})
    try:
        for mode in modes:
            report[mode] = fetch_reader(browser, pages, mode, allowing, plain, frames)
        browser.navigate("about:blank")
    finally:
        pages.close()
    return report


def fetch_reader(browser, pages, mode, allowing, plain, frames):
    report = {}
    path = "/?action=snapshot" if mode == "adaptive" else "/?action=stream"
    refused = 1 if mode != "adaptive" else frames
    runs = [("allowing", allowing + path, f"window.result.decoded >= {frames}", 30),
            ("plain", plain + path, f"window.result.decoded >= {refused}", 30 if refused > 1 else 10)]
    if mode == "length":
        # Advance headers: no part carries Content-Length.
        runs.append(("advance_headers", allowing + path + "&advance_headers=1",
                     "window.result.decoded >= 1", 10))
    for name, stream, until, timeout in runs:
        query = urllib.parse.urlencode({"stream": stream, "mode": mode})
        mark = console_mark(browser)
        browser.navigate(f"http://127.0.0.1:{pages.port}/reader.html?{query}")
        browser.wait_for(f"window.result !== undefined && location.search === {json.dumps('?' + query)}",
                         timeout=10)
        browser.evaluate(HOOKS)
        start = time.monotonic()
        try:
            browser.wait_for(f"{until} || window.result.errors.length > 0", timeout=timeout)
        except webdriver.Timeout:
            pass
        result = browser.evaluate("return window.result;")
        result["waited_s"] = time.monotonic() - start
        now = time.time() * 1000
        stamps = result.pop("stamps")
        result["plausible_stamps"] = sum(1 for s in stamps if abs(now - s) < 60000)
        result["increasing"] = all(a < b for a, b in zip(stamps, stamps[1:]))
        result["page_errors"] = page_errors(browser, mark)
        report[name] = result
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
        elif check == "fetch":
            report = fetch_readers(browser, args[0].split(","), args[1], args[2], int(args[3]))
        else:
            raise SystemExit(f"unknown check {check}")
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
