package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Open builds a session on an opened driver, whatever its backend: it
// pauses the guest if the driver can (driver.Pauser; a backend may hand it
// over paused already), finds its OS as g.OS says, chooses the hook engine
// by the driver's capabilities, and lets the guest run again. domainID is
// the guest's id under its hypervisor. On error the driver is left open:
// the caller owns it.
func Open(ctx context.Context, d driver.Driver, g collector.GuestConfig, domainID string, log *slog.Logger) (_ collector.Session, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, pauses := d.(driver.Pauser)
	if pauses {
		if err := p.Pause(); err != nil {
			return nil, fmt.Errorf("attach %s: pause: %w", g.Name, err)
		}
		defer func() {
			if rerr := p.Resume(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("attach %s: resume: %w", g.Name, rerr))
			}
		}()
	}
	o, err := detectOS(ctx, d, g, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	eng, engine, err := newEngine(d, o.mem, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	log.Info("attached", append([]any{"os", o.OS(), "kernel", o.Kernel(), "vcpus", d.VCPUs(), "engine", engine}, o.attrs...)...)
	s := &session{
		d:     d,
		os:    o,
		eng:   eng,
		guest: &collector.Guest{Domain: g.Name, DomainID: domainID, OS: o.OS(), Kernel: o.Kernel()},
	}
	if pauses {
		// The collector pauses the guest while it installs hooks.
		return &pausingSession{session: s, p: p}, nil
	}
	return s, nil
}

// session is a guest attached through a driver, an OS layer and a hook
// engine.
type session struct {
	d     driver.Driver
	os    *guestOS
	eng   hook.Engine
	guest *collector.Guest
}

// pausingSession is a session whose driver can pause the guest.
type pausingSession struct {
	*session
	p driver.Pauser
}

func (s *pausingSession) Pause() error  { return s.p.Pause() }
func (s *pausingSession) Resume() error { return s.p.Resume() }

func (s *session) Guest() *collector.Guest { return s.guest }
func (s *session) OS() collector.GuestOS   { return s.os.GuestOS }
func (s *session) Engine() hook.Engine     { return s.eng }

// Verify implements collector.Verifier: the one liveness check of every
// backend. The driver says first whether the guest is still the one it
// attached to (driver.Liveness: QEMU counts QMP RESET events, Xen asks
// for the domain's state); then the OS layer re-reads what identifies its
// kernel (the Linux banner), when the driver can read memory while the
// guest runs (QEMU only from its shared RAM file: through the gdbstub,
// memory cannot be read while the guest runs). A reset leaves the old
// kernel's memory in place until the new one overwrites it, so the OS
// check alone notices only a kernel that moved over the old one.
func (s *session) Verify() error {
	live := fmt.Errorf("no liveness report from the driver: %w", driver.ErrUnsupported)
	if l, ok := s.d.(driver.Liveness); ok {
		live = l.Alive()
	}
	if live != nil && !errors.Is(live, driver.ErrUnsupported) {
		return live
	}
	if s.os.check == nil || !readsWhileRunning(s.d) {
		if live != nil {
			return fmt.Errorf("neither the driver nor the OS layer can check the guest while it runs: %w", live)
		}
		return nil
	}
	return s.os.check()
}

// readsWhileRunning reports whether d reads guest memory while the guest
// runs (driver.LiveReader); a driver that does not say is taken not to.
func readsWhileRunning(d driver.Driver) bool {
	lr, ok := d.(driver.LiveReader)
	return ok && lr.ReadsWhileRunning()
}

var (
	_ collector.Verifier = (*session)(nil)
	_ collector.Verifier = (*pausingSession)(nil)
	_ driver.Pauser      = (*pausingSession)(nil)
)

// Close removes every hook (and restores every view and permission the
// engine changed), then detaches; the guest keeps running.
func (s *session) Close() error {
	return errors.Join(s.eng.Close(), s.d.Close())
}
