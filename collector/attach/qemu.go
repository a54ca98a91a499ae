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

// The QEMU backend: a running QEMU's vmi-hooks plugin or its gdbstub, its
// QMP socket and its shared RAM file (the guest's qemu: section). The
// plugin is taken when QEMU was started with it (its shared file exists):
// it holds only the vCPU that hits a hook, where a gdbstub breakpoint stops
// the whole guest and makes TCG flush its translations. The gdbstub serves
// guests without the plugin (KVM, QEMU before 10.0).

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
			if err := checkRAM(g.QEMU); err != nil {
				return nil, "", err
			}
			use, why := usePlugin(g.QEMU)
			if use {
				log.Info("QEMU hooks through the vmi-hooks plugin", "why", why, "shm", g.QEMU.PluginSHM)
				d, err := qemu.OpenPlugin(ctx, qemu.PluginConfig{
					SHMPath:   g.QEMU.PluginSHM,
					RAMPath:   g.QEMU.RAMPath,
					RAMSize:   g.QEMU.RAMSize,
					QMPSocket: g.QEMU.QMPSocket,
					Timeout:   timeout,
				}, log)
				if err != nil {
					return nil, "", err
				}
				return d, g.QEMU.PluginSHM, nil
			}
			log.Info("QEMU hooks through gdbstub breakpoints", "why", why)
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

// usePlugin says whether the guest's QEMU runs the vmi-hooks plugin, and
// why or why not, for the log.
func usePlugin(c collector.QEMUConfig) (bool, string) {
	if c.PluginSHM == "" {
		return false, "qemu.plugin_shm is not set"
	}
	if _, err := os.Stat(c.PluginSHM); err != nil {
		if c.GDBSocket == "" {
			// Nothing to fall back to: let the plugin driver wait for
			// the file (QEMU creates it when it loads the plugin) and
			// report why it is missing.
			return true, "qemu.plugin_shm is set and there is no gdbstub to fall back to"
		}
		return false, fmt.Sprintf("QEMU was not started with the plugin (%v)", err)
	}
	return true, "QEMU was started with the plugin"
}

// validateQEMU checks the qemu: section: a gdbstub or the plugin's shared
// file is required and the plugin needs the RAM file. Whether the files
// exist is for attach time (checkRAM): the same configuration serves
// every host of a fleet, where a guest may be absent.
func validateQEMU(g collector.GuestConfig) []error {
	var errs []error
	if g.QEMU.GDBSocket == "" && g.QEMU.PluginSHM == "" {
		errs = append(errs, errors.New("qemu.gdb_socket is required"))
	}
	if g.QEMU.PluginSHM != "" && g.QEMU.RAMPath == "" {
		errs = append(errs, errors.New("qemu.plugin_shm needs qemu.ram_path: the plugin hands over registers, guest memory comes from the RAM file"))
	}
	return errs
}

// checkRAM reports, before anything is opened, a RAM file that is named
// but missing on this host (the guest is not running here), with the key
// that names it.
func checkRAM(c collector.QEMUConfig) error {
	if c.RAMPath == "" {
		return nil
	}
	if _, err := os.Stat(c.RAMPath); err != nil {
		return fmt.Errorf("qemu.ram_path: %w", err)
	}
	return nil
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
