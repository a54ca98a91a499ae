package main

import (
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// attachersFunc builds the Attacher of each driver name ("qemu", "xen").
type attachersFunc func(log *slog.Logger) map[string]collector.Attacher

// attachers is the seam where the drivers plug in: the QEMU driver with
// the Linux OS layer (issue 2) registers here as "qemu", Xen later as
// "xen". A guest whose driver has no attacher is rejected at start.
func attachers(log *slog.Logger) map[string]collector.Attacher {
	return map[string]collector.Attacher{}
}
