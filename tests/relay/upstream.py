#!/usr/bin/env python3
"""An upstream MJPEG server in the framings real servers send, for the relay
tests: serves the JPEG files in DIR (000.jpg, 001.jpg, ...) in a loop at FPS,
framed as MODE, to every client, on 127.0.0.1:PORT (0: any; the port is
printed on the first line of stdout).

Modes: length (headers with Content-Length, boundary after each frame),
before (boundary before each frame, no Content-Length), chunked (Flask's
generator style: chunked transfer coding, one chunk per write), original
(the original raspivid_mjpeg_server's `boundary=--X` quirk), quoted (a
quoted boundary), advance (the next part's headers right after each frame),
latin1 (a Latin-1 byte in a header value), folded (the Content-Type
continued on a second line, an obs-fold), mixed (multipart/mixed without a
boundary parameter), motion (video/x-motion-jpeg: bare JPEGs one after
another), status401, html (not multipart). latin1, folded and mixed frame
their parts as "before" does."""
import argparse
import glob
import os
import socketserver
import sys
import time


def frames(directory):
    names = sorted(glob.glob(os.path.join(directory, "*.jpg")))
    return [open(n, "rb").read() for n in names]


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        mode, jpegs, interval = self.server.mode, self.server.jpegs, self.server.interval
        request = b""
        while b"\r\n\r\n" not in request:
            got = self.request.recv(4096)
            if not got:
                return
            request += got
        if self.server.auth and self.server.auth.encode() not in request:
            self.wfile.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            return
        if mode == "status401":
            self.wfile.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            return
        if mode == "html":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>")
            return
        boundary = {"original": b"--X", "quoted": b"a b;c"}.get(mode, b"frame")
        ctype = b'"a b;c"' if mode == "quoted" else boundary
        content_type = {
            "folded": b"multipart/x-mixed-replace;\r\n\tboundary=" + boundary,
            "mixed": b"multipart/mixed",
            "motion": b"video/x-motion-jpeg",
        }.get(mode, b"multipart/x-mixed-replace; boundary=" + ctype)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        if mode == "latin1":
            head += b"Server: Cam\xe9ra\r\n"
        if mode == "chunked":
            head += b"Transfer-Encoding: chunked\r\n"
        self.wfile.write(head + b"\r\n")
        delimiter = b"--" + boundary + b"\r\n"
        if mode == "advance":
            self.wfile.write(delimiter + b"Content-Type: image/jpeg\r\n\r\n")
        n = 0
        start = time.monotonic()
        try:
            while True:
                jpeg = jpegs[n % len(jpegs)]
                if mode in ("length", "quoted", "original"):
                    part = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    data = part + jpeg + b"\r\n" + delimiter
                    if n == 0:
                        data = delimiter + data
                elif mode == "motion":
                    data = jpeg
                elif mode == "advance":
                    data = jpeg + b"\r\n" + delimiter + b"Content-Type: image/jpeg\r\n\r\n"
                else:  # before, chunked
                    data = delimiter + b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n"
                if mode == "chunked":
                    data = b"%x\r\n" % len(data) + data + b"\r\n"
                self.wfile.write(data)
                self.wfile.flush()
                n += 1
                time.sleep(max(0.0, start + n * interval - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            return


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", default="length")
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--auth", default="", help="an Authorization header value to require")
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.mode, server.jpegs, server.interval = args.mode, frames(args.dir), 1.0 / args.fps
    server.auth = "Authorization: " + args.auth if args.auth else ""
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
