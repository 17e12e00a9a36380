#!/usr/bin/env bash
# Idle RSS of the shipped static (musl) binaries against the default,
# dynamically linked build: the figures in docs/DEPLOY.md.
#
#   bash bench/idle-rss.sh          (after tools/release.sh, or it runs it)
#
# "Idle" is the service as shipped: the server runs a camera with --exec
# (ffmpeg looping a 640x480 MJPEG file at 30 fps, copied, not encoded), and
# no client is connected. VmRSS is read from /proc every 0.25 s from 2 s to
# 4 s after the start; the median is reported, with RssFile and RssAnon at
# the end. Each build is measured RUNS times (default 3) in turn.
#
# x86_64 runs natively. The ARM builds run under qemu-user, whose process
# holds qemu itself and the translated code besides the server: their
# figures are qemu's, not what a Pi would show, and are given only to show
# that they start and idle; the guest binary's own mapped pages are shown
# apart ("binary").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
runs=${RUNS:-3}
dist=target/dist
out=bench/out/idle-rss
mkdir -p "$out"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
static=$dist/raspivid_mjpeg_server-$version

for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf; do
    [ -x "$static-$t" ] || { bash tools/release.sh --no-deb; break; }
done
source .ci/install-missing.sh
install_missing "idle-rss" qemu-aarch64-static=qemu-user-static
# The default build: dynamically linked against glibc.
cargo build --release -q -p raspivid_mjpeg_server --bin raspivid_mjpeg_server
dynamic=$CARGO_TARGET_DIR/release/raspivid_mjpeg_server

src=$out/src640.mjpg
[ -s "$src" ] || ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=640x480:rate=30 -frames:v 150 -q:v 5 -f mjpeg "$src"
camera="ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i $src -c copy -f mjpeg -"

kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"; }
server=""
trap '[ -z "$server" ] || kill -KILL "$server" 2>/dev/null || true' EXIT

# measure NAME BINARY [QEMU CPU]: prints "NAME median_kib file_kib anon_kib binary_kib"
measure() {
    local name=$1 bin=$2 qemu=${3-} cpu=${4-} port samples=()
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ -n "$qemu" ]; then
        "$qemu" -cpu "$cpu" "$bin" -p "$port" --bind 127.0.0.1 --exec "$camera" </dev/null 2>"$out/$name.log" &
    else
        "$bin" -p "$port" --bind 127.0.0.1 --exec "$camera" </dev/null 2>"$out/$name.log" &
    fi
    server=$!
    sleep 2
    for _ in $(seq 9); do
        samples+=("$(kib VmRSS "$server")")
        sleep 0.25
    done
    local file anon binary
    file=$(kib RssFile "$server")
    anon=$(kib RssAnon "$server")
    # Pages of the server's own file mapped in (for qemu: the guest binary).
    binary=$(awk -v f="$(readlink -f "$bin")" '$6 == f { on = 1; next } /^[0-9a-f]+-/ { on = 0 } on && /^Rss:/ { s += $2 } END { print s + 0 }' "/proc/$server/smaps")
    # It served frames all along: a snapshot now is a whole JPEG.
    curl -sf --max-time 10 -o "$out/$name.jpg" "http://127.0.0.1:$port/snapshot.jpg" ||
        { cat "$out/$name.log" >&2; echo "idle-rss: $name served no snapshot" >&2; exit 1; }
    kill -TERM "$server"
    for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server" 2>/dev/null && { echo "idle-rss: $name did not exit on SIGTERM" >&2; exit 1; }
    wait "$server" || true
    server=""
    local median
    median=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n 5p)
    echo "$name $median $file $anon $binary"
}

results=$out/results.txt
: >"$results"
for run in $(seq "$runs"); do
    echo "run $run of $runs" >&2
    measure dynamic-glibc-x86_64 "$dynamic" >>"$results"
    measure static-musl-x86_64 "$static-x86_64-unknown-linux-musl" >>"$results"
    measure qemu-static-musl-aarch64 "$static-aarch64-unknown-linux-musl" qemu-aarch64-static cortex-a53 >>"$results"
    measure qemu-static-musl-armv7 "$static-armv7-unknown-linux-musleabihf" qemu-arm-static cortex-a7 >>"$results"
    measure qemu-static-musl-armv6 "$static-arm-unknown-linux-musleabihf" qemu-arm-static arm1176 >>"$results"
done

python3 - "$results" "$dynamic" "$static" <<'EOF' | tee "$out/results.md"
import os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *vals = line.split()
    rows.setdefault(name, []).append([int(v) for v in vals])
size = {
    "dynamic-glibc-x86_64": sys.argv[2],
    "static-musl-x86_64": sys.argv[3] + "-x86_64-unknown-linux-musl",
    "qemu-static-musl-aarch64": sys.argv[3] + "-aarch64-unknown-linux-musl",
    "qemu-static-musl-armv7": sys.argv[3] + "-armv7-unknown-linux-musleabihf",
    "qemu-static-musl-armv6": sys.argv[3] + "-arm-unknown-linux-musleabihf",
}
print("| build | binary bytes | idle VmRSS KiB, each run | median MiB | RssFile KiB | RssAnon KiB | binary's pages KiB |")
print("|---|---|---|---|---|---|---|")
for name, runs in rows.items():
    med = statistics.median(r[0] for r in runs)
    last = runs[-1]
    print(f"| {name} | {os.path.getsize(size[name]):,} | {', '.join(str(r[0]) for r in runs)} | "
          f"{med / 1024:.2f} | {last[1]} | {last[2]} | {last[3]} |")
EOF
