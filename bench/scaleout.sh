#!/usr/bin/env bash
# Scale-out: one origin, two relays behind HAProxy, N viewers; every node in
# a network namespace of its own, all on one bridge. See docs/SCALING.md.
#
#   bash bench/scaleout.sh [OUTDIR]          (as root; needs ip, tc, haproxy, python3)
#
#   origin   10.214.0.1:8554   raspivid_mjpeg_server fed 640x480 at 30 fps; its
#                              uplink (egress) limited by tbf to UPLINK
#   relay1   10.214.0.11:8554  raspivid_mjpeg_server --input http://10.214.0.1:8554/video.mjpg
#   relay2   10.214.0.12:8554  the same
#   balancer 10.214.0.2:8080   HAProxy with bench/haproxy.cfg (leastconn, health checks)
#   viewers  10.214.0.100      mjpeg-probe watch, through the balancer
#
# The origin's input: with ORIGIN_INPUT=probe (the default) the server's own
# test pattern, recorded once from `--pattern --fps 30` (150 frames of
# 640x480) and played by `mjpeg-probe source`, which tags every frame with
# its send time, so that the viewers' probe measures the latency through
# every hop (all namespaces share CLOCK_MONOTONIC). With ORIGIN_INPUT=pattern
# the origin runs `--pattern --fps 30` itself: the same pictures, but no
# latency figures (the frames carry no tag).
#
# Phases, each measured by bench/scaleout/sample.py (CPU of every process
# from /proc, the servers' /stats and HAProxy's `show stat` halfway):
#   hops      one viewer each, at the same time: straight to the origin,
#             straight to relay1, and through the balancer: what each hop adds
#   load-N    for each N in VIEWERS: N viewers through the balancer, and one
#             more straight to relay1 (the balancer's share under load)
#   failover  FAILOVER_VIEWERS viewers through the balancer, with the probe's
#             reconnect policy (--reconnect RECONNECT); relay1 is
#             killed (SIGKILL) KILL_AT seconds in; its viewers must come back
#             through relay2 (loss → next frame, from the probe)
# then bench/scaleout/report.py writes OUTDIR/summary.md and summary.json.
#
# Environment (defaults in brackets):
#   VIEWERS          viewer counts of the load phases [100 200 400 800]
#   FAILOVER_VIEWERS viewers in the failover phase [the last of VIEWERS]
#   UPLINK           the origin's uplink rate, tc syntax [50mbit]
#   STEADY, WARMUP   length of each load phase and its unmeasured start, s [20, 5]
#   HOPS             length of the hops phase, s [10]
#   FAILOVER, KILL_AT length of the failover phase, and when relay1 dies, s [16, 6]
#   RECONNECT        the probe's policy: TRIES,FIRST_MS,MAX_MS [20,100,1000]
#   ORIGIN_INPUT     probe or pattern [probe]
#   BIN              directory of raspivid_mjpeg_server and mjpeg-probe
#                    [$CARGO_TARGET_DIR/release or target/release]
#
# All traffic stays inside the namespaces this script makes; it deletes them,
# and stops every process it started (by PID), however it exits. One run
# with the defaults takes about 3.5 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/bench/out/scaleout-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

