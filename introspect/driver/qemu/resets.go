package qemu

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/qmp"
)

// resetWatch is a QMP connection that counts the guest's resets, shared by
// the gdbstub and the plugin drivers: QEMU reports every reset (the
// guest's reboot, system_reset) as a RESET event, and a reset moves a KASLR
// kernel, so hooks set on the old kernel's addresses sit on other code.
// The zero value (no QMP socket) answers ErrUnsupported.
type resetWatch struct {
	qmp    *qmp.Client
	resets atomic.Uint64 // RESET events since dial
}

// dial connects to the QMP socket at addr ("" leaves w without QMP).
func (w *resetWatch) dial(ctx context.Context, addr string, timeout time.Duration) error {
	if addr == "" {
		return nil
	}
	n, a := splitAddr(addr)
	c, err := qmp.Dial(ctx, n, a, qmp.Options{Timeout: timeout, OnEvent: func(ev qmp.Event) {
		if ev.Event == "RESET" {
			w.resets.Add(1)
		}
	}})
	if err != nil {
		return err
	}
	w.qmp = c
	return nil
}

// count returns how many times the guest was reset since dial, after
// reading the events QEMU has sent meanwhile.
func (w *resetWatch) count() (uint64, error) {
	if w.qmp == nil {
		return 0, fmt.Errorf("qemu: resets without QMP socket: %w", driver.ErrUnsupported)
	}
	// Events are read with command replies: a cheap command drains them.
	if _, err := w.qmp.QueryStatus(); err != nil {
		return w.resets.Load(), fmt.Errorf("qemu: %w", err)
	}
	return w.resets.Load(), nil
}

// alive is driver.Liveness.Alive from the reset count.
func (w *resetWatch) alive() error {
	n, err := w.count()
	switch {
	case err != nil:
		return err
	case n > 0:
		return fmt.Errorf("qemu: guest reset %d times since attach: %w", n, driver.ErrGone)
	}
	return nil
}

// close closes the QMP connection, if any.
func (w *resetWatch) close() error {
	if w.qmp == nil {
		return nil
	}
	return w.qmp.Close()
}
