#!/usr/bin/env bash
# Installs what tests/browsers.rs (and bench/browser_screen_lag.py) need when
# it is missing: Firefox ESR, WebKitGTK's WebDriver (which brings MiniBrowser),
# Chromium's WebDriver (chromedriver), Xvfb, and geckodriver. Debian has no geckodriver, so it is built from
# crates.io (about 75 s on two cores). The scripts that drive the browsers
# use Python's standard library only. Needs root for apt-get.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/install-missing.sh"
install_missing "browsers" \
    firefox-esr=firefox-esr \
    WebKitWebDriver=webkit2gtk-driver \
    chromedriver=chromium-driver \
    Xvfb=xvfb \
    python3=python3

if ! command -v geckodriver >/dev/null; then
    echo "installing: geckodriver (cargo install)"
    # Without CARGO_TARGET_DIR, cargo builds it in a temporary directory
    # that it removes, leaving the project's target directory alone.
    env -u CARGO_TARGET_DIR nice cargo install --locked --quiet geckodriver
fi
