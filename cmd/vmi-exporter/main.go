// Command vmi-exporter watches VM guest kernels from the hypervisor and
// exports what they do as Prometheus metrics, OpenTelemetry traces and
// JSON lines.
//
//	vmi-exporter run   [--config file] [flags]   the daemon
//	vmi-exporter trace --gdb SOCK [--qmp SOCK] [--ram FILE] ...
//	                                              JSON lines of one QEMU guest on stdout
//	vmi-exporter demo                            boot the test guest (cmd/testguest) and watch it
//	vmi-exporter qemu-args [--name vm1] ...      the QEMU arguments and config entry of a guest
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `usage: vmi-exporter <command> [flags]

commands:
  run     watch the configured guests; serve /metrics, export traces and events
  trace   attach to one QEMU guest and print its events as JSON lines
  demo    prepare and boot the test guest, watch it, and say where to look
  qemu-args
          print the QEMU arguments a guest needs (plugin, shared RAM, QMP,
          gdbstub), as a libvirt <qemu:commandline> too, and its config entry
  version print the version

"vmi-exporter <command> --help" lists the flags of a command.
`

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	ctx, stop := shutdownContext(sig, detached.done(), os.Exit, func(m string) { fmt.Fprintln(os.Stderr, "vmi-exporter:", m) })
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr, attachers)
	stop()
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmi-exporter:", err)
		os.Exit(1)
	}
}

// dispatch runs a subcommand. newAttachers builds the attachers by driver
// (see attachers.go); tests pass their own.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, newAttachers attachersFunc) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr, newAttachers)
	case "trace":
		return traceCmd(ctx, args[1:], stdout, stderr, newAttachers)
	case "demo":
		return demoCmd(ctx, args[1:], stdout, stderr, newAttachers)
	case "qemu-args":
		return qemuArgsCmd(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "vmi-exporter", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger returns a logger at level writing JSON for format "json" and
// logfmt (slog's text handler) otherwise ("logfmt", "text").
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	o := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
