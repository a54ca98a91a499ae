package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
)

// The QEMU backend: a running QEMU's gdbstub, its QMP socket and, when
// configured, its shared RAM file (the guest's qemu: section).

// DefaultQEMUTimeout bounds each gdbstub and QMP exchange of the QEMU
// backend.
const DefaultQEMUTimeout = 20 * time.Second

func init() { Register(qemuBackend(DefaultQEMUTimeout)) }

// qemuBackend is the QEMU backend with its exchanges bounded by timeout.
func qemuBackend(timeout time.Duration) Backend {
	return Backend{
		Name:     "qemu",
		Validate: validateQEMU,
		Open: func(ctx context.Context, g collector.GuestConfig, log *slog.Logger) (driver.Driver, string, error) {
			// Open leaves the guest stopped.
			d, err := qemu.Open(ctx, qemu.Config{
				GDBSocket: g.QEMU.GDBSocket,
				QMPSocket: g.QEMU.QMPSocket,
				RAMPath:   g.QEMU.RAMPath,
				RAMSize:   g.QEMU.RAMSize,
				Timeout:   timeout,
			}, log)
			if err != nil {
				return nil, "", err
			}
			return d, g.QEMU.GDBSocket, nil
		},
	}
}

// validateQEMU checks the qemu: section: the gdbstub is required; a RAM
// file named must exist.
func validateQEMU(g collector.GuestConfig) []error {
	var errs []error
	if g.QEMU.GDBSocket == "" {
		errs = append(errs, errors.New("qemu.gdb_socket is required"))
	}
	if g.QEMU.RAMPath != "" {
		if _, err := os.Stat(g.QEMU.RAMPath); err != nil {
			errs = append(errs, fmt.Errorf("qemu.ram_path: %w", err))
		}
	}
	return errs
}

// QEMU is the Attacher of the QEMU backend with its own exchange timeout
// (tests give slow TCG guests more time).
type QEMU struct {
	// Log receives attach progress; nil discards.
	Log *slog.Logger
	// Timeout bounds each gdbstub and QMP exchange (default
	// DefaultQEMUTimeout).
	Timeout time.Duration
}

// Attach implements collector.Attacher.
func (a *QEMU) Attach(ctx context.Context, g collector.GuestConfig) (collector.Session, error) {
	timeout := a.Timeout
	if timeout == 0 {
		timeout = DefaultQEMUTimeout
	}
	return (&Attacher{Backend: qemuBackend(timeout), Log: a.Log}).Attach(ctx, g)
}
