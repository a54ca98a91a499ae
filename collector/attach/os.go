package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	winprobes "github.com/vmi-exporter/vmi-exporter/collector/probes/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// guestOS is a guest's OS as found by its OS layer: the collector's view
// of it, and what the common path needs to run hooks and checks on it.
type guestOS struct {
	collector.GuestOS
	// mem is the OS layer's memory: its translation cache is flushed
	// at every stop, as the guest may have changed its page tables.
	mem *paging.Memory
	// check, when set, tells whether the guest still runs the kernel
	// found (oslinux.OS.Verify); it reads guest memory while the guest
	// runs.
	check func() error
	// attrs are what the OS layer logs about the kernel it found.
	attrs []any
}

// osDetector finds one OS in a paused guest.
type osDetector struct {
	name   string
	detect func(ctx context.Context, d driver.Driver, g collector.GuestConfig, log *slog.Logger) (*guestOS, error)
}

// osDetectors are tried in order for a guest whose os: is auto. Linux
// comes first: its discovery (a banner in memory) fails fast and clearly
// on a Windows guest, while Windows' needs a profile source configured.
var osDetectors = []osDetector{
	{"linux", detectLinux},
	{"windows", detectWindows},
}

// detectOS finds the guest's OS with the detector g.OS names, or with
// each in turn when it is "auto" or empty.
func detectOS(ctx context.Context, d driver.Driver, g collector.GuestConfig, log *slog.Logger) (*guestOS, error) {
	var errs []error
	for _, det := range osDetectors {
		if g.OS != "" && g.OS != "auto" && g.OS != det.name {
			continue
		}
		o, err := det.detect(ctx, d, g, log)
		if err == nil {
			return o, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", det.name, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("os %q is not linux, windows or auto", g.OS)
	}
	return nil, errors.Join(errs...)
}

func detectLinux(_ context.Context, d driver.Driver, g collector.GuestConfig, log *slog.Logger) (*guestOS, error) {
	gos, err := probes.Attach(d, g.Profile, log)
	if err != nil {
		return nil, err
	}
	o := gos.OSLayer()
	return &guestOS{
		GuestOS: gos,
		mem:     o.Memory(),
		check:   o.Verify,
		attrs:   []any{"slide", fmt.Sprintf("%#x", o.Slide())},
	}, nil
}

func detectWindows(ctx context.Context, d driver.Driver, g collector.GuestConfig, log *slog.Logger) (*guestOS, error) {
	src, err := winprobes.SourceFor(g.Profile)
	if err != nil {
		return nil, err
	}
	gos, err := winprobes.Attach(ctx, d, src, log)
	if err != nil {
		return nil, err
	}
	return &guestOS{
		GuestOS: gos,
		mem:     gos.OSLayer().Memory(),
		attrs:   []any{"kernel_base", gos.OSLayer().KernelBase()},
	}, nil
}
