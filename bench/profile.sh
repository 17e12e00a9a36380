#!/usr/bin/env bash
# Where this server's time and memory go, on short runs: the evidence behind
# the "profiling" part of docs/BENCHMARKS.md. Needs bench/run.sh to have
# built everything and made the sources. Output in bench/out/profile/.
#
#   bash bench/profile.sh                 # all of them
#   bash bench/profile.sh perf callgrind  # some
#
# 1. memory: /proc/PID/status and the largest mappings of smaps, idle and
#    with 1000 clients;
# 2. syscalls per client-frame: strace -c -f on 100 clients at 90 fps;
# 3. kernel and user hot spots: perf record -e cpu-clock (a software event:
#    this VM has no hardware counters) on 1000 clients at 30 fps;
# 4. user-space instructions per function: valgrind --tool=callgrind on 10
#    clients at 30 fps (repeatable counts, unlike times on shared cores);
# 5. static: idle RSS of the same build with glibc linked statically;
# 6. fanout: bench/fanout_cost.c, what one client-frame costs the sender for
#    writev, ioctl + writev, and sendfile from a memfd;
# 7. floor: 1-client A/B of the floor, the floor with TCP_NOTSENT_LOWAT, the
#    floor with a SIOCOUTQNSD ioctl before each frame, and this server.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-bench}"
R="$CARGO_TARGET_DIR/release"
# The same release build with symbols, for perf and callgrind (the shipped
# profile strips them); its own target directory, so the bench binary stays.
P=/tmp/target-bench-symbols/release
CARGO_TARGET_DIR=/tmp/target-bench-symbols CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q --bin raspivid_mjpeg_server
OUT=bench/out/profile
SRC=bench/out/src640.mjpg
mkdir -p "$OUT"
SECTIONS="${*:-memory strace perf callgrind static fanout floor}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Starts `source | server` on a fresh port; sets SRV (server PID) and PORT.
PORT=19700
start() { # binary fps seconds [wrapper...]
    local bin=$1 fps=$2 secs=$3
    shift 3
    PORT=$((PORT + 1))
    taskset -c 1 "$R/mjpeg-probe" source "$SRC" --fps "$fps" --seconds "$secs" |
        taskset -c 0 "$@" "$bin" -p "$PORT" --bind 127.0.0.1 --stats 1 \
            2>"$OUT/server-$PORT.log" &
    SRV=$!
    for _ in $(seq 100); do
        ss -Htln "sport = :$PORT" | grep -q . && return 0
        sleep 0.1
    done
    echo "server on $PORT did not listen" >&2
    return 1
}
watch() { # clients seconds
    timeout $(($2 + 30)) taskset -c 1 "$R/mjpeg-probe" watch "http://127.0.0.1:$PORT/video.mjpg" \
        --clients "$1" --seconds "$2" --warmup "${3:-1}" --json
}
finish() { # wait for the server to end with its input, bounded
    for _ in $(seq 100); do
        kill -0 "$SRV" 2>/dev/null || { wait "$SRV" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill "$SRV" 2>/dev/null || true
    wait "$SRV" 2>/dev/null || true
}
mem() { # label
    {
        echo "== $1"
        grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|VmData|VmStk|VmExe|VmLib)' "/proc/$SRV/status"
        echo "-- largest mappings (Rss kB, name):"
        awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)} /^Rss:/ {rss[name] += $2}
             END {for (n in rss) if (rss[n] > 0) print rss[n], n}' "/proc/$SRV/smaps" | sort -rn | head -12 || true
    } | tee -a "$OUT/memory.txt"
}

if want memory; then
echo "== 1. memory" >&2
: >"$OUT/memory.txt"
ls -l "$R/raspivid_mjpeg_server" | tee -a "$OUT/memory.txt"
start "$R/raspivid_mjpeg_server" 90 12 env
sleep 2
mem "idle, 2 s of 90 fps input, no client"
watch 1000 6 >"$OUT/memory-1000.json" &
W=$!
sleep 4
mem "1000 clients at 90 fps"
wait $W || true
finish

fi

if want strace; then
echo "== 2. strace -c -f, 100 clients at 90 fps, 6 s" >&2
start "$R/raspivid_mjpeg_server" 90 8 strace -c -f -o "$OUT/strace-100c.txt"
watch 100 6 | tee "$OUT/strace-100c.json"
finish
grep -h "^done:" "$OUT/server-$PORT.log" | tee "$OUT/strace-100c-done.txt"
head -25 "$OUT/strace-100c.txt"

fi

