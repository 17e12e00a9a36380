#!/usr/bin/env bash
# What tests/glass.rs (and bench/glass.sh) need: a virtual X screen (Xvfb),
# Chromium to show the clock page on it, ffmpeg to grab it, python3 to
# drive Chromium. Installs whichever is missing (as root, with apt-get).
set -euo pipefail
missing=()
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v chromium >/dev/null || missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "glass: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
