#!/usr/bin/env bash
# Installs what tests/browsers.rs (and bench/browser_screen_lag.py) need when
# it is missing: Firefox ESR, WebKitGTK's WebDriver (which brings MiniBrowser),
# Xvfb, and geckodriver. Debian has no geckodriver, so it is built from
# crates.io (about 75 s on two cores). The scripts that drive the browsers
# use Python's standard library only. Needs root for apt-get.
set -euo pipefail

missing=()
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v WebKitWebDriver >/dev/null || missing+=(webkit2gtk-driver)
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v geckodriver >/dev/null; then
    echo "installing: geckodriver (cargo install)"
    # Without CARGO_TARGET_DIR, cargo builds it in a temporary directory
    # that it removes, leaving the project's target directory alone.
    env -u CARGO_TARGET_DIR nice cargo install --locked --quiet geckodriver
fi
