#!/usr/bin/env bash
# Latency over a slow link: one viewer behind a token-bucket-limited veth in
# a network namespace, one fast viewer on loopback at the same time.
#
#   bench/slowlink.sh [OUTDIR]          (as root; needs ip, tc, ffmpeg)
#
# The server runs on the host, fed 640x480 JPEGs at 90 fps (about 16 Mbit/s)
# by `mjpeg-probe source`. The slow viewer runs `mjpeg-probe watch` inside
# the namespace, reaching the server at 10.213.0.1 over a veth pair whose host
# side egress is shaped with
#   tc qdisc add dev VETH_HOST root tbf rate R burst 32kbit latency 50ms
# and the fast viewer runs `mjpeg-probe watch` on 127.0.0.1.
#
# Each run appends one JSON line per viewer to OUTDIR/results.jsonl, with the
# probe's figures and server, rate_mbit, max_queued, role (slow, fast, or
# alone for a loopback viewer without the slow one). `ss -tmi` and `tc -s`
# snapshots taken in the middle of each run go to OUTDIR/diag/, and each
# viewer's latency timeline to OUTDIR/timelines/.
#
# Environment (defaults in brackets):
#   SERVERS        servers to run [this vlc flask]
#   RATES          rates of the slow link in Mbit/s [2 8 20]
#   SWEEP          --max-queued-bytes values for this server at SWEEP_RATE
#                  [8192 16384 32768 65536 262144 1073741824]
#   SWEEP_RATES    rates of the slow link for the sweep, in Mbit/s [8]
#   FPS, QUALITY   the source's frame rate and ffmpeg -q:v [90, 5]
#   RUN_SECONDS    length of each run [15]
#   WARMUP         seconds not measured at the start of each run [3]
#   BIN            directory of raspivid_mjpeg_server and mjpeg-probe
#                  [$CARGO_TARGET_DIR/release or target/release]
#   PORT           the runs listen on the free ports after this one [from
#                  the pid]
#   SERVER_ARGS    extra arguments for this server []
#   DELAY          milliseconds added to the round trip: the namespace's
#                  packets to the server (the viewer's ACKs) go through
#                  bench/delayline.py, as this kernel has no netem [none]
#   CC             TCP congestion control of the servers' connections over
#                  the slow link, set on the veth's route (`congctl`), so no
#                  sysctl is touched [the host's default]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-/tmp/slowlink-$$}
mkdir -p "$OUT/diag" "$OUT/timelines" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

