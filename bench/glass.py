#!/usr/bin/env python3
"""Glass-to-glass latency of each server on one rig with no camera; bench/glass.sh
calls it after the build. See docs/LATENCY.md.

Each run: a fresh Xvfb screen (640x480) shows the clock page
(src/latency.html) full screen in Chromium; ffmpeg grabs that screen
(x11grab, one encoder thread) as MJPEG at --fps; `mjpeg-probe tee` in front
of the server logs when each frame's last byte entered the server's pipe;
the server serves the stream; Chromium's page shows it (a second viewer)
and `mjpeg-probe glass` reads the clock back out of every frame it gets:

    ffmpeg x11grab | mjpeg-probe tee LOG | SERVER  <--  Chromium, mjpeg-probe glass

The probe gives the absolute figure (clock drawn -> frame received) and,
paired by content key with the tee's log, the server's share (last byte into
the pipe -> frame received). Every server reads the same pipe from its
stdin. The page is loaded from the file (so its origin is the same for every
server) with ?read=0: it draws the clock and shows the stream but reads
nothing; one extra run per --fps loads /latency from this server with the
page's own reading on ("this, page reading"), for the page's figure.
Processes are ended by their own PIDs; all traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PROBE = os.path.join(TARGET, "release", "mjpeg-probe")
SERVER = os.path.join(TARGET, "release", "raspivid_mjpeg_server")
FLASK = os.path.join(HERE, "peers", "flask_server.py")
PAGE = os.path.join(ROOT, "src", "latency.html")
DRIVER = os.path.join(ROOT, "tests", "clients", "glass_page.py")
# VLC's mpjpeg mux writes its own fixed delimiter: the mime must declare it.
VLC_BOUNDARY = "7b3cc56e5f51db803f790dad720ed50a"
SCREEN = (640, 480)
PORT = 18620


def server_argv(name, port, original):
    if name in ("this", "this-page"):
        return [SERVER, "-p", str(port), "--bind", "127.0.0.1"]
    if name == "vlc":
        # As bench/bench.py runs it: as nobody (VLC refuses root), from fd 0.
        sout = ("#standard{access=http{mime=multipart/x-mixed-replace;boundary=%s},"
                "mux=mpjpeg,dst=127.0.0.1:%d/video.mjpg}" % (VLC_BOUNDARY, port))
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                "env", "HOME=/tmp", "vlc", "-I", "dummy", "-q", "--play-and-exit",
                "fd://0", "--sout", sout]
    if name == "flask":
        return [os.path.realpath(sys.executable), FLASK, str(port)]
    if name == "original":
        return [original, "-p", str(port)]
    raise ValueError(name)


def listening(port):
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(fields[1] == want and fields[3] == "0A"
                   for fields in (line.split() for line in f.readlines()[1:]))


def end(proc, grace=3.0):
    """SIGTERM, then SIGKILL; by PID."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start_xvfb(log):
    r, w = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-nolisten", "tcp", "-noreset",
         "-screen", "0", "%dx%dx24" % SCREEN],
        pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.close(w)
    number = b""
    deadline = time.monotonic() + 10
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(r, 16)
        if not chunk:
            break
        number += chunk
    os.close(r)
    if not number.strip().isdigit():
        end(xvfb)
        raise RuntimeError("Xvfb gave no display number")
    return xvfb, ":" + number.decode().strip()


