#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian 12 (bookworm) machine
# with Go already on PATH: QEMU 10.0 from bookworm-backports (its TCG plugin
# API v4 lets the hook plugin read registers and guest memory; Debian 12's
# 7.2 has API v1, which cannot), libglib2.0-dev and gcc to build the plugin,
# busybox and cpio for the test guest, Prometheus for promtool and the scrape
# tests, libxen-dev to build the Xen driver, and gcc for cgo (the Xen driver,
# the race detector). The plugin's header comes from Debian's qemu source
# package (scripts/qemu-plugin-header.sh). Idempotent: it does nothing when
# everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu10 reports whether bookworm-backports' QEMU 10.0 is the installed one.
qemu10() {
	case "$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null)" in
	1:10.0*) return 0 ;;
	esac
	return 1
}

pkgs=(busybox-static cpio lz4 xz-utils prometheus libxen-dev gcc libc6-dev libglib2.0-dev pkg-config)
need=()
qemu10 || need+=(qemu)
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ ${#need[@]} -gt 0 ]; then
	if [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ] && ! grep -rqs '^[^#]*deb .*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
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
	if ! qemu10; then
		$SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
	fi
	$SUDO apt-get install -y -q "${pkgs[@]}"
fi

bash scripts/qemu-plugin-header.sh >/dev/null
