//go:build !xen

package main

import (
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// addPlatformAttachers adds nothing: this binary was built without the xen
// tag, so guests with driver "xen" are rejected at start.
func addPlatformAttachers(map[string]collector.Attacher, *slog.Logger) {}
