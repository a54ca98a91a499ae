#!/usr/bin/env bash
# Runs every fuzz target of the module for a few seconds (FUZZTIME, default
# 2s) on top of its seed corpus: a smoke test that the targets still build
# and that no seed or quick mutation crashes. -fuzzminimizetime is bounded
# (FUZZMINIMIZE, default 50 runs) so that a target whose baseline finds
# "new" inputs does not spend its whole run minimising them (the Windows
# targets, slow to run under coverage, used to). FUZZPARALLEL (default 2)
# is the number of fuzzing workers.
#
# The fuzzing itself runs on Go 1.27.3 (the approved toolchain, fetched
# from the module proxy like a module): Go 1.26's fuzz coordinator can
# report a bare "context deadline exceeded" as a failure when -fuzztime
# expires while a worker is mid-call (golang/go#75804, fixed in 1.27), which
# failed CI once on a loaded machine with no failing input written. The
# module still builds and tests on its own Go; FUZZ_GOTOOLCHAIN overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${FUZZ_GOTOOLCHAIN:-go1.27.3}
echo "== fuzz toolchain: $(go version)"

fuzztime=${FUZZTIME:-2s}
minimize=${FUZZMINIMIZE:-50x}
t0=$SECONDS
n=0
# file:func for every fuzz target, grouped by package directory.
grep -rH --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . |
	sed -E 's|^\./||; s|/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|:\1|' | sort -u >"${TMPDIR:-/tmp}/vmi-fuzz-targets.$$"
trap 'rm -f "${TMPDIR:-/tmp}/vmi-fuzz-targets.$$"' EXIT
while IFS=: read -r dir fn; do
	echo "== fuzz $dir $fn ($fuzztime)"
	go test -run '^$' -fuzz "^$fn\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" -parallel "${FUZZPARALLEL:-2}" "./$dir" >"${TMPDIR:-/tmp}/vmi-fuzz.out.$$" 2>&1 || {
		cat "${TMPDIR:-/tmp}/vmi-fuzz.out.$$" >&2
		rm -f "${TMPDIR:-/tmp}/vmi-fuzz.out.$$"
		echo "fuzz target $fn in ./$dir failed (the failing input is in ./$dir/testdata/fuzz/$fn)" >&2
		exit 1
	}
	n=$((n + 1))
done <"${TMPDIR:-/tmp}/vmi-fuzz-targets.$$"
rm -f "${TMPDIR:-/tmp}/vmi-fuzz.out.$$"
echo "== fuzz: $n targets in $((SECONDS - t0)) s"
