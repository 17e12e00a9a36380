#!/usr/bin/env bash
# What tests/glass.rs (and bench/glass.sh) need: a virtual X screen (Xvfb),
# Chromium to show the clock page on it, ffmpeg to grab it, python3 to
# drive Chromium. Installs whichever is missing (as root, with apt-get).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-missing.sh"
install_missing "glass" \
    Xvfb=xvfb \
    chromium=chromium \
    ffmpeg=ffmpeg \
    python3=python3
