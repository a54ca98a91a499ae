//go:build xen

package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen"
)

// Xen attaches to Windows HVM domains of the local Xen host by name, as
// the seed does for its win7/win10/win11 domains: libxenctrl, vm_event and
// altp2m through the Xen driver.
type Xen struct {
	// Log receives attach progress; nil discards.
	Log *slog.Logger
}

// Attach implements collector.Attacher.
func (a *Xen) Attach(ctx context.Context, g collector.GuestConfig) (collector.Session, error) {
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := g.Xen.Domain
	if name == "" {
		name = g.Name
	}
	id, err := xen.LookupDomain(name)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	d, err := xen.OpenDomain(id, xen.Config{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	s, err := Views(ctx, d, g, strconv.FormatUint(uint64(id), 10), log)
	if err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return s, nil
}
