#!/usr/bin/env bash
# bench-qemu-hits.sh: breakpoint hits per second through QEMU's gdbstub on
# the test guest, for the installed QEMU and the other Debian 12 candidate
# (bookworm's 7.2 or bookworm-backports' 10.0, whichever is not installed),
# plus the guest's workload rate with and without the breakpoint. The other
# QEMU is fetched with apt-get download and unpacked into a cache directory;
# the installed QEMU is not touched.
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
# The suite of the QEMU to compare with the installed one.
if qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 7\.2'; then
	suite=bookworm-backports other=backports
else
	suite=bookworm other=7.2
fi
cache=${VMI_QEMU_OTHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/qemu-$suite}

# version PKG: the version of PKG in $suite/main.
version() {
	apt-cache madison "$1" | awk -F'|' -v s=" $suite/main " '$3 ~ s {gsub(/ /,"",$2); print $2; exit}'
}

# fetch_other unpacks the other qemu-system-x86 with its modules, data
# files and its suite's SeaBIOS into $cache/root.
fetch_other() {
	[ -x "$cache/root/usr/bin/qemu-system-x86_64" ] && return
	ver=$(version qemu-system-x86)
	datav=$(version qemu-system-data)
	biosv=$(version seabios)
	[ -n "$ver" ] && [ -n "$datav" ] && [ -n "$biosv" ] || {
		echo "QEMU of $suite not found in apt sources (apt-get update? bookworm-backports configured?)" >&2
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

fetch_other
qo=(QEMU_MODULE_DIR="$cache/root/usr/lib/x86_64-linux-gnu/qemu"
	VMI_QEMU="$cache/root/usr/bin/qemu-system-x86_64"
	VMI_QEMU_DATADIR="$cache/root/usr/share/qemu")
vo=$(env "${qo[@]:0:1}" "$cache/root/usr/bin/qemu-system-x86_64" --version | head -1)
vsys=$(qemu-system-x86_64 --version | head -1)

printf '%-4s %-10s %10s %16s %21s\n' run qemu hits/s records/s-free records/s-monitored
sumo=0 sumsys=0
for i in $(seq "$runs"); do
	read -r h f m < <(bench "${qo[@]}")
	printf '%-4s %-10s %10s %16s %21s\n' "$i" "$other" "$h" "$f" "$m"
	sumo=$(awk -v a="$sumo" -v b="$h" 'BEGIN { print a + b }')
	read -r h f m < <(bench PATH="$PATH")
	printf '%-4s %-10s %10s %16s %21s\n' "$i" installed "$h" "$f" "$m"
	sumsys=$(awk -v a="$sumsys" -v b="$h" 'BEGIN { print a + b }')
done
echo "$other: $vo"
echo "installed: $vsys"
awk -v a="$sumo" -v b="$sumsys" -v n="$runs" -v o="$other" 'BEGIN {
	printf "mean hits/s: %s %.1f, installed %.1f, installed/%s = %.2f\n", o, a / n, b / n, o, (a > 0 ? b / a : 0)
}'
