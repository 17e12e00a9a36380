#!/usr/bin/env bash
# The Pi builds on emulated Pi processors, beyond what CI checks (not for CI:
# the test suite alone takes several minutes under emulation):
#   1. the ARMv6 build (Pi 1, Zero) on an ARM1176 (qemu-arm -cpu arm1176):
#      .ci/cross.sh's checks: --version, snapshot, stream, /metrics, SIGTERM;
#   2. the whole test suite built for aarch64-unknown-linux-musl, each test
#      program run under qemu-aarch64 -cpu cortex-a53 (a Pi 3 / Zero 2 W).
#
#   bash tools/qemu-test.sh                     both
#   bash tools/qemu-test.sh -- --include-ignored   test arguments after --
#
# The tests start the server binary themselves; rather than registering
# qemu with binfmt_misc (kernel-wide state), the aarch64 server binary is
# put behind a small script that runs it under qemu for the duration, and
# put back at the end, however the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."

test_args=()
if [ "${1-}" = -- ]; then
    shift
    test_args=("$@")
fi
began=$SECONDS
log() { printf 'qemu-test: %s\n' "$*" >&2; }

log "1. ARMv6 on qemu-arm -cpu arm1176"
bash .ci/cross.sh arm-unknown-linux-musleabihf:arm1176
armv6_secs=$((SECONDS - began))

log "2. the test suite on qemu-aarch64 -cpu cortex-a53"
target=aarch64-unknown-linux-musl
export PATH=${XDG_CACHE_HOME:-$HOME/.cache}/raspivid_mjpeg_server-release/venv/bin:$PATH
cargo-zigbuild --version >/dev/null 2>&1 || bash tools/release.sh --no-deb --targets "$target" --out target/cross
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
built=$SECONDS
cargo-zigbuild test --workspace --target "$target" --no-run --message-format=json-render-diagnostics \
    >target/qemu-test-build.json
build_secs=$((SECONDS - built))
# Each test program and the folder of its package (cargo runs tests there).
mapfile -t programs < <(python3 - target/qemu-test-build.json <<'EOF'
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
EOF
)
log "${#programs[@]} test programs built in $build_secs s"

server=$target_dir/$target/debug/raspivid_mjpeg_server
real=$server.aarch64
[ -f "$server" ] || { log "no $server"; exit 1; }
restore() { if [ -f "$real" ]; then mv -f "$real" "$server"; fi; }
trap restore EXIT
mv "$server" "$real"
printf '#!/bin/sh\nexec qemu-aarch64-static -cpu cortex-a53 "%s" "$@"\n' "$real" >"$server"
chmod +x "$server"

failed=0
results=target/qemu-test-results.txt
: >"$results"
for entry in "${programs[@]}"; do
    dir=${entry%%$'\t'*}
    exe=${entry#*$'\t'}
    name=$(basename "$exe")
    log "$name"
    status=0
    (cd "$dir" && CARGO_MANIFEST_DIR=$dir timeout 1800 qemu-aarch64-static -cpu cortex-a53 "$exe" "${test_args[@]}") \
        2>&1 | tee "target/qemu-test-$name.log" || status=$?
    summary=$(grep -E '^test result:' "target/qemu-test-$name.log" | tail -n 1 || true)
    printf '%s: %s\n' "$name" "${summary:-exit $status, no result line}" >>"$results"
    [ $status = 0 ] || failed=1
done

log "ARMv6 check: $armv6_secs s; tests: build $build_secs s, whole run $((SECONDS - began)) s"
cat "$results" >&2
grep -hE '^test .* FAILED$|^    [a-z_]+$' target/qemu-test-*.log >&2 || true
exit $failed
