#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/{splitter,http_request}/.

The seeds are committed; this script only documents how they were made and
remakes them. Real JPEGs come from ffmpeg's testsrc2 at 64x48; progressive
and restart-interval JPEGs from OpenCV when it is installed (otherwise
those seeds are left as they are). The `crash-*` and `min-*` seeds in the
same directories do not come from here: see docs/FUZZING.md.

A splitter seed is a header, then the byte stream (see
fuzz_targets/splitter.rs): two bytes of cap, a byte of pattern length,
the chunk sizes.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITTER = os.path.join(HERE, "corpus", "splitter")
HTTP = os.path.join(HERE, "corpus", "http_request")


def header(cap=None, chunks=(255,)):
    """cap None: 1 MiB. chunks: the sizes minus one, at most 8."""
    c = 0x8000 if cap is None else cap
    assert c <= 0xFFFF and 1 <= len(chunks) <= 8
    return c.to_bytes(2, "little") + bytes([len(chunks) - 1]) + bytes(chunks)


def ffmpeg_frames(pix_fmt="yuvj420p", frames=3, q=None):
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
           "-i", "testsrc2=size=64x48:rate=25", "-frames:v", str(frames),
           "-pix_fmt", pix_fmt]
    if q is not None:
        cmd += ["-q:v", str(q)]
    cmd += ["-f", "mjpeg", "-"]
    stream = subprocess.run(cmd, check=True, capture_output=True).stdout
    return split_naive(stream)


def split_naive(stream):
    """ffmpeg's MJPEG output has no EXIF, so FF D9 ends each frame."""
    frames = []
    while stream:
        end = stream.index(b"\xff\xd9") + 2
        frames.append(stream[:end])
        stream = stream[end:]
    return frames


def opencv_jpeg(**flags):
    try:
        import cv2
        import numpy as np
    except ImportError:
        return None
    y, x = np.mgrid[0:48, 0:64]
    img = np.dstack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256]).astype(np.uint8)
    params = []
    for key, value in flags.items():
        params += [getattr(cv2, key), value]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def exif_wrapped(frame, thumbnail):
    """`frame` with an APP1 EXIF segment holding `thumbnail` (its FF D9 must not end the frame)."""
    body = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body
    return frame[:2] + app1 + frame[2:]


def tiny(entropy=b"\x01\x12\xff\x00\x34\xff\xd3\x56\xff\xff\x00\x01"):
    """The unit tests' minimal baseline structure."""
    return (b"\xff\xd8"
            + b"\xff\xe0\x00\x07JFIF\x00"
            + b"\xff\xdb\x00\x04\xff\xd9"
            + b"\xff\xc0\x00\x03\x08"
            + b"\xff\xc4\x00\x02"
            + b"\xff\xda\x00\x03\x01"
            + entropy
            + b"\xff\xd9")


