"""Opens an MJPEG URL with OpenCV and reads frames, as a camera script would.

Usage: opencv_read.py URL COUNT
Prints one JSON line: how long the open took, how many frames were read,
and the shapes seen. Exits 1 if the open or a read failed.
"""

import json
import sys
import time

import cv2

url, count = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
opened = capture.isOpened()
open_s = time.monotonic() - start
shapes = set()
frames = 0
while opened and frames < count:
    ok, frame = capture.read()
    if not ok:
        break
    shapes.add(str(frame.shape))
    frames += 1
capture.release()
print(json.dumps({
    "opened": opened,
    "open_s": round(open_s, 3),
    "frames": frames,
    "shapes": sorted(shapes),
    "read_s": round(time.monotonic() - start - open_s, 3),
    "backend": "FFMPEG",
}))
sys.exit(0 if opened and frames == count else 1)
