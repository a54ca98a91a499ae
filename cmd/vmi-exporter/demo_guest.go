package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
)

// demoLoopMS is the pause between workload rounds of the demo guest.
const demoLoopMS = 1000

// bootTestGuest prepares the reproducible test guest (Debian's cloud kernel
// and busybox, fetched with apt and cached), boots it under QEMU with its
// workload looping, and returns how to reach it and how to stop it.
var bootTestGuest bootTestGuestFunc = func(ctx context.Context, dir string, log *slog.Logger) (collector.GuestConfig, func() error, error) {
	assets, err := testguest.Prepare(ctx, filepath.Join(dir, "testguest-cache"), log)
	if err != nil {
		return collector.GuestConfig{}, nil, err
	}
	g, err := testguest.Boot(ctx, assets, testguest.Options{LoopIntervalMS: demoLoopMS, Log: log})
	if err != nil {
		return collector.GuestConfig{}, nil, err
	}
	if err := g.WaitReady(ctx); err != nil {
		g.Close()
		return collector.GuestConfig{}, nil, fmt.Errorf("wait for the guest's workload: %w", err)
	}
	log.Info("test guest booted", "kernel", assets.KernelVersion, "boot", g.BootTime(), "qemu_pid", g.PID)
	return collector.GuestConfig{
		Name:   "demo",
		Driver: "qemu",
		OS:     "linux",
		QEMU: collector.QEMUConfig{
			GDBSocket: g.GDBSocket,
			QMPSocket: g.QMPSocket,
			RAMPath:   g.RAMPath,
			RAMSize:   uint64(g.RAMSize),
		},
		Profile: collector.ProfileConfig{
			KernelImage: assets.Kernel,
			CacheDir:    filepath.Join(dir, "profiles"),
		},
	}, g.Close, nil
}
