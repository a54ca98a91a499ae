#!/usr/bin/env bash
# The project's test command (the README's second command). It installs the
# Debian packages the tests need, then runs vet, the Xen build, every Go
# test (including the end-to-end tests that boot the QEMU test guest), and
# the rules and chart checks.
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

echo "== go test"
go test -count=1 -timeout 45m ./...

echo "== rules"
bash scripts/check-rules.sh
echo "== chart"
bash scripts/check-helm.sh