def write(directory, name, data):
    assert len(name) < 40 and len(data) < 20_000, (name, len(data))
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def splitter_seeds():
    frames = ffmpeg_frames()
    one = ffmpeg_frames(frames=1, q=10)[0]
    s = {}
    s["jpeg-3-frames"] = header() + b"".join(frames)
    s["jpeg-1-frame-bytewise"] = header(4096, (0,)) + one
    s["jpeg-444"] = header(8192, (99, 0, 6)) + ffmpeg_frames("yuvj444p", 1)[0]
    s["jpeg-422"] = header(None, (1, 2, 3, 250)) + ffmpeg_frames("yuvj422p", 1)[0]
    progressive = opencv_jpeg(IMWRITE_JPEG_PROGRESSIVE=1, IMWRITE_JPEG_QUALITY=60)
    if progressive:
        s["jpeg-progressive"] = header(None, (31,)) + progressive
    restart = opencv_jpeg(IMWRITE_JPEG_RST_INTERVAL=2, IMWRITE_JPEG_QUALITY=60)
    if restart:
        s["jpeg-restart-markers"] = header(None, (7, 200)) + restart
    s["jpeg-exif-thumbnail"] = header(None, (15,)) + exif_wrapped(one, tiny()) + one
    s["garbage-around-frames"] = (header(None, (2, 40)) + b"raspivid -o - \x00\x7f\xff\x12"
                                  + frames[0] + b"\xff\xff\xff\xd9\x00" + frames[1]
                                  + b"\n\xff")
    s["truncated-header-then-whole"] = header(None, (63,)) + one[:40] + one
    s["truncated-entropy-then-whole"] = header(None, (127, 3)) + one[:len(one) - 300] + one
    s["truncated-at-end"] = header(None, (255,)) + one + one[:len(one) // 2]
    s["soi-inside-frame"] = header(None, (10,)) + one[:700] + b"\xff\xd8" + one[2:]
    s["oversize-then-small"] = header(1000) + frames[0] + tiny() + frames[1]
    s["cap-equals-frame"] = header(len(tiny())) + tiny() + tiny(b"\x02" * 5) + tiny()
    s["tiny-frames-small-cap"] = header(64, (0, 1)) + tiny() + tiny(b"\x55" * 80) + tiny()
    s["tiny-fill-tem-rst"] = (header(None, (4,))
                              + b"\xff\xd8\xff\xff\xff\x01\xff\xd0\xff\xe0\x00\x02"
                              + b"\xff\xda\x00\x02\xff\xd7\x00\xff\xff\xff\x00\xff\xd9"
                              + b"\xff\xd8\xff\xd9")
    s["broken-length-and-marker"] = (header(None, (0,)) + b"\xff\xd8\xff\xc4\x00\x01"
                                     + b"\xff\xd8\x00" + b"\xff\xd8\xff\x00" + tiny())
    s["progressive-scans"] = header(None, (5,)) + (
        tiny()[:-2] + b"\xff\xc4\x00\x03\x00\xff\xda\x00\x03\x02\x33\xff\x00"
        + b"\xff\xda\x00\x02\x44\xff\xd9")
    s["empty-stream"] = header()
    os.makedirs(SPLITTER, exist_ok=True)
    for name, data in s.items():
        write(SPLITTER, name, data)


def http_seeds():
    chrome = ("Host: raspberrypi.local:8080\r\nConnection: keep-alive\r\n"
              "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
              "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n"
              "Referer: http://raspberrypi.local:8080/\r\n"
              "Accept-Encoding: gzip, deflate\r\nAccept-Language: en-GB,en;q=0.9\r\n\r\n")
    firefox = ("Host: 192.168.1.20:8080\r\n"
               "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
               "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
               "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n"
               "Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
    h = {}
    h["get-video-chrome"] = "GET /video.mjpg HTTP/1.1\r\n" + chrome
    h["get-index-firefox"] = "GET / HTTP/1.1\r\n" + firefox
    h["get-action-stream"] = "GET /?action=stream HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["get-action-snapshot"] = "GET /?action=snapshot&_=1700000000 HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["get-snapshot-cachebuster"] = "GET /snapshot.jpg?t=1700000000123 HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["get-stats-favicon"] = "GET /stats HTTP/1.1\r\nHost: cam\r\n\r\nGET /favicon.ico HTTP/1.1\r\n\r\n"
    h["get-ffmpeg"] = ("GET /stream.mjpg HTTP/1.1\r\nUser-Agent: Lavf/61.7.100\r\nAccept: */*\r\n"
                       "Range: bytes=0-\r\nConnection: close\r\nHost: cam:8080\r\n"
                       "Icy-MetaData: 1\r\n\r\n")
    h["get-vlc-http10"] = "GET /stream HTTP/1.0\r\nHost: cam\r\nUser-Agent: VLC/3.0.21 LibVLC/3.0.21\r\nRange: bytes=0-\r\n\r\n"
    h["get-query-options"] = "GET /video.mjpg?advance_headers=yes&fps=15&x HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["get-auth-origin"] = ("GET /video.mjpg HTTP/1.1\r\nHost: cam\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
                            "Origin: http://example.org\r\n\r\n")
    h["head-video-http10"] = "HEAD /video.mjpg HTTP/1.0\r\n\r\n"
    h["head-snapshot"] = "HEAD /snapshot HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["post-with-body"] = ("POST /video.mjpg HTTP/1.1\r\nHost: cam\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                           "Content-Length: 7\r\n\r\nfps=100")
    h["options-preflight"] = ("OPTIONS /video.mjpg HTTP/1.1\r\nHost: cam\r\nOrigin: http://a\r\n"
                              "Access-Control-Request-Method: GET\r\n\r\n")
    h["pipelined"] = ("GET /snapshot.jpg HTTP/1.1\r\nHost: cam\r\n\r\n"
                      "GET /video.mjpg HTTP/1.1\r\nHost: cam\r\n\r\nHEAD / HTTP/1.1\r\n\r\n")
    h["http09-line"] = "GET /video.mjpg\r\n"
    h["bare-lf"] = "GET /?action=stream HTTP/1.1\nHost: cam\nUser-Agent: curl/8.5.0\n\n"
    h["absolute-form"] = "GET http://cam:8080/video.mjpg HTTP/1.1\r\nHost: cam:8080\r\n\r\n"
    h["not-found-traversal"] = "GET /../../etc/passwd HTTP/1.1\r\nHost: cam\r\n\r\n"
    h["partial-request"] = "GET /video.mjpg HTTP/1.1\r\nHost: ca"
    h["too-many-headers"] = "GET / HTTP/1.1\r\n" + "A: b\r\n" * 65 + "\r\n"
    h["huge-header"] = "GET /video.mjpg HTTP/1.1\r\nHost: cam\r\nCookie: " + "c" * 9000 + "\r\n\r\n"
    h["tls-client-hello"] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    os.makedirs(HTTP, exist_ok=True)
    for name, text in h.items():
        write(HTTP, name, text.encode("latin-1"))


if __name__ == "__main__":
    splitter_seeds()
    http_seeds()
    sys.exit(0)
