#!/usr/bin/env bash
# Frame age against how fast the consumer reads: a 30 fps test pattern (and
# a 90 fps one read at 30 frames/s), one consumer at a time that takes a
# whole part and then works for 1/RATE s (bench/slow_consumer.py), with and
# without `?fps=RATE`, for each server binary given.
#
#   bench/slow_readers.sh OUT.jsonl NAME=BIN [NAME=BIN ...]
#
# Environment: RATES [1 2 5 10 20 25 29 30], SECONDS_EACH [15], WARMUP
# [20: a slow reader is learned once its buffer has filled, then drained],
# CAPS [no yes: without and with ?fps=RATE], PORT [18700], MTU [unset: the loopback as it is, 64 KiB; set, the runs go
# into a network namespace of their own whose loopback has that MTU, as a
# LAN's 1500 gives a client 1448-byte segments; needs root], REMOTE [unset:
# the consumer beside the server, a viewer on this host, whose own socket
# the server reads; 1, with MTU: the consumer in a second namespace,
# linked to the server's by a veth pair at that MTU, as another machine
# would be, seen only by its window]. The server runs on CPU 0, the
# consumer on CPU 1.
set -euo pipefail
if [ -n "${MTU:-}" ] && [ -z "${IN_NETNS:-}" ]; then
    exec unshare -n env IN_NETNS=1 bash -c 'ip link set lo up && ip link set lo mtu "$MTU" && exec bash "$0" "$@"' "$0" "$@"
fi
out=$1; shift
host=127.0.0.1; bind=127.0.0.1; there=(); where=here
if [ -n "${REMOTE:-}" ]; then
    [ -n "${IN_NETNS:-}" ] || { echo "REMOTE needs MTU" >&2; exit 2; }
    ns=rmssr$$
    ip netns add "$ns"
    ip link add sr0 mtu "$MTU" type veth peer name sr1 mtu "$MTU" netns "$ns"
    ip addr add 10.215.0.1/30 dev sr0 && ip link set sr0 up
    ip -n "$ns" addr add 10.215.0.2/30 dev sr1 && ip -n "$ns" link set sr1 up
    ip -n "$ns" link set lo up
    host=10.215.0.1; bind=0.0.0.0; there=(ip netns exec "$ns"); where=elsewhere
fi
rates=${RATES:-1 2 5 10 20 25 29 30}
secs=${SECONDS_EACH:-15}
warmup=${WARMUP:-20}
port=${PORT:-18700}
here=$(dirname "$0")
server=""
# A consumer that fails (a server that closed it) ends the run: its
# server must not outlive it, taking CPU from the next run.
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "${ns:-}" ] && ip netns del "$ns"; true' EXIT
for spec in "$@"; do
    name=${spec%%=*}; bin=${spec#*=}
    for camera in 30 90; do
        taskset -c 0 "$bin" --bind "$bind" -p "$port" --pattern --fps "$camera" 2>/dev/null &
        server=$!
        for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/stats" && break; sleep 0.1; done
        if [ "$camera" = 90 ]; then list="30"; else list=$rates; fi
        for rate in $list; do
            for cap in ${CAPS:-no yes}; do
                query=""; [ "$cap" = yes ] && query="?fps=$rate"
                line=$("${there[@]}" taskset -c 1 python3 "$here/slow_consumer.py" \
                    "http://$host:$port/video.mjpg$query" "$rate" "$secs" "$warmup")
                echo "{\"server\":\"$name\",\"mtu\":\"${MTU:-lo}\",\"consumer\":\"$where\",\"camera_fps\":$camera,\"fps_cap\":\"$cap\",${line#\{}" | tee -a "$out"
            done
        done
        kill "$server"; wait "$server" 2>/dev/null || true
        server=""
    done
done
