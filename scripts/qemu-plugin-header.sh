#!/usr/bin/env bash
# Prints the directory holding qemu-plugin.h for the installed QEMU, fetching
# it first if needed. The header is in no Debian binary package; it is in the
# qemu source package (GPL-2.0-or-later), whose orig tarball apt downloads
# with its checksum checked. Only the header is kept, in a cache keyed by the
# installed version; it is never copied into the repository.
set -euo pipefail

ver=$(dpkg-query -W -f='${Version}' qemu-system-x86)
cache=${VMI_QEMU_HEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/qemu-plugin-h/${ver//:/_}}
if [ -s "$cache/qemu-plugin.h" ]; then
	echo "$cache"
	exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
src=/etc/apt/sources.list.d/vmi-exporter-src.sources
if ! apt-get source --print-uris -q "qemu=$ver" >/dev/null 2>&1; then
	$SUDO tee "$src" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	$SUDO apt-get update -q >/dev/null
fi

# The orig tarball only: the Debian diff of a backport may already be gone
# from the archive, and the header is upstream's.
line=$(apt-get source --print-uris -q "qemu=$ver" | grep -E "^'[^']+\.orig\.tar\.[a-z0-9]+' " | head -n1)
if [ -z "$line" ]; then
	echo "qemu-plugin-header: no orig tarball for qemu $ver" >&2
	exit 1
fi
read -r uri file _size hash <<<"$line"
uri=${uri//\'/}
tmp=$(mktemp -d)
chmod 0755 "$tmp" # apt-helper downloads as _apt
trap 'rm -rf "$tmp"' EXIT
/usr/lib/apt/apt-helper download-file "$uri" "$tmp/$file" "$hash" >&2
tar -xf "$tmp/$file" -C "$tmp" --wildcards '*/include/qemu/qemu-plugin.h'
mkdir -p "$cache"
install -m 0644 "$(find "$tmp" -path '*/include/qemu/qemu-plugin.h' | head -n1)" "$cache/qemu-plugin.h"
echo "$cache"
