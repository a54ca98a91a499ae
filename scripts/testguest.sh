#!/bin/sh
# Thin wrapper around cmd/testguest: prepare or boot the reproducible QEMU
# test guest (see internal/testguest/README.md).
#   scripts/testguest.sh boot -dir /tmp/x      # JSON with sockets and RAM path; Ctrl-C stops
#   scripts/testguest.sh bench -rounds 10 [-qemu-deb bookworm]
set -eu
cd "$(dirname "$0")/.."
exec go run ./cmd/testguest "$@"
