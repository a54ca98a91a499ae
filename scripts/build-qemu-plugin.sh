#!/usr/bin/env bash
# Builds the vmi-hooks QEMU plugin (introspect/driver/qemu/plugin) with gcc
# against the installed QEMU's qemu-plugin.h, which scripts/qemu-plugin-header.sh
# takes from Debian's qemu source package (never copied into the repository),
# and prints the path of the .so.
#
# Usage: build-qemu-plugin.sh [OUTDIR]   (default: a cache keyed by the
# QEMU version and the source's hash, so an unchanged plugin is not rebuilt)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src="$here/../introspect/driver/qemu/plugin/vmi-hooks.c"
hdr=$(bash "$here/qemu-plugin-header.sh")
glib=$(pkg-config --cflags glib-2.0)

if [ $# -ge 1 ]; then
	out=$1
else
	ver=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || echo unknown)
	sum=$(cat "$src" "$0" | sha256sum | cut -c1-16)
	out=${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/qemu-plugin/${ver//:/_}-$sum
fi
mkdir -p "$out"
so="$out/libvmi-hooks.so"
if [ ! -s "$so" ] || [ "$src" -nt "$so" ]; then
	# A private temporary name and a rename: test packages build it in
	# parallel, and none may load a half-written file.
	tmp=$(mktemp "$out/.libvmi-hooks.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	# shellcheck disable=SC2086 # pkg-config prints several flags
	gcc -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror \
		-shared -fPIC -fvisibility=hidden \
		-I"$hdr" $glib \
		-o "$tmp" "$src" -lpthread
	chmod 0755 "$tmp"
	mv -f "$tmp" "$so"
fi
echo "$so"