VIEWERS=${VIEWERS:-100 200 400 800}
FAILOVER_VIEWERS=${FAILOVER_VIEWERS:-${VIEWERS##* }}
UPLINK=${UPLINK:-50mbit}
STEADY=${STEADY:-20}
WARMUP=${WARMUP:-5}
HOPS=${HOPS:-10}
FAILOVER=${FAILOVER:-16}
KILL_AT=${KILL_AT:-6}
RECONNECT=${RECONNECT:-20,100,1000}
ORIGIN_INPUT=${ORIGIN_INPUT:-probe}
FPS=30
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SERVER=$BIN/raspivid_mjpeg_server
PROBE=$BIN/mjpeg-probe

[ "$(id -u)" = 0 ] || { echo "needs root (ip netns, tc)" >&2; exit 2; }
for tool in ip tc haproxy python3 curl; do
    command -v $tool >/dev/null || { echo "$tool is missing (apt-get install haproxy curl iproute2)" >&2; exit 2; }
done
for b in "$SERVER" "$PROBE"; do
    [ -x "$b" ] || { echo "$b is missing: cargo build --release --workspace" >&2; exit 2; }
done
case $ORIGIN_INPUT in probe | pattern) ;; *) echo "ORIGIN_INPUT: probe or pattern" >&2; exit 2 ;; esac
# Every wait below is bounded; so is the whole run.
BUDGET=$((60 + HOPS + FAILOVER + $(echo "$VIEWERS" | wc -w) * (STEADY + 15)))

# Names unique to this run: namespaces, and the bridge's ports inside the hub.
P=so$$
NS_HUB=${P}hub NS_O=${P}o NS_R1=${P}r1 NS_R2=${P}r2 NS_B=${P}b NS_V=${P}v
ALL_NS=("$NS_HUB" "$NS_O" "$NS_R1" "$NS_R2" "$NS_B" "$NS_V")
NET=10.214.0
IP_O=$NET.1 IP_B=$NET.2 IP_R1=$NET.11 IP_R2=$NET.12 IP_V=$NET.100
PORT=8554
BPORT=8080
SOCK=$OUT/haproxy.sock

PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for ns in "${ALL_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -f "$SOCK" "$OUT/frames.fifo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Starts a command in the background, its output to a log; sets LAST.
# (`ip netns exec` and `env` exec the command: LAST is the command's PID.)
spawn() { # LOGNAME CMD...
    local name=$1
    shift
    "$@" >"$OUT/logs/$name.log" 2>&1 &
    LAST=$!
    PIDS+=("$LAST")
}

