//go:build xen

package attach

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen"
)

// openXen opens the domain by name (the guest's name when xen.domain is
// empty). A rebooted domain comes back under a new id: attaching again
// looks the name up again. The driver's own liveness poll is off: the
// collector's check (Verify, through xen's Alive) is the one.
func openXen(_ context.Context, g collector.GuestConfig, log *slog.Logger) (driver.Driver, string, error) {
	name := g.Xen.Domain
	if name == "" {
		name = g.Name
	}
	id, err := xen.LookupDomain(name)
	if err != nil {
		return nil, "", err
	}
	d, err := xen.OpenDomain(id, xen.Config{Logger: log, LivenessInterval: -1, LockDir: g.Xen.LockDir})
	if err != nil {
		return nil, "", err
	}
	if d.Reclaimed() {
		log.Warn("tore down the orphaned vm_event ring of a dead exporter", "domid", id)
	}
	return d, strconv.FormatUint(uint64(id), 10), nil
}
