#!/usr/bin/env bash
# The project's test command (the README's second command). It installs the
# Debian packages the tests need, then runs vet, the Xen build, every Go
# test (including the end-to-end tests that boot the QEMU test guest), and
# the rules and chart checks, and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== go vet"
go vet ./...
echo "== go build/vet -tags xen"
go build -tags xen ./...
go vet -tags xen ./...
# The ring and ABI cross-checks against libxen-dev's headers (no Xen needed).
go test -count=1 -tags xen ./introspect/driver/xen/

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path '*/testdata/*' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed: $unformatted" >&2
	exit 1
fi

echo "== go test"
go test -count=1 -timeout 45m ./...

# The concurrent parts (event loops, queues, exporters, the gdbstub reader,
# the hook engines on the model) under the race detector; -short keeps the
# model's random-interleaving runs small.
echo "== go test -race"
go test -race -short -count=1 -timeout 20m ./collector/ ./collector/rules/ ./exporter/... \
	./introspect/hook/ ./introspect/bpm/ ./introspect/ptm/ ./introspect/driver/sim/ \
	./introspect/driver/qemu/gdbstub/ ./introspect/driver/qemu/qmp/ ./introspect/driver/qemu/

# Every fuzz target for a few seconds (about 2-3 minutes in all).
echo "== fuzz smoke"
bash scripts/fuzz-smoke.sh

echo "== rules"
bash scripts/check-rules.sh
echo "== chart"
bash scripts/check-helm.sh
