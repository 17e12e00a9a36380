"""Firefox and WebKitGTK under Xvfb, driven over W3C WebDriver, with nothing
beyond Python's standard library.

- Xvfb picks a free display itself (-displayfd) and listens on no TCP port.
- Firefox (Debian's firefox-esr) is driven by geckodriver, WebKitGTK by
  WebKitWebDriver (Debian's webkit2gtk-driver) running MiniBrowser. Each
  driver listens on 127.0.0.1 only.
- Every process is started here in a session of its own, with the parent-
  death signal set, and is ended by its own PID (and its process group, which
  holds the browser it started) when the Engine is closed: nothing else is
  touched, and a killed test leaves nothing running.
- Firefox is told that every origin but the loopback one is behind a proxy
  at 127.0.0.1:9, where nothing listens: it sends nothing off this machine.

    with Engine("firefox") as browser:
        browser.navigate("http://127.0.0.1:8554/")
        browser.wait_for("window.frameAges.length >= 3")
"""

import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

MINIBROWSER_DIRS = [
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.1",
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.0",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.0",
]

# Anything not on the loopback goes to a proxy that is not there.
NOWHERE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "all_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost"}

FIREFOX_PREFS = {
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 9,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 9,
    "network.proxy.socks": "127.0.0.1",
    "network.proxy.socks_port": 9,
    "network.proxy.no_proxies_on": "127.0.0.1,localhost",
    "network.proxy.allow_hijacking_localhost": False,
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.predictor.enabled": False,
    "network.prefetch-next": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.tabs.warnOnClose": False,
    "extensions.update.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "browser.newtabpage.enabled": False,
    "browser.startup.page": 0,
    # New windows open as windows, not tabs.
    "browser.link.open_newwindow": 2,
    # A page in a window that is not in front still runs its animation frames.
    "widget.windows.window_occlusion_tracking.enabled": False,
}


class Timeout(Exception):
    pass


def _child_setup():
    """In the child: a session of its own, and SIGKILL when this process dies."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, env=None, log=None, pass_fds=()):
    """Starts `command` in a session of its own; see stop()."""
    return subprocess.Popen(
        command, env=env, pass_fds=pass_fds, preexec_fn=_child_setup,
        stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )


def stop(proc, grace=5.0):
    """Ends a process started by start() and its process group (what it
    started, such as a driver's browser), by their own ids: SIGTERM, then
    SIGKILL after `grace` s. The group's id is the leader's PID, which Linux
    does not hand out again while the group has members."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for kill in (os.kill, os.killpg):
            try:
                kill(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)
    proc.wait()


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class Xvfb:
    """A virtual screen on a display number it picks."""

    def __init__(self, width=1280, height=800, log=None):
        r, w = os.pipe()
        self.proc = start(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24",
                           "-nolisten", "tcp", "-noreset"], log=log, pass_fds=(w,))
        os.close(w)
        try:
            number = b""
            deadline = time.monotonic() + 15
            while not number.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise Timeout("Xvfb did not report its display")
                chunk = os.read(r, 16)
                if not chunk:
                    raise RuntimeError("Xvfb exited")
                number += chunk
        except BaseException:
            stop(self.proc)
            raise
        finally:
            os.close(r)
        self.display = ":" + number.decode().strip()
        self.size = (width, height)

    def close(self):
        stop(self.proc)


def _http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.load(r).get("value")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            value = json.loads(raw).get("value", {})
            message = f"{value.get('error')}: {value.get('message')}"
        except ValueError:
            message = raw[:500]
        raise RuntimeError(f"{method} {url}: {e.code} {message}") from None


def version_of(program):
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


