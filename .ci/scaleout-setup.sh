#!/usr/bin/env bash
# What tests/scaleout.rs (and bench/scaleout.sh) need: HAProxy in front of
# the relays, iproute2 for the network namespaces, bridge and veth pairs (and
# tc for the script's shaped uplink), curl and python3 for the script.
# Installs whichever is missing (as root, with apt-get).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-missing.sh"
install_missing "scaleout" \
    haproxy=haproxy \
    ip=iproute2 \
    tc=iproute2 \
    curl=curl \
    python3=python3
