#!/usr/bin/env bash
# Cross-builds the static (musl) Pi binaries with tools/release.sh and checks
# that each one serves under qemu-user: --version, then the test pattern on
# 127.0.0.1, a snapshot, two seconds of the stream and /metrics, every JPEG
# decoded by ffmpeg, and a clean exit on SIGTERM. Fails loudly on any error.
#
#   bash .ci/cross.sh                       aarch64 (Cortex-A53) and armv7 (Cortex-A7)
#   bash .ci/cross.sh TARGET:CPU ...        others, e.g. arm-unknown-linux-musleabihf:arm1176
#
# Every wait is bounded; it kills only the servers it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(aarch64-unknown-linux-musl:cortex-a53 armv7-unknown-linux-musleabihf:cortex-a7)
out=target/cross
began=$SECONDS

fail() { printf 'cross.sh: FAIL: %s\n' "$*" >&2; exit 1; }
say() { printf 'cross.sh: %s\n' "$*" >&2; }

source .ci/install-missing.sh
install_missing "cross.sh" \
    qemu-aarch64-static=qemu-user-static \
    curl=curl \
    ffmpeg=ffmpeg \
    python3=python3

targets=""
for check in "${checks[@]}"; do targets="$targets ${check%%:*}"; done
bash tools/release.sh --no-deb --out "$out" --targets "${targets# }"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -KILL "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Complete parts of a multipart/x-mixed-replace body, by Content-Length:
# writes their JPEGs one after another to $2 and prints how many.
split_parts() {
    python3 - "$1" "$2" <<'EOF'
import re, sys
body = open(sys.argv[1], "rb").read()
frames = []
for m in re.finditer(rb"Content-Length: *(\d+)\r\n(?:[^\r\n]*\r\n)*?\r\n", body, re.I):
    start, n = m.end(), int(m.group(1))
    jpeg = body[start:start + n]
    if len(jpeg) < n:
        break  # the part curl's time limit cut off
    if jpeg[:2] != b"\xff\xd8" or jpeg[-2:] != b"\xff\xd9":
        sys.exit(f"part {len(frames)} is not a whole JPEG (starts {jpeg[:2].hex()}, ends {jpeg[-2:].hex()})")
    frames.append(jpeg)
open(sys.argv[2], "wb").write(b"".join(frames))
print(len(frames))
EOF
}

smoke() {
    local target=$1 cpu=$2 qemu bin port t0 frames decoded size status
    case $target in
        aarch64-*) qemu="qemu-aarch64-static" ;;
        arm*) qemu="qemu-arm-static" ;;
        *) fail "no qemu for $target" ;;
    esac
    bin=$out/raspivid_mjpeg_server-$version-$target
    local dir=$work/$target
    mkdir -p "$dir"
    say "$target under $qemu -cpu $cpu"

    local said
    said=$(timeout 30 "$qemu" -cpu "$cpu" "$bin" --version) || fail "$target: --version failed"
    [ "$said" = "raspivid_mjpeg_server $version" ] || fail "$target: --version said '$said'"

    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$qemu" -cpu "$cpu" "$bin" --pattern -p "$port" --bind 127.0.0.1 </dev/null 2>"$dir/server.log" &
    server=$!
    local url=http://127.0.0.1:$port

    # Ready: the first snapshot (503 until the first frame). At most 30 s.
    t0=$SECONDS
    until curl -sf --max-time 5 -o "$dir/snapshot.jpg" "$url/snapshot.jpg"; do
        kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; fail "$target: the server exited before serving"; }
        [ $((SECONDS - t0)) -lt 30 ] || { cat "$dir/server.log" >&2; fail "$target: no snapshot within 30 s"; }
        sleep 0.2
    done
    size=$(ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height -of csv=p=0 "$dir/snapshot.jpg") ||
        fail "$target: ffprobe could not read the snapshot"
    ffmpeg -nostdin -v error -xerror -i "$dir/snapshot.jpg" -f null - 2>"$dir/snapshot.err" ||
        { cat "$dir/snapshot.err" >&2; fail "$target: the snapshot does not decode"; }
    [ ! -s "$dir/snapshot.err" ] || { cat "$dir/snapshot.err" >&2; fail "$target: ffmpeg complained about the snapshot"; }

    # Two seconds of the stream; curl's time limit (exit 28) is the expected end.
    status=0
    curl -s --max-time 2 -D "$dir/stream.head" -o "$dir/stream.body" "$url/video.mjpg" || status=$?
    [ $status = 28 ] || fail "$target: curl /video.mjpg exited $status, not 28 (its time limit)"
    grep -qi '^content-type: multipart/x-mixed-replace' "$dir/stream.head" ||
        fail "$target: /video.mjpg is not multipart/x-mixed-replace: $(head -c 300 "$dir/stream.head")"
    frames=$(split_parts "$dir/stream.body" "$dir/frames.mjpeg") || fail "$target: the stream has a bad part"
    [ "$frames" -ge 20 ] || fail "$target: only $frames whole frames in 2 s (the pattern sends 30 a second)"
    decoded=$(ffmpeg -nostdin -v error -xerror -f mjpeg -i "$dir/frames.mjpeg" -f framecrc - 2>"$dir/frames.err" | grep -vc '^#') ||
        { cat "$dir/frames.err" >&2; fail "$target: the stream's frames do not decode"; }
    [ ! -s "$dir/frames.err" ] || { cat "$dir/frames.err" >&2; fail "$target: ffmpeg complained about the stream"; }
    [ "$decoded" = "$frames" ] || fail "$target: ffmpeg decoded $decoded of $frames frames"

    curl -sSf --max-time 10 -o "$dir/metrics.txt" "$url/metrics" || fail "$target: /metrics failed"
    grep -q "^raspivid_mjpeg_server_build_info{version=\"$version\"" "$dir/metrics.txt" ||
        fail "$target: /metrics has no build_info for $version"

    # SIGTERM: the server drains and exits 0, within 15 s.
    kill -TERM "$server"
    t0=$SECONDS
    while kill -0 "$server" 2>/dev/null; do
        [ $((SECONDS - t0)) -lt 15 ] || fail "$target: still running 15 s after SIGTERM"
        sleep 0.2
    done
    status=0
    wait "$server" || status=$?
    server=""
    [ $status = 0 ] || { cat "$dir/server.log" >&2; fail "$target: exited $status after SIGTERM"; }
    say "$target ok: snapshot $size, $frames frames in 2 s all decoded, /metrics, exit 0 on SIGTERM"
}

for check in "${checks[@]}"; do
    smoke "${check%%:*}" "${check#*:}"
done
say "passed (${#checks[@]} targets) in $((SECONDS - began)) s"
