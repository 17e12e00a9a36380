#!/usr/bin/env bash
# Release artefacts in target/dist/:
#   raspivid_mjpeg_server-VERSION-TARGET   static (musl) binaries for
#       aarch64-unknown-linux-musl      Pi 3, 4, 5, Zero 2 W on a 64-bit OS
#       armv7-unknown-linux-musleabihf  Pi 2, 3, 4, 5, Zero 2 W on a 32-bit OS
#       arm-unknown-linux-musleabihf    every Pi, the 1 and Zero too (ARMv6)
#       x86_64-unknown-linux-musl       PCs
#   raspivid-mjpeg-server_VERSION-1_{arm64,armhf,amd64}.deb   (armhf carries
#       the ARMv6 build: Raspberry Pi OS's 32-bit armhf is ARMv6)
#   SHA256SUMS, raspivid_mjpeg_server.1 (the man page, from --help)
#
#   bash tools/release.sh                      everything
#   bash tools/release.sh --no-deb --targets 'aarch64-unknown-linux-musl' --out target/cross
#                         (--out is relative to the repository)
#
# Installs what it lacks: zig and cargo-zigbuild from PyPI (in a venv under
# ~/.cache), cargo-deb with cargo install, help2man with apt-get, the Rust
# targets with rustup, and for targets that rustup has no prebuilt std for,
# nightly's rust-src to build std (-Z build-std). Builds are incremental in
# CARGO_TARGET_DIR (default: target/); a second run rebuilds nothing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

all_targets="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf x86_64-unknown-linux-musl"
targets=$all_targets
debs=1
dist=$repo/target/dist
while [ $# -gt 0 ]; do
    case $1 in
        --targets) targets=$2; shift 2 ;;
        --no-deb) debs=0; shift ;;
        --out) dist=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
        *) echo "release.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Pinned to the versions this script was checked with.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0
NIGHTLY=${RMS_NIGHTLY:-nightly}
tools=${RMS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/raspivid_mjpeg_server-release}

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
package=raspivid_mjpeg_server
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

step() { printf '\n==> %s\n' "$*" >&2; }
say() { printf '    %s\n' "$*" >&2; }
die() { printf 'release.sh: error: %s\n' "$*" >&2; exit 1; }

[ -n "$version" ] || die "no version = \"...\" in Cargo.toml"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup"
command -v rustup >/dev/null || die "rustup not found: the cross targets and nightly's rust-src come from rustup"

# A developer's flags would override the per-target ones below and make a
# release differ from its recipe.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "apt-get install $*"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
            apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
        fi
    else
        die "$* missing: install it (apt-get install $*) or run as root"
    fi
}

step "raspivid_mjpeg_server $version: targets: $targets"
say "build tree: $CARGO_TARGET_DIR; outputs: $dist"

step "tools"
# zig (the cross linker and C library for every target) and cargo-zigbuild.
venv=$tools/venv
export PATH=$venv/bin:$HOME/.cargo/bin:$PATH
if ! { cargo-zigbuild --version && python3 -m ziglang version; } >/dev/null 2>&1; then
    say "installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION from PyPI into $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    hash -r
fi
say "$(cargo-zigbuild --version), zig $(python3 -m ziglang version)"
command -v readelf >/dev/null || apt_install binutils
if [ $debs = 1 ]; then
    if ! cargo deb --version >/dev/null 2>&1; then
        say "installing cargo-deb $CARGO_DEB_VERSION (cargo install, about a minute)"
        cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
    fi
    say "$(cargo deb --version)"
    command -v help2man >/dev/null || apt_install help2man
fi

# Rust's std for each target: rustup's prebuilt one where it has it,
# otherwise built from nightly's rust-src (-Z build-std).
installed=$(rustup target list --installed)
build_std=""
for t in $targets; do
    if grep -qx "$t" <<<"$installed"; then
        continue
    fi
    say "rustup target add $t"
    if rustup target add "$t" >/dev/null 2>&1; then
        continue
    fi
    say "no prebuilt std for $t from rustup: it will be built with $NIGHTLY -Z build-std"
    build_std="$build_std $t"
done
if [ -n "$build_std" ]; then
    if ! rustup component list --installed --toolchain "$NIGHTLY" 2>/dev/null | grep -q '^rust-src'; then
        say "installing $NIGHTLY with rust-src"
        rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src ||
            die "$NIGHTLY with rust-src could not be installed, and$build_std need it"
    fi
    say "$(rustc "+$NIGHTLY" --version)"
fi

# Only what this script writes, so that --out can name any folder.
rm -f "$dist/$package"-* "$dist"/raspivid-mjpeg-server_*.deb "$dist/SHA256SUMS" "$dist/$package.1"