class Engine:
    """One browser, under its own Xvfb, with one WebDriver session.

    name: "firefox", "webkit" or "chromium" (for comparisons). pin: a CPU to run the browser on (taskset).
    """

    def __init__(self, name, width=1280, height=800, pin=None, workdir=None):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"browser-{name}-", dir=workdir)
        self.log_path = os.path.join(self.tmp, "driver.log")
        self.log = open(self.log_path, "wb")
        self.xvfb = self.driver = None
        self.session = None
        try:
            self.xvfb = Xvfb(width, height, log=self.log)
            env = dict(os.environ, DISPLAY=self.xvfb.display, **NOWHERE)
            for key in ("WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
                env.pop(key, None)
            env["HOME"] = self.tmp
            env["XDG_RUNTIME_DIR"] = self.tmp
            env["XDG_CACHE_HOME"] = os.path.join(self.tmp, "cache")
            env["XDG_CONFIG_HOME"] = os.path.join(self.tmp, "config")
            env["XDG_DATA_HOME"] = os.path.join(self.tmp, "data")
            self.port = _free_port()
            taskset = ["taskset", "-c", str(pin)] if pin is not None else []
            if name == "firefox":
                binary = shutil.which("firefox-esr") or shutil.which("firefox")
                if not binary:
                    raise RuntimeError("firefox-esr is missing")
                self.version = version_of(binary)
                command = [*taskset, "geckodriver", "--host", "127.0.0.1", "--port", str(self.port),
                           "--allow-system-access", "--profile-root", self.tmp]
                capabilities = {
                    "browserName": "firefox",
                    "moz:firefoxOptions": {"binary": binary, "prefs": FIREFOX_PREFS,
                                           "args": [f"--width={width}", f"--height={height}"]},
                }
            elif name == "webkit":
                binary = next((os.path.join(d, "MiniBrowser") for d in MINIBROWSER_DIRS
                               if os.path.exists(os.path.join(d, "MiniBrowser"))), None)
                if not binary:
                    raise RuntimeError("MiniBrowser is missing (Debian: libwebkit2gtk-4.1-0)")
                self.version = "WebKitGTK " + _webkitgtk_version()
                command = [*taskset, "WebKitWebDriver", f"--port={self.port}", "--host=local"]
                capabilities = {
                    "browserName": "MiniBrowser",
                    "webkitgtk:browserOptions": {"binary": binary, "args": ["--automation"]},
                }
            elif name == "chromium":
                # For comparisons (bench/): Debian's chromium and chromium-driver.
                binary = shutil.which("chromium")
                if not binary or not shutil.which("chromedriver"):
                    raise RuntimeError("chromium or chromedriver is missing")
                self.version = version_of(binary)
                command = [*taskset, "chromedriver", f"--port={self.port}",
                           "--allowed-ips=127.0.0.1"]
                capabilities = {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": binary, "args": [
                        "--no-sandbox", "--no-first-run", "--no-default-browser-check",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--disable-default-apps", "--disable-extensions",
                        "--proxy-server=http://127.0.0.1:9",  # loopback is never proxied
                        f"--user-data-dir={os.path.join(self.tmp, 'profile')}",
                        f"--window-size={width},{height}", "--window-position=0,0"]},
                }
            else:
                raise ValueError(name)
            capabilities["pageLoadStrategy"] = "none"
            capabilities["timeouts"] = {"script": 15000, "pageLoad": 15000, "implicit": 0}
            self.driver = start(command, env=env, log=self.log)
            self.base = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if _http("GET", f"{self.base}/status", timeout=2) is not None:
                        break
                except (OSError, RuntimeError):
                    pass
                if self.driver.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[len(taskset)]} did not start:\n{self.driver_log()}")
                time.sleep(0.05)
            value = _http("POST", f"{self.base}/session",
                          {"capabilities": {"alwaysMatch": capabilities}}, timeout=60)
            self.session = value["sessionId"]
            self.capabilities = value.get("capabilities", {})
            self.url = f"{self.base}/session/{self.session}"
            self.set_window_rect(0, 0, width, height)
        except BaseException:
            self.close()
            raise

    def driver_log(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.session:
            try:
                _http("DELETE", self.url, timeout=20)
            except (OSError, RuntimeError):
                pass
            self.session = None
        stop(self.driver)
        if self.xvfb:
            self.xvfb.close()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def call(self, method, path, body=None, timeout=30):
        return _http(method, f"{self.url}{path}", body, timeout=timeout)

    def navigate(self, url):
        self.call("POST", "/url", {"url": url})

    def evaluate(self, script, *args):
        """Runs a function body (use `return`) in the page."""
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, expression, timeout=10.0, every=0.02):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = self.evaluate(f"return ({expression});")
                if value:
                    return value
                last = value
            except RuntimeError as e:
                # A page that is being replaced may refuse for a moment.
                last = str(e)
            if time.monotonic() > deadline:
                raise Timeout(f"{self.name}: not within {timeout} s: {expression} (last: {last})")
            time.sleep(every)

    def set_window_rect(self, x, y, width, height):
        try:
            self.call("POST", "/window/rect", {"x": x, "y": y, "width": width, "height": height})
        except RuntimeError:
            pass

    def window(self):
        return self.call("GET", "/window")

    def new_window(self):
        """Opens a new top-level window and switches to it; returns its handle."""
        handle = self.call("POST", "/window/new", {"type": "window"})["handle"]
        self.call("POST", "/window", {"handle": handle})
        return handle

    def switch_to(self, handle):
        self.call("POST", "/window", {"handle": handle})

    def close_window(self):
        return self.call("DELETE", "/window")

    def element(self, css):
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def element_png(self, css):
        import base64
        return base64.b64decode(self.call("GET", f"/element/{self.element(css)}/screenshot"))

    def chrome_script(self, script):
        """Firefox only: runs a script in the browser's own (chrome) context."""
        base = f"{self.base}/session/{self.session}/moz/context"
        _http("POST", base, {"context": "chrome"})
        try:
            return self.evaluate(script)
        finally:
            _http("POST", base, {"context": "content"})


