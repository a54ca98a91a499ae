#!/usr/bin/env bash
# Checks the Prometheus rules of dashboards/prometheus with Debian's promtool:
# syntax (check rules) and the unit tests of every alert (test rules).
# The PromQL-uses-real-metrics check is a Go test (go test ./dashboards/).
set -euo pipefail
cd "$(dirname "$0")/../dashboards/prometheus"
if ! command -v promtool >/dev/null; then
	apt-get install -y --no-install-recommends prometheus >/dev/null
fi
promtool check rules vmi-exporter.rules.yml
promtool test rules vmi-exporter.rules.test.yml