outputs=()
for t in $targets; do
    step "build $t"
    env_name=$(tr 'a-z-' 'A-Z_' <<<"$t")
    # A linker set for the target would silently override zig.
    unset "CARGO_TARGET_${env_name}_LINKER"
    start=$SECONDS
    if [[ " $build_std " == *" $t "* ]]; then
        # std's objects come from this build, so musl's crt objects come
        # from zig rather than from a prebuilt std's self-contained copy.
        # (The linker then warns that the sysroot has no lib folder for the
        # target: harmless, nothing is taken from there.)
        env "CARGO_TARGET_${env_name}_RUSTFLAGS=-C link-self-contained=no" \
            cargo "+$NIGHTLY" zigbuild --release --locked -p "$package" --bin "$package" \
            --target "$t" -Z build-std=std,panic_abort
    else
        cargo zigbuild --release --locked -p "$package" --bin "$package" --target "$t"
    fi
    bin=$CARGO_TARGET_DIR/$t/release/$package
    [ -x "$bin" ] || die "no binary at $bin"
    if readelf -lW "$bin" | grep -q 'program interpreter'; then
        die "$bin is dynamically linked"
    fi
    if [ "$t" = arm-unknown-linux-musleabihf ]; then
        # Pi 1 and Zero: ARMv6 (ARM1176) only, no ARMv7 instructions.
        arch=$(readelf -A "$bin" | sed -n 's/^ *Tag_CPU_arch: //p')
        [ "$arch" = v6 ] || die "$bin is built for '$arch', not ARMv6"
    fi
    out=$dist/$package-$version-$t
    cp "$bin" "$out"
    outputs+=("$(basename "$out")")
    say "$(basename "$out"): $(stat -c %s "$out") bytes, static, built in $((SECONDS - start)) s"
done

if [ $debs = 1 ]; then
    step "man page"
    # From --help of a build that runs here (natively, or through binfmt).
    man_bin=""
    for t in $targets; do
        if "$dist/$package-$version-$t" --version >/dev/null 2>&1; then
            man_bin=$dist/$package-$version-$t
            break
        fi
    done
    [ -n "$man_bin" ] || die "none of the built binaries runs on this machine, so there is no --help for the man page"
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
    mkdir -p target/packaging
    # help2man runs it by name: a link named like the installed binary.
    ln -sf "$man_bin" "target/packaging/$package"
    cat >target/packaging/see-also.h2m <<'EOF'
[SEE ALSO]
/usr/share/doc/raspivid-mjpeg-server/DEPLOY.md: the systemd service and
socket, /etc/default/raspivid_mjpeg_server, camera commands, a proxy with TLS,
OctoPrint, Home Assistant and Prometheus.
EOF
    help2man --no-info --section 1 --version-string "$version" \
        --name "low-latency MJPEG over HTTP from a camera's pipe to every viewer" \
        --include target/packaging/see-also.h2m "target/packaging/$package" >target/packaging/$package.1
    rm "target/packaging/$package"
    cp target/packaging/$package.1 "$dist/"
    outputs+=("$package.1")
    say "target/packaging/$package.1 ($(grep -c '^\.TP' target/packaging/$package.1) options)"

    step ".deb packages"
    synopsis=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    if [ ${#synopsis} -gt 79 ]; then
        say "note: Cargo.toml's description is ${#synopsis} characters; Debian's synopsis"
        say "      is one line of at most 79, so cargo-deb wraps it into the long description."
    fi
    debs_built=()
    for t in $targets; do
        case $t in
            x86_64-unknown-linux-musl | aarch64-unknown-linux-musl | arm-unknown-linux-musleabihf) ;;
            *) continue ;; # armv7 would be a second armhf .deb; armhf carries ARMv6.
        esac
        # --no-strip: the release profile strips already, and a foreign strip may be missing.
        deb=$(cargo deb --no-build --no-strip -p "$package" --target "$t" --output "$dist/" | tail -n 1)
        [ -f "$deb" ] || die "cargo deb made no package for $t"
        say "$(basename "$deb"): $(stat -c %s "$deb") bytes, $(dpkg-deb -f "$deb" Architecture 2>/dev/null || echo '?') ($t)"
        debs_built+=("$deb")
        outputs+=("$(basename "$deb")")
    done

    if [ ${#debs_built[@]} -gt 0 ] && command -v lintian >/dev/null; then
        step "lintian"
        # Errors fail the release; warnings and notes are shown. The
        # deliberate ones are overridden in packaging/lintian-overrides.
        rc=0
        lintian --fail-on error --display-level '>=info' "${debs_built[@]}" >target/packaging/lintian.txt 2>&1 || rc=$?
        grep -v 'running with root privileges' target/packaging/lintian.txt | sed 's/^/    /' >&2 || true
        [ $rc = 0 ] || die "lintian found errors (above)"
        say "lintian: no errors"
    elif [ ${#debs_built[@]} -gt 0 ]; then
        say "lintian not installed: .debs not checked (apt-get install lintian; .ci/packaging.sh does it)"
    fi
fi

(cd "$dist" && sha256sum -- "${outputs[@]}" >SHA256SUMS)
step "done: $dist"
(cd "$dist" && ls -l -- "${outputs[@]}" SHA256SUMS) >&2