def _webkitgtk_version():
    for package in ("libwebkit2gtk-4.1-0", "libwebkit2gtk-4.0-37"):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                                 capture_output=True, text=True, timeout=10)
        except OSError:
            break
        if out.returncode == 0 and out.stdout:
            return out.stdout.split("-")[0]
    return "?"


# ---------------------------------------------------------------- the screen

class _XImage(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
        ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
        ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int),
        ("bitmap_pad", ctypes.c_int), ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int),
        ("bits_per_pixel", ctypes.c_int), ("red_mask", ctypes.c_ulong),
        ("green_mask", ctypes.c_ulong), ("blue_mask", ctypes.c_ulong),
        ("obdata", ctypes.c_void_p), ("f", ctypes.c_void_p * 6),
    ]


class Screen:
    """Reads pixels off an X display's root window (Xlib's XGetSubImage into
    a buffer made once): a few hundred grabs of a small area a second."""

    ZPIXMAP = 2
    ALL_PLANES = ctypes.c_ulong(0xFFFFFFFF)

    def __init__(self, display):
        self.x = ctypes.CDLL("libX11.so.6")
        self.x.XOpenDisplay.restype = ctypes.c_void_p
        self.x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x.XDefaultRootWindow.restype = ctypes.c_ulong
        self.x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self.x.XDefaultVisual.restype = ctypes.c_void_p
        self.x.XDefaultVisual.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.x.XCreateImage.restype = ctypes.POINTER(_XImage)
        self.x.XCreateImage.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                        ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                        ctypes.c_uint, ctypes.c_uint, ctypes.c_int, ctypes.c_int]
        self.x.XGetSubImage.restype = ctypes.c_void_p
        self.x.XGetSubImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int,
                                        ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                        ctypes.c_ulong, ctypes.c_int, ctypes.POINTER(_XImage),
                                        ctypes.c_int, ctypes.c_int]
        self.x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.errors = 0

        def on_error(display, event):
            self.errors += 1
            return 0
        self._handler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(on_error)
        self.x.XSetErrorHandler(self._handler)
        self.display = self.x.XOpenDisplay(display.encode())
        if not self.display:
            raise RuntimeError(f"cannot open display {display}")
        self.root = self.x.XDefaultRootWindow(self.display)
        self.x.XDisplayWidth.argtypes = self.x.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.size = (self.x.XDisplayWidth(self.display, 0), self.x.XDisplayHeight(self.display, 0))
        self.visual = self.x.XDefaultVisual(self.display, 0)
        self.images = {}

    def grab(self, x, y, width, height):
        """BGRX bytes of the area, 4 a pixel, `width` pixels a row; None if
        the area is not all on the screen."""
        if x < 0 or y < 0 or x + width > self.size[0] or y + height > self.size[1]:
            return None
        key = (width, height)
        if key not in self.images:
            buf = ctypes.create_string_buffer(width * height * 4)
            image = self.x.XCreateImage(self.display, self.visual, 24, self.ZPIXMAP, 0, buf,
                                        width, height, 32, width * 4)
            self.images[key] = (buf, image)
        buf, image = self.images[key]
        if not self.x.XGetSubImage(self.display, self.root, x, y, width, height,
                                   self.ALL_PLANES, self.ZPIXMAP, image, 0, 0):
            return None
        return buf.raw

    def close(self):
        if self.display:
            self.x.XCloseDisplay(self.display)
            self.display = None


