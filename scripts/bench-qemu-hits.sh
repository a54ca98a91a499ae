#!/usr/bin/env bash
# bench-qemu-hits.sh: breakpoint hits per second through QEMU's gdbstub on
# the test guest, for Debian 12's QEMU 7.2 and the installed QEMU (10.0 from
# bookworm-backports), plus the guest's workload rate with and without the
# breakpoint. QEMU 7.2 is fetched with apt-get download and unpacked into a
# cache directory; the installed QEMU is not touched.
#
#   scripts/bench-qemu-hits.sh [-n HITS] [-r RUNS]
#
# Each run boots a fresh guest, puts one breakpoint on ksys_write while the
# guest loops its workload, and answers HITS hits (BenchmarkBreakpointHit in
# introspect/driver/qemu). Runs alternate between the two QEMUs.
set -euo pipefail

hits=100
runs=3
while getopts "n:r:" o; do
	case $o in
	n) hits=$OPTARG ;;
	r) runs=$OPTARG ;;
	*) echo "usage: $0 [-n HITS] [-r RUNS]" >&2; exit 2 ;;
	esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${VMI_QEMU72_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/qemu-7.2}

# fetch_qemu72 unpacks qemu-system-x86 7.2 with its modules, data files and
# Debian 12's SeaBIOS into $cache/root.
fetch_qemu72() {
	[ -x "$cache/root/usr/bin/qemu-system-x86_64" ] && return
	ver=$(apt-cache madison qemu-system-x86 | awk -F'|' '$2 ~ /7\.2/ {gsub(/ /,"",$2); print $2; exit}')
	datav=$(apt-cache madison qemu-system-data | awk -F'|' '$2 ~ /7\.2/ {gsub(/ /,"",$2); print $2; exit}')
	biosv=$(apt-cache madison seabios | awk -F'|' '$3 ~ /bookworm\/main/ {gsub(/ /,"",$2); print $2; exit}')
	[ -n "$ver" ] && [ -n "$datav" ] && [ -n "$biosv" ] || {
		echo "QEMU 7.2 not found in apt sources (need Debian 12 bookworm)" >&2
		exit 1
	}
	mkdir -p "$cache/debs" "$cache/root"
	(cd "$cache/debs" && apt-get download "qemu-system-x86=$ver" "qemu-system-common=$ver" \
		"qemu-system-data=$datav" "seabios=$biosv" >&2)
	for d in "$cache"/debs/*.deb; do dpkg-deb -x "$d" "$cache/root"; done
	# QEMU looks for SeaBIOS next to its other firmware.
	for f in "$cache"/root/usr/share/seabios/*; do
		ln -sf "$f" "$cache/root/usr/share/qemu/$(basename "$f")"
	done
}

# bench NAME [env...]: one run, prints "hits/s records/s-free records/s-monitored".
bench() {
	local out
	out=$(cd "$repo" && env "$@" go test -run '^$' -bench '^BenchmarkBreakpointHit$' \
		-benchtime "${hits}x" -timeout 20m ./introspect/driver/qemu 2>&1) || {
		echo "$out" >&2
		return 1
	}
	echo "$out" | awk '/^BenchmarkBreakpointHit|hits\/s/ {
		for (i = 1; i < NF; i++) {
			if ($(i+1) == "hits/s") h = $i
			if ($(i+1) == "records/s-free") f = $i
			if ($(i+1) == "records/s-monitored") m = $i
		}
	} END { print h, f, m }'
}

fetch_qemu72
q72=(QEMU_MODULE_DIR="$cache/root/usr/lib/x86_64-linux-gnu/qemu"
	VMI_QEMU="$cache/root/usr/bin/qemu-system-x86_64"
	VMI_QEMU_DATADIR="$cache/root/usr/share/qemu")
v72=$(env "${q72[@]:0:1}" "$cache/root/usr/bin/qemu-system-x86_64" --version | head -1)
vsys=$(qemu-system-x86_64 --version | head -1)

printf '%-4s %-10s %10s %16s %21s\n' run qemu hits/s records/s-free records/s-monitored
sum72=0 sumsys=0
for i in $(seq "$runs"); do
	read -r h f m < <(bench "${q72[@]}")
	printf '%-4s %-10s %10s %16s %21s\n' "$i" 7.2 "$h" "$f" "$m"
	sum72=$(awk -v a="$sum72" -v b="$h" 'BEGIN { print a + b }')
	read -r h f m < <(bench PATH="$PATH")
	printf '%-4s %-10s %10s %16s %21s\n' "$i" installed "$h" "$f" "$m"
	sumsys=$(awk -v a="$sumsys" -v b="$h" 'BEGIN { print a + b }')
done
echo "7.2:       $v72"
echo "installed: $vsys"
awk -v a="$sum72" -v b="$sumsys" -v n="$runs" 'BEGIN {
	printf "mean hits/s: 7.2 %.1f, installed %.1f, installed/7.2 = %.2f\n", a / n, b / n, (a > 0 ? b / a : 0)
}'
