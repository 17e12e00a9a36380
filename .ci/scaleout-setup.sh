#!/usr/bin/env bash
# What tests/scaleout.rs (and bench/scaleout.sh) need: HAProxy in front of
# the relays, iproute2 for the network namespaces, bridge and veth pairs (and
# tc for the script's shaped uplink), curl and python3 for the script.
# Installs whichever is missing (as root, with apt-get).
set -euo pipefail
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v ip >/dev/null || missing+=(iproute2)
command -v tc >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "scaleout: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
