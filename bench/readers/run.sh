#!/usr/bin/env bash
# Real slow consumers against a camera whose every picture shows the time
# it was made in pixels (pixel_clock.py): an OpenCV loop that works 100 ms
# a frame, and Motion at `framerate 10` saving every picture. Prints the
# median age of what each got, read from the pixels, as JSON lines.
#
#   bench/readers/run.sh BIN [WARMUP_S]     (needs python3 with cv2, motion)
#
# A slow reader is paced only once its receive buffer has filled (see
# docs/SLOWLINK.md), which takes 10–60 s and longer where the kernel lets
# a buffer grow large (net.ipv4.tcp_rmem), so this is a benchmark, not a
# test: WARMUP_S [60] is how long each consumer runs before it is measured.
# Only 127.0.0.1; every process is ended by its PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1
warmup=${2:-60}
port=${PORT:-18760}
work=$(mktemp -d)
trap 'kill $camera $server 2>/dev/null || true; rm -rf "$work"' EXIT

mkfifo "$work/frames"
python3 "$here/pixel_clock.py" produce 30 $((warmup * 2 + 60)) > "$work/frames" &
camera=$!
"$bin" --bind 127.0.0.1 -p "$port" --input "$work/frames" 2>/dev/null &
server=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/stats" && break; sleep 0.1; done

echo -n '{"client":"opencv","process_ms":100,'
python3 "$here/opencv_slow.py" "http://127.0.0.1:$port/video.mjpg" 100 "$warmup" 15 | sed 's/^{//'

mkdir "$work/pictures"
cat > "$work/motion.conf" <<CONF
daemon off
setup_mode off
log_level 4
log_file $work/motion.log
target_dir $work/pictures
netcam_url http://127.0.0.1:$port/video.mjpg
framerate 10
picture_output on
emulate_motion on
movie_output off
webcontrol_port 0
stream_port 0
CONF
motion -n -c "$work/motion.conf" > /dev/null 2>&1 &
motion=$!
sleep $((warmup + 15))
kill "$motion"; wait "$motion" 2>/dev/null || true
find "$work/pictures" -name '*.jpg' -newermt "-15 seconds" -print0 \
    | xargs -0 python3 "$here/pixel_clock.py" written | sort -n \
    | awk '{a[NR]=$1} END {printf "{\"client\":\"motion\",\"framerate\":10,\"pictures\":%d,\"age_p50_ms\":%d}\n", NR, a[int(NR/2)+1]}'
