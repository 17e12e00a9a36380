#!/usr/bin/env python3
"""How soon a relay streams again after its upstream was away a while.

    python3 bench/relay_outage.py BIN SECONDS [SECONDS ...]

For each outage length: this server on its test pattern as the upstream,
a second one relaying it (`--input http://127.0.0.1:PORT/video.mjpg`);
the upstream is stopped (by its PID), left away SECONDS, started again on
the same port, and the time from its listening again to the relay's
`/stats` saying `online` is printed as one JSON line. Only 127.0.0.1.
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait(what, done, limit):
    end = time.monotonic() + limit
    while not done():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.02)


def state(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
            return json.load(r)["source"]["state"]
    except OSError:
        return None


def main():
    binary, lengths = sys.argv[1], [float(a) for a in sys.argv[2:]]
    for away in lengths:
        up_port, relay_port = free_port(), free_port()
        upstream_args = [binary, "--bind", "127.0.0.1", "-p", str(up_port), "--pattern"]
        upstream = subprocess.Popen(upstream_args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("the upstream", lambda: listening(up_port), 10)
        relay = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "-p", str(relay_port),
             "--input", f"http://127.0.0.1:{up_port}/video.mjpg"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait("the relay online", lambda: state(relay_port) == "online", 10)
            upstream.terminate()
            upstream.wait(10)
            time.sleep(away)
            upstream = subprocess.Popen(upstream_args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait("the upstream back", lambda: listening(up_port), 10)
            back = time.monotonic()
            wait("the relay online again", lambda: state(relay_port) == "online", 60)
            print(json.dumps({"away_s": away, "online_after_s": round(time.monotonic() - back, 3)}), flush=True)
        finally:
            for p in (relay, upstream):
                p.terminate()
                p.wait(10)


if __name__ == "__main__":
    main()
