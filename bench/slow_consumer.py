#!/usr/bin/env python3
"""A consumer that reads slower than the camera writes, as an OpenCV loop or
an NVR does: it takes one whole part, then works for 1/RATE s before the
next read. Prints the age of each part it took (now - the part's
X-Timestamp) as one JSON line: p50, p90, max in ms, and frames taken.

    bench/slow_consumer.py URL RATE SECONDS [WARMUP]

RATE 0 reads as fast as it can. Only 127.0.0.1 URLs are meant.
"""
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def parts(sock):
    """Yields (headers, jpeg) for each part, sized by Content-Length."""
    buf = b""

    def fill(n):
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk

    # The response head.
    while b"\r\n\r\n" not in buf:
        fill(len(buf) + 1)
    buf = buf[buf.index(b"\r\n\r\n") + 4:]
    while True:
        while b"\r\n\r\n" not in buf:
            fill(len(buf) + 1)
        end = buf.index(b"\r\n\r\n")
        head = buf[:end].decode("latin-1")
        buf = buf[end + 4:]
        headers = {}
        for line in head.split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        n = int(headers["content-length"])
        fill(n)
        jpeg, buf = buf[:n], buf[n:]
        yield headers, jpeg


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def main():
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    warmup = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    target = u.path + ("?" + u.query if u.query else "")
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    start = time.monotonic()
    ages = []
    taken = 0
    for headers, _ in parts(sock):
        now = time.monotonic()
        if now - start >= warmup + seconds:
            break
        if now - start >= warmup and "x-source-state" not in headers:
            ages.append((time.time() - float(headers["x-timestamp"])) * 1000)
            taken += 1
        if rate > 0:
            time.sleep(1 / rate)
    sock.close()
    print(json.dumps({
        "rate": rate, "frames": taken, "fps": round(taken / seconds, 1),
        "age_p50_ms": round(quantile(ages, 0.5), 1),
        "age_p90_ms": round(quantile(ages, 0.9), 1),
        "age_max_ms": round(max(ages), 1),
    }))


if __name__ == "__main__":
    main()
