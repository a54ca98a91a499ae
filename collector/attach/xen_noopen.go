//go:build !xen

package attach

import (
	"context"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// openXen is nil: this binary was built without the xen tag.
var openXen func(context.Context, collector.GuestConfig, *slog.Logger) (driver.Driver, string, error)
