#!/usr/bin/env bash
# Glass-to-glass latency of this server, VLC, the Flask pattern and the
# original, with no camera (docs/LATENCY.md): installs what is missing,
# builds, runs bench/glass.py, writes bench/out/glass.md.
#
#   bash bench/glass.sh                           # 30 and 60 fps, 3 reps: about 8 minutes
#   ORIGINAL_SRC=~/raspivid_mjpeg_server bash bench/glass.sh   # with the original too
#   bash bench/glass.sh --servers this --fps 30 --reps 1
#
# ORIGINAL_SRC is a checkout of the original (github.com/kig/raspivid_mjpeg_server);
# it is built from a copy with its own Cargo.lock, its listening address
# changed from 0.0.0.0 to 127.0.0.1. Or give its binary as ORIGINAL=path.
# Arguments go to bench/glass.py (see --help there).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-bench}"
bash .ci/glass-setup.sh
source .ci/install-missing.sh
install_missing "glass bench" \
    cvlc=vlc-bin+vlc-plugin-base \
    setpriv=util-linux
python3 -c 'import flask' 2>/dev/null || pip install -q flask

cargo build --release -p raspivid_mjpeg_server -p mjpeg-probe

if [ -n "${ORIGINAL_SRC:-}" ] && [ -z "${ORIGINAL:-}" ]; then
    copy="$CARGO_TARGET_DIR/original-src"
    rm -rf "$copy" && cp -r "$ORIGINAL_SRC" "$copy"
    sed -i 's/SocketAddr::from((\[0, 0, 0, 0\], opt.port))/SocketAddr::from(([127, 0, 0, 1], opt.port))/' \
        "$copy/src/main.rs"
    grep -q '127, 0, 0, 1' "$copy/src/main.rs" || { echo "original: cannot bind it to 127.0.0.1" >&2; exit 1; }
    (cd "$copy" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/original" cargo build --release --locked)
    export ORIGINAL="$CARGO_TARGET_DIR/original/release/raspivid_mjpeg_server"
fi

mkdir -p bench/out
python3 bench/glass.py "$@"
python3 bench/glass_report.py >bench/out/glass.md
cat bench/out/glass.md