def one_run(index, name, fps, seconds, rep, args, logdir):
    tag = f"{name}-{fps}-{rep}"
    log = open(os.path.join(logdir, tag + ".log"), "w")
    tee_log = os.path.join(logdir, tag + ".tee")
    timeline = os.path.join(logdir, tag + ".csv")
    # A port of its own for each run: no server finds the last one's
    # connections still in TIME_WAIT.
    port = PORT + index
    procs = {}
    result = {"server": name, "fps": fps, "rep": rep, "seconds": seconds}
    try:
        procs["xvfb"], display = start_xvfb(log)
        env = dict(os.environ, DISPLAY=display)
        procs["ffmpeg"] = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "x11grab", "-framerate", str(fps),
             "-video_size", "%dx%d" % SCREEN, "-draw_mouse", "0", "-i", display,
             "-fps_mode", "vfr", "-c:v", "mjpeg", "-q:v", "5", "-threads", "1",
             "-flush_packets", "1",
             "-f", "mjpeg", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
        procs["tee"] = subprocess.Popen(
            [PROBE, "tee", tee_log], stdin=procs["ffmpeg"].stdout, stdout=subprocess.PIPE,
            stderr=log)
        procs["ffmpeg"].stdout.close()
        procs["server"] = subprocess.Popen(
            server_argv(name, port, args.original), stdin=procs["tee"].stdout,
            stdout=log, stderr=log, cwd="/tmp")
        procs["tee"].stdout.close()
        deadline = time.monotonic() + 15
        while not listening(port):
            if time.monotonic() > deadline or procs["server"].poll() is not None:
                raise RuntimeError(f"{name} did not listen on {port}")
            time.sleep(0.05)
        stream = f"http://127.0.0.1:{port}/video.mjpg"
        if name == "this-page":
            page = f"http://127.0.0.1:{port}/latency"
        else:
            page = "file://" + PAGE + "?read=0&stream=" + stream
        out = subprocess.run(
            ["python3", DRIVER, page, "--", PROBE, "glass", stream, "--json",
             "--seconds", str(seconds + args.warmup), "--warmup", str(args.warmup),
             "--tee", tee_log, "--timeline", timeline],
            stdout=subprocess.PIPE, stderr=log, env=dict(env, GLASS_SCREEN="%dx%d" % SCREEN),
            timeout=seconds + 90)
        lines = out.stdout.decode().strip().splitlines()
        result.update(json.loads(lines[-1]) if lines else {"error": "no report"})
    except Exception as e:  # a failed run is recorded, not fatal
        result["error"] = repr(e)
    finally:
        for key in ("server", "tee", "ffmpeg", "xvfb"):
            end(procs.get(key))
        log.close()
    result["timeline"] = os.path.relpath(timeline, ROOT)
    return result


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  timeout=20).stdout.decode().strip()
        except Exception:
            return ""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": sh("uname -srm"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD") + (" (dirty)" if sh(f"git -C {ROOT} status --porcelain") else ""),
        "chromium": sh("chromium --version"),
        "ffmpeg": sh("ffmpeg -version | head -1"),
        "xvfb": sh("dpkg-query -W -f '${Version}' xvfb"),
        "vlc": sh("dpkg-query -W -f '${Version}' vlc-bin"),
        "flask": sh(f"{sys.executable} -c 'import importlib.metadata as m; print(m.version(\"flask\"))'"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="this,vlc,flask,original")
    parser.add_argument("--fps", default="30,60")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of each probe run not measured (VLC's start-up backlog)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--page-run", action=argparse.BooleanOptionalAction, default=True,
                        help="one more run per fps with this server and the page reading")
    parser.add_argument("--original", default=os.environ.get("ORIGINAL"),
                        help="the original server's binary (bound to 127.0.0.1)")
    parser.add_argument("--out", default=os.path.join(OUT, "glass.jsonl"))
    args = parser.parse_args()
    logdir = os.path.join(OUT, "glass")
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    servers = args.servers.split(",")
    if "original" in servers and not (args.original and os.access(args.original, os.X_OK)):
        print("original: no binary (--original or ORIGINAL): not run here", file=sys.stderr)
        servers.remove("original")
    runs = []
    for rep in range(args.reps):
        for fps in map(int, args.fps.split(",")):
            # Interleaved, so a drift in the machine's load spreads over all servers.
            runs += [(name, fps, rep) for name in servers]
            if args.page_run and rep == 0 and "this" in servers:
                runs.append(("this-page", fps, rep))
    info = machine()
    print(json.dumps(info), file=sys.stderr)
    with open(args.out, "a") as out:
        out.write(json.dumps({"machine": info, "args": vars(args)}) + "\n")
        for index, (name, fps, rep) in enumerate(runs):
            result = one_run(index, name, fps, args.seconds, rep, args, logdir)
            out.write(json.dumps(result) + "\n")
            out.flush()
            probe = result.get("probe") or {}
            page = result.get("page") or {}
            print(f"{name:10} {fps:3} fps rep {rep}: {probe.get('count')}/{probe.get('frames')} read, "
                  f"glass p50 {probe.get('p50_ms')} p90 {probe.get('p90_ms')} ms, "
                  f"server p50 {probe.get('server_p50_ms')} p90 {probe.get('server_p90_ms')} ms, "
                  f"page p50 {page.get('p50_ms')} ({page.get('count')}) {result.get('error', '')}",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
