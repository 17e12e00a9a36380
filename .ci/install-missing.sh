# shellcheck shell=bash
# Sourced by the scripts that install what they need:
#
#   install_missing NAME COMMAND=PACKAGE[+PACKAGE...] ...
#
# installs with apt-get (as root) the packages of each COMMAND that is not
# on the PATH, each package once, and says so under NAME.
install_missing() {
    local name=$1 pair more packages=()
    shift
    for pair in "$@"; do
        if ! command -v "${pair%%=*}" >/dev/null; then
            IFS=+ read -ra more <<<"${pair#*=}"
            packages+=("${more[@]}")
        fi
    done
    [ ${#packages[@]} -gt 0 ] || return 0
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
    echo "$name: installing ${packages[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
}
