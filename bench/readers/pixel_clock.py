#!/usr/bin/env python3
"""A camera whose every frame shows the time it was made, in pixels.

    pixel_clock.py produce FPS SECONDS      JPEGs on stdout, FPS a second
    pixel_clock.py read JPEG_FILE           prints the frame's age in ms
    pixel_clock.py written FILE...          prints, per file, its age when
                                            written (its mtime less its clock)

The time (Unix milliseconds, low 32 bits) is drawn as 32 black or white
blocks of 20 x 20 pixels in a 640 x 480 grey frame, most significant bit
first, so it survives JPEG compression and any decoder reads it back: the
age of what a client shows is read from the pixels, not from headers.
"""
import sys
import time

import cv2
import numpy as np

BLOCK = 20
BITS = 32
TOP = 200


def draw(millis):
    img = np.full((480, 640), 128, np.uint8)
    for bit in range(BITS):
        on = (millis >> (BITS - 1 - bit)) & 1
        x = 0 + bit * BLOCK
        img[TOP:TOP + BLOCK, x:x + BLOCK] = 255 if on else 0
    # Some texture, so that frames have a camera's size.
    img[:TOP:4, :] = (np.arange(640) * 7 % 256).astype(np.uint8)
    return img


def decode(img):
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    millis = 0
    for bit in range(BITS):
        x = bit * BLOCK
        value = img[TOP + 5:TOP + BLOCK - 5, x + 5:x + BLOCK - 5].mean()
        millis = (millis << 1) | (1 if value > 128 else 0)
    return millis


def age_ms(img):
    now = int(time.time() * 1000) & 0xFFFFFFFF
    return (now - decode(img)) & 0xFFFFFFFF


def produce(fps, seconds):
    out = sys.stdout.buffer
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        millis = int(time.time() * 1000) & 0xFFFFFFFF
        ok, jpeg = cv2.imencode(".jpg", draw(millis), [cv2.IMWRITE_JPEG_QUALITY, 85])
        try:
            out.write(jpeg.tobytes())
            out.flush()
        except BrokenPipeError:
            return
        n += 1
        wait = start + n / fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(float(sys.argv[2]), float(sys.argv[3]))
    elif sys.argv[1] == "written":
        import os
        for path in sys.argv[2:]:
            img = cv2.imread(path)
            if img is None:
                continue
            written = int(os.stat(path).st_mtime * 1000) & 0xFFFFFFFF
            print((written - decode(img)) & 0xFFFFFFFF)
    else:
        print(age_ms(cv2.imread(sys.argv[2])))
