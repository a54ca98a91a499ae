// Package attach connects the collector to guests: each Attacher opens a
// hypervisor driver, identifies the guest's kernel, builds its OS layer and
// returns a collector.Session with a hook engine ready for probes.
package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
)

// QEMU attaches to Linux guests of a running QEMU through its gdbstub, its
// QMP socket and, when configured, its shared RAM file.
type QEMU struct {
	// Log receives attach progress; nil discards.
	Log *slog.Logger
	// Timeout bounds each gdbstub and QMP exchange (default 20s).
	Timeout time.Duration
}

// Attach implements collector.Attacher.
func (a *QEMU) Attach(ctx context.Context, g collector.GuestConfig) (_ collector.Session, err error) {
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("domain", g.Name)
	if g.OS != "" && g.OS != "auto" && g.OS != "linux" {
		return nil, fmt.Errorf("attach %s: the QEMU attacher supports Linux guests, not %q", g.Name, g.OS)
	}
	timeout := a.Timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	d, err := qemu.Open(ctx, qemu.Config{
		GDBSocket: g.QEMU.GDBSocket,
		QMPSocket: g.QEMU.QMPSocket,
		RAMPath:   g.QEMU.RAMPath,
		RAMSize:   g.QEMU.RAMSize,
		Timeout:   timeout,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	// Open leaves the guest stopped; whatever happens next, it runs again.
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Close())
			return
		}
		if rerr := d.Resume(); rerr != nil {
			err = errors.Join(fmt.Errorf("attach %s: resume: %w", g.Name, rerr), d.Close())
		}
	}()
	prof, err := linuxProfile(d, g.Profile, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	o, err := oslinux.New(d, prof, oslinux.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	log.Info("attached", "kernel", o.Banner(), "slide", fmt.Sprintf("%#x", o.Slide()), "vcpus", d.VCPUs())
	return &qemuSession{
		d:   d,
		o:   o,
		os:  probes.New(o),
		eng: hook.NewNative(d, hook.WithFlush(o.Flush)),
		guest: &collector.Guest{
			Domain:   g.Name,
			DomainID: g.QEMU.GDBSocket,
			OS:       "linux",
			Kernel:   o.Banner(),
		},
	}, nil
}

type qemuSession struct {
	d     *qemu.Driver
	o     *oslinux.OS
	os    collector.GuestOS
	eng   hook.Engine
	guest *collector.Guest
}

func (s *qemuSession) Guest() *collector.Guest { return s.guest }
func (s *qemuSession) OS() collector.GuestOS   { return s.os }
func (s *qemuSession) Engine() hook.Engine     { return s.eng }
func (s *qemuSession) Pause() error            { return s.d.Pause() }
func (s *qemuSession) Resume() error           { return s.d.Resume() }

// Verify implements collector.Verifier. A reset (reboot) of the guest is
// seen in QMP's events; a reset leaves the old kernel's memory in place
// until the new one overwrites it, so re-reading the banner from the shared
// RAM file, the check without QMP, only notices a kernel that moved over
// the old one. Through the gdbstub alone memory cannot be read while the
// guest runs.
func (s *qemuSession) Verify() error {
	n, rerr := s.d.Resets()
	switch {
	case rerr == nil && n > 0:
		return fmt.Errorf("guest reset %d times since attach: %w", n, oslinux.ErrKernelChanged)
	case rerr != nil && !errors.Is(rerr, driver.ErrUnsupported):
		return rerr
	}
	if !s.d.SharedRAM() {
		if rerr != nil {
			return fmt.Errorf("qemu: neither QMP nor a shared RAM file: %w", driver.ErrUnsupported)
		}
		return nil
	}
	return s.o.Verify()
}

var _ collector.Verifier = (*qemuSession)(nil)

// Close removes every hook, then detaches; the guest keeps running.
func (s *qemuSession) Close() error {
	return errors.Join(s.eng.Close(), s.d.Close())
}
