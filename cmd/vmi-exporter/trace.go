package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

// traceCmd attaches once to one QEMU guest and prints its events as JSON
// lines on stdout until interrupted. It serves no HTTP.
func traceCmd(ctx context.Context, args []string, stdout, stderr io.Writer, newAttachers attachersFunc) error {
	fs := pflag.NewFlagSet("vmi-exporter trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var g collector.GuestConfig
	fs.StringVar(&g.Name, "name", "qemu", "domain label of the guest")
	fs.StringVar(&g.QEMU.GDBSocket, "gdb", "", "QEMU gdbstub: unix socket path or host:port (required without --plugin-shm)")
	fs.StringVar(&g.QEMU.QMPSocket, "qmp", "", "QEMU QMP unix socket")
	fs.StringVar(&g.QEMU.RAMPath, "ram", "", "guest RAM file (memory-backend-file with share=on)")
	fs.Uint64Var(&g.QEMU.RAMSize, "ram-size", 0, "guest RAM size in bytes (0: size of --ram)")
	fs.StringVar(&g.QEMU.PluginSHM, "plugin-shm", "", "the vmi-hooks plugin's shared file (its shm= argument): hooks through the plugin, which holds only the hitting vCPU; needs --ram")
	fs.StringVar(&g.OS, "os", "auto", "guest OS: linux, windows or auto")
	fs.StringVar(&g.Profile.KernelImage, "kernel", "", "guest kernel image (vmlinuz) to build the profile from; default: the profile cached for the banner found in guest memory")
	fs.StringVar(&g.Profile.SystemMap, "system-map", "", "System.map overriding the kernel's own symbols")
	fs.StringVar(&g.Profile.ISF, "isf", "", "Volatility 3 ISF profile overriding the kernel's own types")
	fs.StringVar(&g.Profile.CacheDir, "profile-cache", "", "directory caching built kernel profiles")
	probes := fs.StringSlice("probes", config.ProbeNames(), "event kinds to watch")
	otlpFile := fs.String("otlp.file", "", "also write spans to this file (JSON)")
	logLevel := fs.String("log.level", "info", "log level (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("trace: unexpected arguments %q", fs.Args())
	}
	g.Driver = "qemu"
	cfg := &config.Config{Guests: []collector.GuestConfig{g}, Probes: *probes}
	// Validate the parts trace uses with the same rules as run.
	var errs []error
	errs = append(errs, cfg.ValidateGuests()...)
	for _, p := range *probes {
		if k, err := collector.ParseKind(p); err != nil || !isProbeKind(k) {
			errs = append(errs, fmt.Errorf("--probes: unknown probe kind %q", p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	cfg.JSONL.Path = "-"
	cfg.OTLP = config.OTLP{File: *otlpFile, Protocol: "grpc", MaxOpenProcesses: 10000}
	cfg.Queues.Size = collector.DefaultQueueSize
	log := newLogger(stderr, *logLevel, "text")
	p, err := newPipeline(ctx, cfg, newAttachers(log), pipelineOpts{once: true, stdout: stdout}, log)
	if err != nil {
		return err
	}
	if err := p.serve(ctx, config.Web{}, log); err != nil {
		return fmt.Errorf("trace %s: %w", strings.TrimSpace(g.QEMU.GDBSocket), err)
	}
	return nil
}

func isProbeKind(k collector.Kind) bool {
	for _, pk := range collector.ProbeKinds() {
		if k == pk {
			return true
		}
	}
	return false
}
