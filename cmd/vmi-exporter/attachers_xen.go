//go:build xen

package main

import (
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
)

// addPlatformAttachers adds the Xen attacher (Windows guests by domain
// name) to a binary built with the xen tag.
func addPlatformAttachers(m map[string]collector.Attacher, log *slog.Logger) {
	m["xen"] = &attach.Xen{Log: log}
}
