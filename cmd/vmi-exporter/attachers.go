package main

import (
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
)

// attachersFunc builds the Attacher of each driver name ("qemu", "xen").
type attachersFunc func(log *slog.Logger) map[string]collector.Attacher

// attachers returns the attachers of the backends this binary was built
// with (attach.Attachers): QEMU always, Xen with the xen tag. A guest
// whose driver has no attacher is rejected at start.
func attachers(log *slog.Logger) map[string]collector.Attacher {
	return attach.Attachers(log)
}
