#!/usr/bin/env python3
"""The camera's lifecycle, timed: an on-demand start and a restart.

    python3 bench/camera.py [--trials 10] [--bin target/release/raspivid_mjpeg_server]

The camera is tests/camera/fake_camera.py writing 640x480 JPEGs at 30 fps;
it notes on a timeline when its interpreter is up and when its first frame
is written (CLOCK_MONOTONIC, which this script shares). So each figure
splits into the server's share and the camera's own start.

On demand (`--on-demand --linger 1`), per trial, from the viewer's connect:
to the first byte (the "starting camera" placeholder), to the camera process
running, to its first frame written, and to that frame at the viewer.
Restart (`--exit-after 90`): the gap a viewer sees between the last frame of
one run and the first of the next, split into the server's backoff and the
camera's start. Medians; nothing is asserted. Traffic stays on 127.0.0.1.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAKE = os.path.join(ROOT, "tests", "camera", "fake_camera.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def wait_until(what, cond, limit=15.0):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting until {what}")
        time.sleep(0.01)


class Parts:
    """Reads a multipart stream with Content-Length parts: (time, real)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.sendall(b"GET /video.mjpg HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n")
        self.buf = b""
        self.first_byte = None
        self._until(b"\r\n\r\n")
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]

    def _more(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        self.buf += chunk

    def _until(self, marker):
        while marker not in self.buf:
            self._more()

    def next(self):
        """The time a part's last byte came, and whether it is the camera's."""
        self._until(b"\r\n\r\n")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if head.startswith(b"--"):
            head = head.split(b"\r\n", 1)[1] if b"\r\n" in head else b""
        fields = dict(
            line.split(b": ", 1) for line in head.split(b"\r\n") if b": " in line
        )
        length = int(fields[b"Content-Length"])
        while len(self.buf) < length + 2:
            self._more()
        self.buf = self.buf[length + 2 :]
        return time.monotonic(), b"X-Source-State" not in fields

    def close(self):
        self.s.close()


def timeline(path):
    events = []
    if os.path.exists(path):
        for line in open(path):
            kind, t = line.split()
            events.append((kind, float(t)))
    return events


def start_server(binary, port, args):
    return subprocess.Popen(
        ["taskset", "-c", "0", binary, "-p", str(port), "--bind", "127.0.0.1"] + args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def on_demand(binary, frames, trials, work):
    port, line = free_port(), os.path.join(work, "ondemand.timeline")
    camera = f"taskset -c 1 python3 {FAKE} --dir {frames} --fps 30 --timeline {line}"
    server = start_server(binary, port, ["--on-demand", "--linger", "1", "--exec", camera])
    rows = []
    try:
        wait_until("the server answers", lambda: _answers(port))
        for _ in range(trials):
            wait_until("the camera is stopped", lambda: stopped(get_json(port, "/stats")["source"]))
            before = len(timeline(line))
            t0 = time.monotonic()
            viewer = Parts(port)
            first_part = None
            while True:
                at, real = viewer.next()
                first_part = first_part or at
                if real:
                    break
            viewer.close()
            events = timeline(line)[before:]
            if not any(k == "start" for k, _ in events):
                sys.exit(f"trial {len(rows)}: the camera did not start for the viewer")
            start = next(t for k, t in events if k == "start")
            first = next(t for k, t in events if k == "first")
            rows.append({
                "connect_to_first_byte_ms": (viewer.first_byte - t0) * 1e3,
                "connect_to_placeholder_ms": (first_part - t0) * 1e3,
                "connect_to_camera_running_ms": (start - t0) * 1e3,
                "camera_own_start_ms": (first - start) * 1e3,
                "camera_write_to_viewer_ms": (at - first) * 1e3,
                "connect_to_first_camera_frame_ms": (at - t0) * 1e3,
            })
    finally:
        server.terminate()
        server.wait(10)
    return rows


def stopped(source):
    """The camera is down and its process gone."""
    return source["state"] == "stopped" and source["pid"] is None


def _answers(port):
    try:
        get_json(port, "/stats")
        return True
    except OSError:
        return False


def restart(binary, frames, seconds, work):
    port, line = free_port(), os.path.join(work, "restart.timeline")
    camera = f"taskset -c 1 python3 {FAKE} --dir {frames} --fps 30 --exit-after 90 --timeline {line}"
    server = start_server(binary, port, ["--exec", camera])
    gaps = []
    try:
        wait_until("the server answers", lambda: _answers(port))
        viewer = Parts(port)
        last_real = None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            at, real = viewer.next()
            if real:
                if last_real is not None and at - last_real > 0.2:
                    gaps.append((last_real, at))
                last_real = at
        viewer.close()
    finally:
        server.terminate()
        server.wait(10)
    starts = [t for k, t in timeline(line) if k == "start"]
    firsts = [t for k, t in timeline(line) if k == "first"]
    rows = []
    for before, after in gaps:
        start = next((t for t in starts if before < t < after), None)
        first = next((t for t in firsts if before < t <= after), None)
        if start is None or first is None:
            continue
        rows.append({
            "gap_ms": (after - before) * 1e3,
            "last_frame_to_camera_start_ms": (start - before) * 1e3,
            "camera_own_start_ms": (first - start) * 1e3,
            "camera_write_to_viewer_ms": (after - first) * 1e3,
        })
    return rows


def medians(rows):
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]} if rows else {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--bin", default=os.path.join(target, "release", "raspivid_mjpeg_server"))
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--restart-seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        frames = os.path.join(work, "frames")
        os.mkdir(frames)
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30",
             "-frames:v", "5", "-q:v", "5", os.path.join(frames, "%03d.jpg")],
            check=True,
        )
        started = on_demand(args.bin, frames, args.trials, work)
        restarts = restart(args.bin, frames, args.restart_seconds, work)
    print(json.dumps({"on_demand": {"trials": len(started), "median": medians(started)},
                      "restart": {"gaps": len(restarts), "median": medians(restarts)}}, indent=1))


if __name__ == "__main__":
    main()