if want perf; then
echo "== 3. perf record -e cpu-clock, 1000 clients at 30 fps" >&2
if perf record -e cpu-clock -o /dev/null true 2>/dev/null; then
    start "$P/raspivid_mjpeg_server" 30 10 env
    sleep 1
    watch 1000 8 >"$OUT/perf-1000c.json" &
    W=$!
    sleep 2
    perf record -e cpu-clock -F 2000 -g -p "$SRV" -o "$OUT/perf-1000c.data" -- sleep 4 2>/dev/null
    wait $W || true
    finish
    perf report -i "$OUT/perf-1000c.data" --no-children --sort symbol --stdio 2>/dev/null |
        grep -v '^$' | grep -E '^ +[0-9]' | head -40 >"$OUT/perf-1000c-self.txt" || true
    perf report -i "$OUT/perf-1000c.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -40 >"$OUT/perf-1000c-children.txt" || true
    cat "$OUT/perf-1000c-self.txt"
else
    echo "perf record -e cpu-clock does not work here" | tee "$OUT/perf-1000c-self.txt"
fi

fi

if want callgrind; then
echo "== 4. callgrind, 10 clients at 30 fps, 6 s" >&2
start "$P/raspivid_mjpeg_server" 30 8 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out"
watch 10 6 | tee "$OUT/callgrind-10c.json"
finish
grep -h "^done:" "$OUT/server-$PORT.log" | tee "$OUT/callgrind-done.txt"
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | head -45 >"$OUT/callgrind-inclusive.txt" || true
callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | head -45 >"$OUT/callgrind-self.txt" || true
head -45 "$OUT/callgrind-self.txt"
fi

if want static; then
echo "== 5. idle RSS, glibc linked statically" >&2
S=/tmp/target-bench-static/x86_64-unknown-linux-gnu/release/raspivid_mjpeg_server
CARGO_TARGET_DIR=/tmp/target-bench-static RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -q --target x86_64-unknown-linux-gnu --bin raspivid_mjpeg_server
: >"$OUT/static.txt"
for bin in "$R/raspivid_mjpeg_server" "$S"; do
    start "$bin" 90 4 env
    sleep 2
    echo "$bin: $(grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$SRV/status" | tr -s '\t\n ' ' ')" | tee -a "$OUT/static.txt"
    finish
done
fi

if want fanout; then
echo "== 6. fanout_cost: writev, ioctl + writev, sendfile; 3 rounds" >&2
cc -O2 -Wall -pthread -o bench/out/fanout_cost bench/fanout_cost.c
for n in "100 90" "1000 30"; do
    for _ in 1 2 3; do
        for mode in writev ioctl sendfile; do
            # shellcheck disable=SC2086
            timeout 60 bench/out/fanout_cost "$mode" $n 4
        done
    done | tee "$OUT/fanout-${n%% *}.txt"
done
fi

if want floor; then
echo "== 7. floor variants against this server, 1 client at 90 fps, 5 rounds" >&2
V=bench/out/floor-variants
mkdir -p "$V"
cp bench/floor_relay.c "$V/base.c"
sed 's|^    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);|&\n    { int l = 32 << 10; setsockopt(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, \&l, sizeof l); }|' \
    bench/floor_relay.c >"$V/lowat.c"
sed -e 's|^#include <unistd.h>|&\n#include <sys/ioctl.h>\n#include <linux/sockios.h>|' \
    -e 's|^        if (writev(c, iov, 3) < 0) return 0;|        { int u; ioctl(c, SIOCOUTQNSD, \&u); }\n&|' \
    bench/floor_relay.c >"$V/ioctl.c"
for v in base lowat ioctl; do cc -O2 -o "$V/$v" "$V/$v.c"; done
grep -q NOTSENT "$V/lowat.c" && grep -q SIOCOUTQNSD "$V/ioctl.c"
: >"$OUT/floor-variants.txt"
for _ in 1 2 3 4 5; do
    for v in base lowat ioctl this; do
        PORT=$((PORT + 1))
        if [ "$v" = this ]; then
            taskset -c 1 "$R/mjpeg-probe" source "$SRC" --fps 90 --seconds 11 |
                taskset -c 0 "$R/raspivid_mjpeg_server" -p "$PORT" --bind 127.0.0.1 2>/dev/null &
            sleep 0.3
        else
            (sleep 1; exec taskset -c 1 "$R/mjpeg-probe" source "$SRC" --fps 90 --seconds 10) |
                taskset -c 0 "$V/$v" "$PORT" &
            sleep 0.2
        fi
        SRV=$!
        echo "$v $(watch 1 10 2 | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["p50_ms"], d["p90_ms"], d["p99_ms"])') load $(cut -d' ' -f1 /proc/loadavg)" |
            tee -a "$OUT/floor-variants.txt"
        finish
    done
done
fi