# An 8x8 magenta square that a page fixes at its viewport's top left, so that
# the viewport can be found on the screen. Near magenta counts: Chromium's
# colour management shifts it a little.
MARKER_SIZE = 8
MARKER_STYLE = ("position:fixed;left:0;top:0;width:8px;height:8px;background:#f0f;"
                "z-index:99999")
_MAGENTA = re.compile(rb"[\xd0-\xff][\x00-\x30][\xd0-\xff]", re.S)


def find_marker(screen, width, height):
    """The screen position of the viewport's top left, from the marker, or
    None. Found from the marker's bottom right corner, so that a browser's
    frame drawn over its first row or column does not shift it. The test
    pattern's magenta bar is larger and darker."""
    grab = screen.grab(0, 0, width, height)
    if grab is None:
        return None

    def magenta(x, y):
        return 0 <= x < width and 0 <= y < height and bool(_MAGENTA.match(grab, (y * width + x) * 4))

    n = MARKER_SIZE
    for match in _MAGENTA.finditer(grab):
        if match.start() % 4:
            continue
        x, y = (match.start() // 4) % width, (match.start() // 4) // width
        if not magenta(x + n // 2, y + n // 2) or magenta(x + 2 * n, y) or magenta(x, y + 2 * n):
            continue
        right, bottom = x, y
        while magenta(right + 1, y + 1):
            right += 1
        while magenta(x + 1, bottom + 1):
            bottom += 1
        return right + 1 - n, bottom + 1 - n
    return None


# The test pattern's time strip (src/pattern.rs): 42 blocks of 16 px, 21 a
# row, most significant bit first, white for 1, at the picture's top left.
STRIP_BITS, STRIP_BLOCK, STRIP_COLUMNS = 42, 16, 21
STRIP_W, STRIP_H = STRIP_COLUMNS * STRIP_BLOCK, 2 * STRIP_BLOCK


def read_strip(pixels, row_bytes, channels=4, x0=0, y0=0):
    """The strip's value from pixel rows (the strip's corner at x0, y0)."""
    value = 0
    for bit in range(STRIP_BITS):
        x = x0 + (bit % STRIP_COLUMNS) * STRIP_BLOCK + STRIP_BLOCK // 2
        y = y0 + (bit // STRIP_COLUMNS) * STRIP_BLOCK + STRIP_BLOCK // 2
        i = y * row_bytes + x * channels
        value = value * 2 + (1 if pixels[i] + pixels[i + 1] + pixels[i + 2] > 3 * 127 else 0)
    return value


def png_top_rows(png, rows):
    """The first `rows` rows of an 8-bit RGB or RGBA PNG: (pixels, row_bytes,
    channels, width)."""
    import struct
    import zlib
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour in (2, 6), f"PNG depth {depth} colour type {colour}"
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * min(rows, height))
    out = bytearray()
    prev = bytearray(stride)
    for r in range(min(rows, height)):
        kind = raw[r * (stride + 1)]
        line = bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return bytes(out), stride, channels, width
