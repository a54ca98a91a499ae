package main

import (
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
)

// attachersFunc builds the Attacher of each driver name ("qemu", "xen").
type attachersFunc func(log *slog.Logger) map[string]collector.Attacher

// attachers returns the attachers this binary was built with: QEMU (Linux
// guests) always, Xen when built with the xen tag (see attachers_xen.go).
// A guest whose driver has no attacher is rejected at start.
func attachers(log *slog.Logger) map[string]collector.Attacher {
	m := map[string]collector.Attacher{
		"qemu": &attach.QEMU{Log: log},
	}
	addPlatformAttachers(m, log)
	return m
}
