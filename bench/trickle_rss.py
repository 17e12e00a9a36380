#!/usr/bin/env python3
"""The server's resident memory against the number of viewers that trickle:
each reads a little every few seconds, so it is always partway through a
frame, and 1 MB frames come in at 10 fps, every one distinct.

    python3 bench/trickle_rss.py BIN NAME N [N...] [--out FILE]

For each N: starts BIN (`--bind 127.0.0.1 -p PORT --max-clients 2000`) on
its stdin, writes 1 MB minimal JPEGs into it at 10 fps (as tests/memory.rs
makes them: SOI, an SOS header, an 8-byte counter with no FF byte, about
1,000,000 entropy bytes with no FF, EOI), waits for the first frames, takes
the idle VmRSS from /proc/PID/status, then opens N viewers 0.02-0.1 s apart.
Each sets SO_RCVBUF 4096 before connecting, sends
`GET /video.mjpg HTTP/1.1\\r\\n\\r\\n`, then reads 8 KiB every 4 s,
non-blocking. The viewers are held 25 s after the last one joins; VmRSS is
sampled every 0.5 s throughout, and /stats every 5 s. Appends one JSON line
per run to FILE (default bench/out/trickle-rss.jsonl): idle and peak RSS,
and from /stats clients_evicted, clients_timed_out and held_frame_bytes
(absent from a server before --max-held-bytes: null).

Only 127.0.0.1 is used; every loop is bounded (each run by MAX_RUN_S); the
only process ended is the server this script started, by its PID.
Reports, never asserts.
"""

import argparse
import json
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

FRAME_BYTES = 1_000_000
FPS = 10
JOIN_GAP_S = (0.02, 0.1)
READ_EVERY_S = 4.0
READ_BYTES = 8192
RCVBUF = 4096
HOLD_S = 25.0
SAMPLE_EVERY_S = 0.5
STATS_EVERY_S = 5.0
# Longest a run may take, whatever happens: 1000 joins at most 0.1 s apart
# (100 s), the hold, and the start.
MAX_RUN_S = 160.0
TICK_S = 0.01


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def get_stats(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=3) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def counter_bytes(n):
    """n as 8 base-255 digits: distinct for every frame, never FF."""
    out = bytearray(8)
    for i in range(7, -1, -1):
        out[i] = n % 255
        n //= 255
    return bytes(out)


# The entropy data after the counter: the same bytes as tests/memory.rs.
ENTROPY = bytes(((i * 7 + 13) & 0xFF) % 0xFE for i in range(FRAME_BYTES))
HEAD = bytes([0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00])
EOI = bytes([0xFF, 0xD9])


def producer(stdin, done, published):
    """Writes a distinct 1 MB frame every 1/FPS s until done or the pipe breaks."""
    start = time.monotonic()
    n = 0
    while not done.is_set():
        try:
            stdin.write(HEAD + counter_bytes(n) + ENTROPY + EOI)
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return
        n += 1
        published[0] = n
        due = start + n / FPS
        delay = due - time.monotonic()
        if delay > 0:
            done.wait(delay)


