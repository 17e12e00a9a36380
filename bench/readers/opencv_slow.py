#!/usr/bin/env python3
"""An OpenCV program that processes each frame for PROCESS_MS before it
reads the next, as detection loops do: prints one JSON line with the age
of the frames it got (read from their pixels, see pixel_clock.py) after
WARMUP seconds, over SECONDS seconds.

    opencv_slow.py URL PROCESS_MS WARMUP SECONDS
    opencv_slow.py --each URL PROCESS_MS SECONDS

With --each it prints the age of every frame as it reads it, one line
each (flushed), from the first frame on, for SECONDS: for a caller that
decides itself which frames count (tests/readers.rs).
"""
import json
import sys
import time

import cv2

from pixel_clock import age_ms

each = sys.argv[1] == "--each"
if each:
    url, process, warmup, seconds = sys.argv[2], float(sys.argv[3]), 0.0, float(sys.argv[4])
else:
    url, process, warmup, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
if not cap.isOpened():
    sys.exit(f"cannot open {url}")
start = time.monotonic()
ages = []
while time.monotonic() - start < warmup + seconds:
    ok, frame = cap.read()
    if not ok:
        sys.exit("the stream ended")
    if each:
        print(age_ms(frame), flush=True)
    elif time.monotonic() - start >= warmup:
        ages.append(age_ms(frame))
    time.sleep(process / 1000)
if each:
    sys.exit(0)
ages.sort()
print(json.dumps({
    "frames": len(ages),
    "age_p50_ms": ages[len(ages) // 2],
    "age_p90_ms": ages[len(ages) * 9 // 10],
    "age_max_ms": ages[-1],
}))
