#!/usr/bin/env bash
# The main job (the README's first command): installs the Debian packages
# the demo needs, then boots the embedded QEMU test guest and runs the
# exporter on it. Extra arguments go to `vmi-exporter demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec go run ./cmd/vmi-exporter demo "$@"
