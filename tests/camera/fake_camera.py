#!/usr/bin/env python3
"""A stand-in camera for tests/camera.rs: writes JPEG frames to stdout.

Each frame is one write of a whole file, as rpicam-vid writes them. The
options make it misbehave the ways real cameras do: exit, fail at start,
stall, ignore SIGTERM. It exits quietly when its stdout is closed, even while
stalled, so that it never outlives a server that was killed. Only with
--ignore-term is it stubborn and notices only a failed write, so that a
camera a server failed to kill is left running for the tests to find. It
starts no process of its own.
"""

import argparse
import os
import select
import signal
import sys
import time

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--dir", help="JPEG files 000.jpg, 001.jpg, ... to cycle through")
parser.add_argument("--fps", type=float, default=10.0)
parser.add_argument("--exit-after", type=int, metavar="N", help="write N frames, then exit")
parser.add_argument("--exit-status", type=int, default=1, help="status for --exit-after")
parser.add_argument("--fail-at-start", action="store_true", help="complain, exit 1 at once")
parser.add_argument("--stall-after", type=int, metavar="N", help="write N frames, then nothing")
parser.add_argument("--stall-for", type=float, metavar="S", help="resume after S seconds")
parser.add_argument(
    "--ignore-term", action="store_true", help="ignore SIGTERM, and a closed stdout until a write"
)
parser.add_argument("--pidfile", help="append this process's pid, one line per start")
parser.add_argument("--stderr-line", metavar="TEXT", help="print TEXT on stderr at start")
parser.add_argument(
    "--timeline", help="append 'start T' at start and 'first T' after the first frame (monotonic s)"
)
args = parser.parse_args()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.timeline:
    with open(args.timeline, "a") as f:
        f.write(f"start {time.monotonic()}\n")
if args.pidfile:
    with open(args.pidfile, "a") as f:
        f.write(f"{os.getpid()}\n")
if args.stderr_line:
    print(args.stderr_line, file=sys.stderr, flush=True)
if args.fail_at_start:
    print("fake_camera: cannot open the camera (--fail-at-start)", file=sys.stderr, flush=True)
    sys.exit(1)
if not args.dir:
    parser.error("--dir is needed to write frames")

try:
    names = sorted(n for n in os.listdir(args.dir) if n[:3].isdigit() and n.endswith(".jpg"))
except OSError as e:
    parser.error(str(e))
frames = []
for name in names:
    with open(os.path.join(args.dir, name), "rb") as f:
        frames.append(f.read())
if not frames:
    parser.error(f"no NNN.jpg in {args.dir}")

# A pipe's write end reports POLLERR once the reader has gone, whatever the
# events asked for: waiting on it notices a closed stdout without writing.
stdout_gone = select.poll()
stdout_gone.register(1, 0)


def wait(seconds):
    """Sleeps for `seconds` (None: forever), exiting if stdout closes."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        left = 3600.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return
        if args.ignore_term:
            time.sleep(min(left, 3600.0))
        elif stdout_gone.poll(min(left, 3600.0) * 1000):
            os._exit(0)


def write_frame(jpeg):
    view = memoryview(jpeg)
    try:
        while view:
            view = view[os.write(1, view):]
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)


interval = 1.0 / args.fps
due = time.monotonic()
written = 0
while True:
    if args.exit_after is not None and written >= args.exit_after:
        sys.exit(args.exit_status)
    if args.stall_after is not None and written == args.stall_after:
        wait(args.stall_for)
        due = time.monotonic()
    write_frame(frames[written % len(frames)])
    written += 1
    if written == 1 and args.timeline:
        with open(args.timeline, "a") as f:
            f.write(f"first {time.monotonic()}\n")
    due += interval
    wait(max(0.0, due - time.monotonic()))
