#!/usr/bin/env bash
# Does the static musl build (what tools/release.sh ships) cost latency or CPU
# against the default glibc build? 100 viewers of a 30 fps 640x480 stream
# for 10 s (after 2 s of warm-up), each build twice, alternating; measured
# with tools/mjpeg-probe. Run bench/idle-rss.sh first (it makes the source
# file and both builds).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
cargo build --release -q -p mjpeg-probe
probe=$CARGO_TARGET_DIR/release/mjpeg-probe
src=bench/out/idle-rss/src640.mjpg
[ -s "$src" ] || { echo "no $src: run bench/idle-rss.sh first" >&2; exit 1; }

run() { # name binary
    local name=$1 bin=$2 port server t0 t1 hwm out
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$probe" source "$src" --fps 30 --seconds 16 | "$bin" -p "$port" --bind 127.0.0.1 2>/dev/null &
    server=$! # the last command of the pipeline
    sleep 1.5
    t0=$(awk '{ print $14 + $15 }' "/proc/$server/stat")
    out=$("$probe" watch "http://127.0.0.1:$port/video.mjpg" --clients 100 --seconds 12 --warmup 2 --json)
    t1=$(awk '{ print $14 + $15 }' "/proc/$server/stat")
    hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$server/status")
    wait "$server" || true # the server ends with its input, at 16 s
    python3 -c 'import json, sys
r = json.loads(sys.argv[4])
p50, p99, top, frames, skipped = (r[k] for k in ("p50_ms", "p99_ms", "max_ms", "frames", "skipped"))
print(f"| {sys.argv[1]} | {int(sys.argv[2]) / 1200:.1%} | {p50} | {p99} | {top} | {frames} | {skipped} | {int(sys.argv[3]) / 1024:.2f} |")' \
        "$name" "$((t1 - t0))" "$hwm" "$out"
}

echo "| build | server CPU, of one core | p50 ms | p99 ms | max ms | frames | skipped | VmHWM MiB |"
echo "|---|---|---|---|---|---|---|---|"
for _ in 1 2; do
    run "glibc, dynamic" "$CARGO_TARGET_DIR/release/raspivid_mjpeg_server"
    run "musl, static" "target/dist/raspivid_mjpeg_server-$version-x86_64-unknown-linux-musl"
done
