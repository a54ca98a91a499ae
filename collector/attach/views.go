package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	winprobes "github.com/vmi-exporter/vmi-exporter/collector/probes/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// ViewsDriver is a driver whose hypervisor has alternate views (Xen
// altp2m, or the software model in tests): hooks are hidden INT3s in a
// private view, kept armed across paging by a page-table monitor.
type ViewsDriver interface {
	driver.Driver
	driver.Pauser
}

// Views builds a session for a Windows guest on a driver with views. The
// guest is paused while the kernel is located and its profile loaded, and
// runs again when Views returns. On error the driver is left open: the
// caller owns it.
func Views(ctx context.Context, d ViewsDriver, g collector.GuestConfig, domainID string, log *slog.Logger) (_ collector.Session, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if g.OS != "" && g.OS != "auto" && g.OS != "windows" {
		return nil, fmt.Errorf("attach %s: views-based monitoring supports Windows guests, not %q", g.Name, g.OS)
	}
	src, err := winprobes.SourceFor(g.Profile)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	if err := d.Pause(); err != nil {
		return nil, fmt.Errorf("attach %s: pause: %w", g.Name, err)
	}
	defer func() {
		if rerr := d.Resume(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("attach %s: resume: %w", g.Name, rerr))
		}
	}()
	gos, err := winprobes.Attach(ctx, d, src, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	eng, err := hook.NewViews(d, hook.ViewsOptions{Cache: gos.OSLayer().Memory().Cache, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	log.Info("attached", "domain", g.Name, "kernel", gos.Kernel(), "vcpus", d.VCPUs())
	return &viewsSession{
		d:     d,
		os:    gos,
		eng:   eng,
		guest: &collector.Guest{Domain: g.Name, DomainID: domainID, OS: gos.OS(), Kernel: gos.Kernel()},
	}, nil
}

type viewsSession struct {
	d     ViewsDriver
	os    collector.GuestOS
	eng   hook.Engine
	guest *collector.Guest
}

func (s *viewsSession) Guest() *collector.Guest { return s.guest }
func (s *viewsSession) OS() collector.GuestOS   { return s.os }
func (s *viewsSession) Engine() hook.Engine     { return s.eng }
func (s *viewsSession) Pause() error            { return s.d.Pause() }
func (s *viewsSession) Resume() error           { return s.d.Resume() }

// Close removes every hook and restores every view and permission (the
// engine's Close), then detaches the driver.
func (s *viewsSession) Close() error {
	return errors.Join(s.eng.Close(), s.d.Close())
}
