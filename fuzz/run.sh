#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one after the other,
# in one process each. Installs cargo-fuzz when it is missing. Exits non-zero
# when any target finds a crash (its input is left in fuzz/artifacts/TARGET/).
#
#   fuzz/run.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

# cargo-fuzz passes -Z flags to rustc; this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz --version '^0.13'
fi
# libfuzzer-sys compiles libFuzzer, which is C++.
command -v c++ >/dev/null || { echo "a C++ compiler (c++) is needed to build libFuzzer" >&2; exit 2; }

# The targets are safe Rust: no sanitizer, but debug assertions and
# overflow checks stay on (cargo-fuzz's default).
common=(-s none)

failed=()
for target in splitter http_request; do
    # New inputs go to a scratch corpus under fuzz/target (ignored by git);
    # the committed seeds are only read.
    work=fuzz/target/corpus/$target
    mkdir -p "$work"
    echo "== $target: ${secs}s"
    if ! cargo fuzz run "${common[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes"