SERVERS=${SERVERS-this vlc flask}
RATES=${RATES-2 8 20}
SWEEP=${SWEEP-8192 16384 32768 65536 262144 1073741824}
SWEEP_RATES=${SWEEP_RATES:-8}
RUN_SECONDS=${RUN_SECONDS:-15}
WARMUP=${WARMUP:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SERVER_ARGS=${SERVER_ARGS:-}
FPS=${FPS:-90}
QUALITY=${QUALITY:-5}

[ "$(id -u)" = 0 ] || { echo "needs root (ip netns, tc)" >&2; exit 2; }
for tool in ip tc ffmpeg python3 ss; do
    command -v $tool >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
for b in raspivid_mjpeg_server mjpeg-probe; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: cargo build --release --workspace" >&2; exit 2; }
done
PROBE=$BIN/mjpeg-probe

# Names unique to this run, so that parallel runs do not clash.
NS=slowlink$$
VH=slh$$      # host side of the veth pair (names are at most 15 bytes)
VN=sln$$      # namespace side
HOST_IP=10.213.0.1
NS_IP=10.213.0.2

PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null
    ip link del "$VH" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each run takes the next free port: a server that closed its viewers first
# leaves TIME-WAIT sockets behind, which Python's bind does not tolerate.
PORT=${PORT:-$((20000 + $$ % 20000))}
next_port() {
    for _ in $(seq 1 100); do
        PORT=$((PORT + 1))
        ss -Htan "sport = :$PORT" | grep -q . || return 0
    done
    echo "no free port" >&2
    return 1
}

ip netns add "$NS"
ip link add "$VH" type veth peer name "$VN"
ip link set "$VN" netns "$NS"
ip addr add "$HOST_IP/30" dev "$VH"
ip link set "$VH" up
CC_NOW=$(sysctl -n net.ipv4.tcp_congestion_control)
if [ -n "${CC:-}" ]; then
    # Connections the server accepts from the namespace take the route's.
    ip route replace "${HOST_IP%.*}.0/30" dev "$VH" proto kernel scope link src "$HOST_IP" congctl "$CC"
    CC_NOW=$CC
fi
ip -n "$NS" addr add "$NS_IP/30" dev "$VN"
ip -n "$NS" link set "$VN" up
ip -n "$NS" link set lo up
if [ -n "${DELAY:-}" ]; then
    TUN=sld$$
    ip netns exec "$NS" python3 "$ROOT/bench/delayline.py" "$TUN" "$VN" \
        "$(cat "/sys/class/net/$VH/address")" "$DELAY" &
    PIDS+=("$!")
    for _ in $(seq 1 50); do
        ip -n "$NS" link show "$TUN" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip -n "$NS" link set "$TUN" up
    ip -n "$NS" route replace "$HOST_IP/32" dev "$TUN" src "$NS_IP"
fi

FRAMES=$OUT/test-$FPS-q$QUALITY.mjpg
[ -s "$FRAMES" ] || ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=640x480:rate=$FPS" \
    -frames:v $((FPS * 5)) -q:v "$QUALITY" -f mjpeg "$FRAMES"
echo "source: $FPS fps, $(($(stat -c %s "$FRAMES") / (FPS * 5))) bytes a frame" >&2

shape() { # RATE_MBIT
    tc qdisc del dev "$VH" root 2>/dev/null || true
    tc qdisc add dev "$VH" root tbf rate "$1mbit" burst 32kbit latency 50ms
}

wait_port() {
    for _ in $(seq 1 100); do
        ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.1
    done
    echo "nothing listens on port $PORT" >&2
    return 1
}

# Starts SERVER ($1) with extra arguments for this server ($2) on $PORT, fed
# by the probe's source for the whole run; sets SERVER_PID.
start_server() {
    local server=$1 extra=$2 log=$3
    local fifo=$OUT/frames.fifo
    rm -f "$fifo"
    mkfifo "$fifo"
    "$PROBE" source "$FRAMES" --fps "$FPS" --seconds $((RUN_SECONDS + 5)) >"$fifo" &
    SOURCE_PID=$!
    PIDS+=("$SOURCE_PID")
    case $server in
    this)
        # shellcheck disable=SC2086
        "$BIN/raspivid_mjpeg_server" -p "$PORT" $extra <"$fifo" >"$log" 2>&1 &
        ;;
    vlc)
        runuser -u nobody -- cvlc -q stream:///dev/stdin --sout \
            "#standard{access=http{mime=multipart/x-mixed-replace;boundary=7b3cc56e5f51db803f790dad720ed50a},mux=mpjpeg,dst=0.0.0.0:$PORT/video.mjpg}" \
            <"$fifo" >"$log" 2>&1 &
        ;;
    flask)
        python3 "$ROOT/bench/peers/flask_server.py" "$PORT" 0.0.0.0 <"$fifo" >"$log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port
    # Let the first frames through before anyone measures.
    sleep 1
}

# CPU ticks used so far by a process and its descendants.
cpu_ticks() { # PID
    local pid=$1 total kid
    total=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    for kid in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
        total=$((total + $(cpu_ticks "$kid")))
    done
    echo "$total"
}

stop_server() {
    kill "$SOURCE_PID" "$SERVER_PID" 2>/dev/null || true
    wait "$SOURCE_PID" "$SERVER_PID" 2>/dev/null || true
    sleep 0.5
}

# Appends the probe's JSON line, tagged, to results.jsonl.
record() { # JSON SERVER RATE MAXQ ROLE CPU_PERCENT
    python3 - "$@" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
line, server, rate, maxq, role, cpu = sys.argv[1:7]
try:
    r = json.loads(line)
except ValueError:
    r = {"error": line.strip()[:200]}
r.update(server=server, rate_mbit=None if rate == "-" else float(rate),
         max_queued=None if maxq == "-" else int(maxq), role=role,
         server_cpu_percent=float(cpu))
print(json.dumps(r))
EOF
}

