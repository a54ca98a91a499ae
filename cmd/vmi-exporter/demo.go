package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

// bootTestGuestFunc prepares the test guest in dir (kernel and initramfs
// from Debian packages), boots it under QEMU with shared RAM, gdbstub and
// QMP, and returns how to reach it and how to stop it.
type bootTestGuestFunc func(ctx context.Context, dir string, log *slog.Logger) (g collector.GuestConfig, stop func() error, err error)

// demoCmd boots the test guest, watches it, serves /metrics on localhost,
// writes spans to an OTLP endpoint or a file, and events to a file.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer, newAttachers attachersFunc) error {
	fs := pflag.NewFlagSet("vmi-exporter demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultDemoDir(), "work directory: guest image, sockets, spans and events files")
	listen := fs.String("web.listen-address", config.DefaultListenAddress, "address to serve /metrics on")
	endpoint := fs.String("otlp.endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTLP receiver; empty writes spans to <dir>/spans.json")
	protocol := fs.String("otlp.protocol", "grpc", "OTLP protocol: grpc or http")
	insecure := fs.Bool("otlp.insecure", true, "OTLP without TLS")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, "info", "text")
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	g, stop, err := bootTestGuest(ctx, *dir, log)
	if err != nil {
		return fmt.Errorf("demo: test guest: %w", err)
	}
	defer func() {
		if err := stop(); err != nil {
			log.Warn("stopping the test guest", "err", err)
		}
	}()
	g.Name = "demo"
	cfg := &config.Config{
		Web:     config.Web{ListenAddress: *listen},
		Guests:  []collector.GuestConfig{g},
		Probes:  []string{"file.create", "file.write", "process.start", "process.exit"},
		OTLP:    config.OTLP{Endpoint: *endpoint, Protocol: *protocol, Insecure: *insecure, File: filepath.Join(*dir, "spans.json"), MaxOpenProcesses: 10000},
		JSONL:   config.JSONL{Path: filepath.Join(*dir, "events.jsonl")},
		Queues:  config.Queues{Size: collector.DefaultQueueSize},
		Backoff: collector.Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 0.2},
		Log:     config.Log{Level: "info", Format: "text"},
	}
	if *endpoint != "" {
		cfg.OTLP.File = ""
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	p, err := newPipeline(ctx, cfg, newAttachers(log), pipelineOpts{metrics: true, stdout: stdout}, log)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	via := "gdbstub " + g.QEMU.GDBSocket
	if g.QEMU.PluginSHM != "" {
		via = "vmi-hooks plugin " + g.QEMU.PluginSHM
	}
	fmt.Fprintf(stdout, `vmi-exporter demo: watching the test guest (QEMU, hooks through the %s)
  metrics:  http://%s/metrics   (e.g. curl -s http://%s/metrics | grep ^vmi_)
  spans:    %s
  events:   %s
Press Ctrl-C to stop; hooks are removed and the guest shut down.
`, via, *listen, *listen, p.spans, cfg.JSONL.Path)
	return p.serve(ctx, cfg.Web, log)
}

func defaultDemoDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "vmi-exporter", "demo")
	}
	return "vmi-exporter-demo"
}
