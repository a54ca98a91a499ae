#!/usr/bin/env bash
# The main job (the README's first command): installs the Debian packages
# the demo needs, then boots the embedded QEMU test guest and runs the
# exporter on it. Extra arguments go to `vmi-exporter demo`.
#
# The test guest is not part of the exporter's binary: the demo runs the
# testguest command found next to it, so both are built into one directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bin="${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/bin"
mkdir -p "$bin"
go build -o "$bin/" ./cmd/vmi-exporter ./cmd/testguest
exec "$bin/vmi-exporter" demo "$@"