# One run: SERVER RATE (or - for loopback alone) MAXQ (or -) LABEL
run() {
    local server=$1 rate=$2 maxq=$3 label=$4
    local extra=$SERVER_ARGS
    [ "$maxq" != - ] && extra="$extra --max-queued-bytes $maxq"
    next_port
    echo "== $label: $server rate=$rate max_queued=$maxq port=$PORT" >&2
    start_server "$server" "$extra" "$OUT/logs/$label.log"
    local watch=(watch --clients 1 --seconds "$RUN_SECONDS" --warmup "$WARMUP" --json)
    local slow_out=$OUT/logs/$label.slow.json fast_out=$OUT/logs/$label.fast.json
    local slow_pid=
    if [ "$rate" != - ]; then
        shape "$rate"
        ip netns exec "$NS" "$PROBE" "${watch[@]}" --timeline "$OUT/timelines/$label.slow.csv" \
            "http://$HOST_IP:$PORT/video.mjpg" >"$slow_out" 2>"$OUT/logs/$label.slow.err" &
        slow_pid=$!
        PIDS+=("$slow_pid")
    fi
    "$PROBE" "${watch[@]}" --timeline "$OUT/timelines/$label.fast.csv" \
        "http://127.0.0.1:$PORT/video.mjpg" >"$fast_out" 2>"$OUT/logs/$label.fast.err" &
    local fast_pid=$!
    PIDS+=("$fast_pid")
    # Snapshots of the sockets and the shaper in the middle of the run.
    sleep $((RUN_SECONDS / 2))
    {
        echo "# ss -tmi (host), sport $PORT"
        ss -tmi "sport = :$PORT" || true
        echo "# tc -s qdisc show dev $VH"
        tc -s qdisc show dev "$VH" || true
        echo "# ss -tmi (namespace)"
        ip netns exec "$NS" ss -tmi || true
    } >"$OUT/diag/$label.txt" 2>&1
    # The server's CPU use over the second half of the run, in % of one core.
    local ticks0 ticks1 t0 t1 cpu
    ticks0=$(cpu_ticks "$SERVER_PID")
    t0=$(date +%s%N)
    wait "$fast_pid" || true
    [ -n "$slow_pid" ] && { wait "$slow_pid" || true; }
    ticks1=$(cpu_ticks "$SERVER_PID")
    t1=$(date +%s%N)
    cpu=$(awk -v d=$((ticks1 - ticks0)) -v ns=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.1f", d / hz / (ns / 1e9) * 100 }')
    stop_server
    local role=fast
    [ "$rate" = - ] && role=alone
    record "$(cat "$fast_out")" "$server" "$rate" "$maxq" "$role" "$cpu"
    [ -n "$slow_pid" ] && record "$(cat "$slow_out")" "$server" "$rate" "$maxq" slow "$cpu"
    tail -n $([ -n "$slow_pid" ] && echo 2 || echo 1) "$OUT/results.jsonl" | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print("   %-5s p50=%s p99=%s fps=%s corrupt=%s cpu=%s%%" % (r["role"], r.get("p50_ms"), r.get("p99_ms"),
          r.get("fps_median"), r.get("corrupt"), r["server_cpu_percent"]), file=sys.stderr)
'
    return 0
}

echo "machine: $(nproc) cores, $(uname -sr), congestion control $CC_NOW, added RTT ${DELAY:-0} ms; results in $OUT" >&2
for server in $SERVERS; do
    case $server in
    vlc) command -v cvlc >/dev/null || { echo "skipping vlc: cvlc missing" >&2; continue; } ;;
    flask) python3 -c 'import flask' 2>/dev/null || { echo "skipping flask: pip install flask" >&2; continue; } ;;
    esac
    run "$server" - - "$server-alone"
    for rate in $RATES; do
        run "$server" "$rate" - "$server-${rate}mbit"
    done
done
for rate in $SWEEP_RATES; do
    for maxq in $SWEEP; do
        run this "$rate" "$maxq" "this-${rate}mbit-q$maxq"
    done
done
python3 "$ROOT/bench/slowlink_report.py" "$OUT/results.jsonl"
