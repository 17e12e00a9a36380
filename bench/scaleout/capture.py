#!/usr/bin/env python3
"""Records COUNT frames of an MJPEG stream into one file of JPEGs back to
back, as `mjpeg-probe source` reads them.

    python3 bench/scaleout/capture.py http://127.0.0.1:8555/video.mjpg 150 OUT.mjpg

bench/scaleout.sh records the server's own test pattern (--pattern) this
way once, so that the origin can be fed the same pictures by
`mjpeg-probe source`, which tags each frame with its send time: the
viewers' probe then measures the latency through every hop. Parts are cut
by their Content-Length, which this server sends. Gives up after 30 s.
"""

import socket
import sys
import time
import urllib.parse


def main():
    url, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=5)
    sock.sendall(f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}\r\nUser-Agent: capture\r\n\r\n".encode())
    reader = sock.makefile("rb")
    status = reader.readline()
    if b" 200 " not in status:
        raise SystemExit(f"{url}: {status!r}")
    while reader.readline() not in (b"\r\n", b""):
        pass
    frames, deadline = [], time.monotonic() + 30
    while len(frames) < count and time.monotonic() < deadline:
        length, offline = None, False
        while True:
            line = reader.readline()
            if not line:
                raise SystemExit(f"{url}: the stream ended after {len(frames)} frames")
            if line == b"\r\n" and length is not None:
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "content-length":
                length = int(value)
            if key.strip().lower() == "x-source-state":
                offline = True
        jpeg = reader.read(length)
        if not offline and jpeg[:2] == b"\xff\xd8":
            frames.append(jpeg)
    if len(frames) < count:
        raise SystemExit(f"{url}: {len(frames)} frames in 30 s")
    with open(out, "wb") as f:
        f.write(b"".join(frames))
    print(f"{count} frames, {sum(map(len, frames)) // count} bytes a frame on average")


if __name__ == "__main__":
    main()
