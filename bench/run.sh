#!/usr/bin/env bash
# One command runs the lot: installs what is missing, builds, makes the test
# sources, runs every scenario against every server (bench/bench.py), then
# writes the tables (bench/out/results.md) and the plot (docs/bench-latency.png).
#
#   bash bench/run.sh                      # everything, about 12 minutes
#   bash bench/run.sh --servers this,floor --scenarios 1c-90 --reps 1
#
# Arguments go to bench/bench.py (see --help there). Servers are pinned to CPU 0, sources,
# probes and wrk to CPU 1; all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-bench}"
OUT=bench/out
mkdir -p "$OUT"

source .ci/install-missing.sh
install_missing "bench" \
    ffmpeg=ffmpeg \
    cvlc=vlc-bin+vlc-plugin-base \
    wrk=wrk \
    cc=gcc \
    taskset=util-linux
python3 -c 'import flask' 2>/dev/null || pip install -q flask
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib

cargo build --release --workspace
cc -O2 -Wall -o "$OUT/floor_relay" bench/floor_relay.c

# The sources, made once: 450 frames of 640x480 (5 s at 90 fps) and 250 of
# 1280x720 (10 s at 25 fps), looped by mjpeg-probe source.
[ -s "$OUT/src640.mjpg" ] || ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=640x480:rate=90 \
    -frames:v 450 -q:v 5 -f mjpeg "$OUT/src640.mjpg"
[ -s "$OUT/src720.mjpg" ] || ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=25 \
    -frames:v 250 -q:v 5 -f mjpeg "$OUT/src720.mjpg"

# Thousands of sockets for the 1000-client runs and wrk (children inherit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -srm)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|Hypervisor|L2|L3)' | sed 's/  */ /g'
    echo "memory: $(free -m | awk '/Mem:/ {print $2 " MiB"}')"
    echo "commit: $(git rev-parse --short HEAD)"
    echo "rustc: $(rustc --version)"
    echo "vlc: $(dpkg-query -W -f '${Version}' vlc-bin 2>/dev/null)"
    echo "flask: $(python3 -c 'import flask, importlib.metadata as m; print(m.version("flask"))')"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "ulimit -n: $(ulimit -n)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# The orchestrator itself sleeps most of the time; it stays off the server's CPU.
taskset -c 1 python3 bench/bench.py "$@"
# The tables and the plot are of the newest run in bench/out/results.jsonl.
# Only a full run (no arguments) replaces the plot in docs/.
if [ $# -eq 0 ]; then
    python3 bench/report.py
else
    python3 bench/report.py --png "$OUT/bench-latency.png"
fi