# Ends a process this script started (SIGNAL, default TERM), reaps it and
# forgets it, so that the clean-up never signals a PID used again.
stop() { # PID [SIGNAL]
    local pid=$1 sig=${2:-TERM} keep=()
    kill -"$sig" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

in_ns() { # NS CMD...
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# Polls until CMD succeeds, TRIES times 0.1 s apart.
wait_for() { # WHAT TRIES CMD...
    local what=$1 tries=$2
    shift 2
    for _ in $(seq 1 "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "timed out waiting for $what" >&2
    return 1
}

# --- the network -----------------------------------------------------------
log "namespaces ${ALL_NS[*]}; results in $OUT"
for ns in "${ALL_NS[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip -n "$NS_HUB" link add br0 type bridge
ip -n "$NS_HUB" link set br0 up
attach() { # NS PORTNAME IP
    ip -n "$NS_HUB" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$NS_HUB" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}
attach "$NS_O" po "$IP_O"
attach "$NS_R1" pr1 "$IP_R1"
attach "$NS_R2" pr2 "$IP_R2"
attach "$NS_B" pb "$IP_B"
attach "$NS_V" pv "$IP_V"
# The origin's uplink: everything it sends (to the relays) goes through a
# token bucket, as through a Pi's Wi-Fi or a DSL upstream.
in_ns "$NS_O" tc qdisc add dev eth0 root tbf rate "$UPLINK" burst 64kb latency 50ms

# Many sockets: HAProxy holds two per viewer, the probe one.
ulimit -n "$(ulimit -Hn)"

# --- the origin --------------------------------------------------------------
FRAMES=$ROOT/bench/out/pattern-640x480.mjpg
if [ "$ORIGIN_INPUT" = probe ] && [ ! -s "$FRAMES" ]; then
    log "recording 150 frames of the test pattern into $FRAMES"
    spawn record ip netns exec "$NS_O" "$SERVER" -p 8555 --bind 127.0.0.1 --pattern --fps $FPS
    rec=$LAST
    wait_for "the recording server" 50 in_ns "$NS_O" curl -sf -m 1 -o /dev/null http://127.0.0.1:8555/stats
    in_ns "$NS_O" timeout 40 python3 "$ROOT/bench/scaleout/capture.py" \
        http://127.0.0.1:8555/video.mjpg 150 "$FRAMES.part"
    mv "$FRAMES.part" "$FRAMES"
    stop "$rec"
fi

if [ "$ORIGIN_INPUT" = probe ]; then
    mkfifo "$OUT/frames.fifo"
    "$PROBE" source "$FRAMES" --fps $FPS --seconds "$BUDGET" >"$OUT/frames.fifo" 2>"$OUT/logs/source.log" &
    PIDS+=("$!")
    spawn origin ip netns exec "$NS_O" "$SERVER" -p $PORT --stats 5 --input "$OUT/frames.fifo"
else
    spawn origin ip netns exec "$NS_O" "$SERVER" -p $PORT --stats 5 --pattern --fps $FPS
fi
ORIGIN=$LAST
wait_for "the origin" 100 in_ns "$NS_V" curl -sf -m 1 -o /dev/null "http://$IP_O:$PORT/stats"

# --- the relays and the balancer --------------------------------------------
UPSTREAM=http://$IP_O:$PORT/video.mjpg
spawn relay1 ip netns exec "$NS_R1" "$SERVER" -p $PORT --stats 5 --input "$UPSTREAM"
RELAY1=$LAST
spawn relay2 ip netns exec "$NS_R2" "$SERVER" -p $PORT --stats 5 --input "$UPSTREAM"
RELAY2=$LAST
for ip in "$IP_R1" "$IP_R2"; do
    wait_for "the relay at $ip to be online" 100 \
        sh -c "ip netns exec $NS_V curl -sf -m 1 http://$ip:$PORT/stats | grep -q '\"state\":\"online\"'"
done
spawn haproxy ip netns exec "$NS_B" env RELAY1="$IP_R1:$PORT" RELAY2="$IP_R2:$PORT" \
    BALANCER_BIND="$IP_B:$BPORT" HAPROXY_SOCKET="$SOCK" haproxy -f "$ROOT/bench/haproxy.cfg" -db
HAPROXY=$LAST
# Both relays up in HAProxy's eyes (health checks 1 s apart, rise 2).
wait_for "HAProxy's health checks" 100 python3 "$ROOT/bench/scaleout/sample.py" --up "$SOCK" 2
for role in origin relay1 relay2 haproxy; do
    pid=${role^^}
    comm=$(cat "/proc/${!pid}/comm")
    case $comm in
    raspivid_mjpeg* | haproxy) log "$role: pid ${!pid} ($comm)" ;;
    *) echo "$role: pid ${!pid} is $comm, not the server: its CPU would be wrong" >&2 && exit 1 ;;
    esac
done

BAL_URL=http://$IP_B:$BPORT/video.mjpg
PIDARGS=(--pid origin=$ORIGIN --pid relay1=$RELAY1 --pid relay2=$RELAY2 --pid haproxy=$HAPROXY)
STATARGS=(--stats origin=http://$IP_O:$PORT/stats --stats relay1=http://$IP_R1:$PORT/stats
    --stats relay2=http://$IP_R2:$PORT/stats)

# Starts a probe in the viewers' namespace, its JSON to OUT/NAME.json and
# its stderr (with the reconnect figures) to OUT/NAME.err; sets LAST.
probe() { # NAME URL CLIENTS SECONDS WARMUP [PROBE ARGS...]
    local name=$1 url=$2 clients=$3 seconds=$4 warm=$5
    shift 5
    ip netns exec "$NS_V" "$PROBE" watch "$url" --clients "$clients" --seconds "$seconds" \
        --warmup "$warm" --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" &
    LAST=$!
    PIDS+=("$LAST")
}

# --- hops: one viewer at each tier at the same time ---------------------------
log "hops: one viewer each at the origin, relay1 and the balancer, $HOPS s"
probe hops-origin "http://$IP_O:$PORT/video.mjpg" 1 "$HOPS" 2
p1=$LAST
probe hops-relay "http://$IP_R1:$PORT/video.mjpg" 1 "$HOPS" 2
p2=$LAST
probe hops-balancer "$BAL_URL" 1 "$HOPS" 2
p3=$LAST
in_ns "$NS_V" python3 "$ROOT/bench/scaleout/sample.py" --delay 2 --length $((HOPS - 3)) \
    --out "$OUT/hops-sample.json" "${PIDARGS[@]}" "${STATARGS[@]}" --haproxy "$SOCK"
for p in "$p1" "$p2" "$p3"; do stop "$p" 0; done

# --- load: N viewers through the balancer -------------------------------------
for n in $VIEWERS; do
    log "load-$n: $n viewers through the balancer (+1 straight to relay1), $STEADY s"
    probe "load-$n" "$BAL_URL" "$n" "$STEADY" "$WARMUP"
    pl=$LAST
    probe "load-$n-relay" "http://$IP_R1:$PORT/video.mjpg" 1 "$STEADY" "$WARMUP"
    pr=$LAST
    in_ns "$NS_V" python3 "$ROOT/bench/scaleout/sample.py" --delay "$WARMUP" \
        --length $((STEADY - WARMUP - 1)) --out "$OUT/load-$n-sample.json" \
        "${PIDARGS[@]}" --pid probe="$pl" "${STATARGS[@]}" --haproxy "$SOCK"
    stop "$pl" 0
    stop "$pr" 0
    sleep 1
done

# --- failover: kill relay1 under load -----------------------------------------
n=$FAILOVER_VIEWERS
log "failover: $n viewers (reconnect $RECONNECT), relay1 killed at ${KILL_AT} s of $FAILOVER s"
probe failover "$BAL_URL" "$n" "$FAILOVER" 2 --reconnect "$RECONNECT"
pf=$LAST
sleep "$KILL_AT"
in_ns "$NS_V" python3 "$ROOT/bench/scaleout/sample.py" --delay 0 --length 0.2 \
    --out "$OUT/failover-before.json" "${PIDARGS[@]}" "${STATARGS[@]}" --haproxy "$SOCK"
stop "$RELAY1" KILL
log "relay1 (pid $RELAY1) killed"
# The survivors, a few seconds after the kill, while the probe still runs.
in_ns "$NS_V" python3 "$ROOT/bench/scaleout/sample.py" --delay 3 \
    --length $((FAILOVER - KILL_AT - 5)) --out "$OUT/failover-after.json" \
    --pid origin=$ORIGIN --pid relay2=$RELAY2 --pid haproxy=$HAPROXY --pid probe=$pf \
    --stats origin=http://$IP_O:$PORT/stats --stats relay2=http://$IP_R2:$PORT/stats --haproxy "$SOCK"
stop "$pf" 0

# --- the report ---------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -srm)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "haproxy: $(haproxy -v | head -1)"
    echo "uplink: $UPLINK; origin input: $ORIGIN_INPUT; viewers: $VIEWERS; failover viewers: $FAILOVER_VIEWERS"
    echo "command: VIEWERS='$VIEWERS' FAILOVER_VIEWERS=$FAILOVER_VIEWERS UPLINK=$UPLINK STEADY=$STEADY bash bench/scaleout.sh"
} >"$OUT/machine.txt"
[ -s "$FRAMES" ] && echo "frames: $(python3 -c "
import sys; d=open(sys.argv[1],'rb').read(); n=d.count(b'\xff\xd8\xff'); print(n, 'frames,', len(d)//max(1,n), 'bytes a frame')" "$FRAMES")" >>"$OUT/machine.txt"
python3 "$ROOT/bench/scaleout/report.py" "$OUT"
log "done in $SECONDS s: $OUT/summary.md"
