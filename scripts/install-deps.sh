#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian 12 (bookworm) machine
# with Go already on PATH: QEMU from bookworm-backports (faster breakpoint
# stops than bookworm's 7.2, see introspect/driver/qemu/README.md), busybox
# and cpio for the test guest, Prometheus for promtool and the scrape test,
# and libxen-dev to build the Xen driver. Idempotent: it does nothing when
# everything is present.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu)
for p in busybox-static cpio lz4 xz-utils prometheus libxen-dev; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
	$SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q -t bookworm-backports qemu-system-x86
$SUDO apt-get install -y -q busybox-static cpio lz4 xz-utils prometheus libxen-dev