def open_trickler(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /video.mjpg HTTP/1.1\r\n\r\n")
    s.setblocking(False)
    return s


def run(binary, name, n_viewers, seed):
    port = free_port()
    rng = random.Random(seed + n_viewers)
    run_start = time.monotonic()
    deadline = run_start + MAX_RUN_S
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "-p", str(port), "--max-clients", "2000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr_tail = []

    def drain_stderr():
        for line in server.stderr:
            stderr_tail.append(line.decode(errors="replace").rstrip())
            del stderr_tail[:-20]

    threading.Thread(target=drain_stderr, daemon=True).start()
    done = threading.Event()
    published = [0]
    feeder = threading.Thread(target=producer, args=(server.stdin, done, published), daemon=True)
    feeder.start()

    viewers = []  # [socket or None, next read time]
    closed_by_server = 0
    connect_failures = 0
    bytes_read = 0
    samples = []  # [seconds since the first join, RSS KiB, viewers open]
    stats_samples = []
    result = None
    try:
        # The first frames: frames_in from /stats, bounded.
        first_by = time.monotonic() + 10
        while time.monotonic() < first_by:
            st = get_stats(port)
            if st and st.get("frames_in", 0) >= 3:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("no frame reached the server in 10 s")
        time.sleep(1.0)
        idle = vm_rss_kib(server.pid)
        peak = idle

        t0 = time.monotonic()
        next_join = t0
        joined_all_at = t0 if n_viewers == 0 else None
        next_sample = t0
        next_stats = t0 + STATS_EVERY_S
        chunk = bytearray(READ_BYTES)
        while time.monotonic() < deadline:
            now = time.monotonic()
            if joined_all_at is not None and now >= joined_all_at + HOLD_S:
                break
            if len(viewers) < n_viewers and now >= next_join:
                try:
                    viewers.append([open_trickler(port), now + READ_EVERY_S])
                except OSError:
                    connect_failures += 1
                    viewers.append([None, 0.0])
                next_join = now + rng.uniform(*JOIN_GAP_S)
                if len(viewers) == n_viewers:
                    joined_all_at = now
            for v in viewers:
                s = v[0]
                if s is None or now < v[1]:
                    continue
                v[1] += READ_EVERY_S
                try:
                    got = s.recv_into(chunk, READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError:
                    got = 0
                if got == 0:
                    closed_by_server += 1
                    s.close()
                    v[0] = None
                else:
                    bytes_read += got
            if now >= next_sample:
                rss = vm_rss_kib(server.pid)
                if rss is None:
                    raise RuntimeError("the server is gone")
                peak = max(peak, rss)
                open_now = sum(1 for v in viewers if v[0] is not None)
                samples.append([round(now - t0, 2), rss, open_now])
                next_sample += SAMPLE_EVERY_S
            if now >= next_stats:
                st = get_stats(port)
                if st:
                    stats_samples.append(
                        {
                            "t": round(now - t0, 2),
                            "clients": st.get("clients"),
                            "held_frame_bytes": st.get("held_frame_bytes"),
                            "clients_evicted": st.get("clients_evicted"),
                            "clients_timed_out": st.get("clients_timed_out"),
                        }
                    )
                next_stats += STATS_EVERY_S
            time.sleep(TICK_S)
        final = get_stats(port) or {}
        held = [s["held_frame_bytes"] for s in stats_samples if s["held_frame_bytes"] is not None]
        result = {
            "server": name,
            "binary": binary,
            "viewers": n_viewers,
            "frame_bytes": len(HEAD) + 8 + FRAME_BYTES + len(EOI),
            "fps": FPS,
            "idle_rss_kib": idle,
            "peak_rss_kib": peak,
            "peak_minus_idle_mib": round((peak - idle) / 1024, 1),
            "end_rss_kib": samples[-1][1] if samples else idle,
            "clients_evicted": final.get("clients_evicted"),
            "clients_timed_out": final.get("clients_timed_out"),
            "held_frame_bytes": final.get("held_frame_bytes"),
            "held_frame_bytes_max_sampled": max(held) if held else None,
            "clients_at_end": final.get("clients"),
            "clients_total": final.get("clients_total"),
            "frames_in": final.get("frames_in"),
            "frames_published": published[0],
            "viewers_closed_by_server": closed_by_server,
            "connect_failures": connect_failures,
            "bytes_read_by_viewers": bytes_read,
            "join_s": round((joined_all_at or time.monotonic()) - t0, 1),
            "hold_s": HOLD_S,
            "hit_run_cap": time.monotonic() >= deadline,
            "rss_samples": samples,
            "stats_samples": stats_samples,
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    finally:
        for v in viewers:
            if v[0] is not None:
                v[0].close()
        done.set()
        feeder.join(timeout=5)
        try:
            server.stdin.close()
        except OSError:
            pass
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
    if result is None:
        print("\n".join(stderr_tail), file=sys.stderr)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("name")
    ap.add_argument("counts", nargs="+", type=int)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "trickle-rss.jsonl"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if max(args.counts) > 1000:
        ap.error("at most 1000 viewers")
    # 1000 viewers and the server's as many: the server inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for n in args.counts:
        r = run(os.path.abspath(args.binary), args.name, n, args.seed)
        if r is None:
            print(f"{args.name} N={n}: failed", file=sys.stderr)
            continue
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(
            f"{args.name} N={n}: RSS idle {r['idle_rss_kib']} KiB, peak {r['peak_rss_kib']} KiB "
            f"(+{r['peak_minus_idle_mib']} MiB); evicted {r['clients_evicted']}, "
            f"timed out {r['clients_timed_out']}, held {r['held_frame_bytes']}; "
            f"closed seen {r['viewers_closed_by_server']}, join {r['join_s']} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
