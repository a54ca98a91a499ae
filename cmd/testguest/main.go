// Command testguest prepares and boots the reproducible QEMU test guest of
// internal/testguest, for trying the introspection by hand.
//
//	testguest prepare                 # fetch with apt, build the initramfs; print the assets as JSON
//	testguest boot -dir /tmp/x        # boot with the vmi-hooks plugin; print sockets, RAM and plugin paths as JSON; run until SIGINT/SIGTERM
//	testguest bench -rounds 10        # boot time and the time of "run 10"
//	testguest qemu -qemu-deb bookworm # unpack Debian 12's QEMU 7.2 into the cache; print its paths
//
// -qemu-deb VERSION (or "bookworm" for Debian 12's QEMU 7.2) makes boot and
// bench use that QEMU, fetched with apt and unpacked into the cache.
//
// While "boot" runs, lines on its standard input are guest commands:
// "run N" (prints the manifest as JSON), "loop MS", "stop".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/bootinfo"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testguest:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: testguest prepare|boot|bench|qemu [flags] (-h for flags)")
}

func run(args []string) error {
	if len(args) == 0 {
		return usage()
	}
	fs := flag.NewFlagSet(args[0], flag.ExitOnError)
	cache := fs.String("cache", "", "cache directory (default $VMI_TESTGUEST_CACHE or ~/.cache/vmi-exporter/testguest)")
	dir := fs.String("dir", "", "directory for the sockets (default: a new temporary directory)")
	ramDir := fs.String("ramdir", "", "directory for the guest RAM file (default /dev/shm)")
	qemu := fs.String("qemu", "", "qemu-system-x86_64 binary (default $VMI_QEMU or PATH)")
	datadir := fs.String("datadir", "", "QEMU data directory passed as -L (default $VMI_QEMU_DATADIR)")
	qemuDeb := fs.String("qemu-deb", "", "use qemu-system-x86 of this Debian version, unpacked into the cache (\"bookworm\": Debian 12's 7.2)")
	mem := fs.Int("mem", 256, "guest RAM in MiB")
	cpus := fs.Int("smp", 2, "number of vCPUs")
	cpu := fs.String("cpu", "", "QEMU -cpu model (\"max\" gives 5-level paging)")
	loop := fs.Int("loop", 0, "if > 0, loop workload rounds from boot with this pause in ms")
	rounds := fs.Int("rounds", 10, "bench: rounds to run")
	plugin := fs.String("plugin", "auto", "boot: the vmi-hooks QEMU plugin (.so) to load; \"auto\" builds it with scripts/build-qemu-plugin.sh, \"\" or \"off\" loads none (exporters then hook through the gdbstub)")
	pluginOpts := fs.String("plugin-opts", "", "boot: more plugin arguments, comma-separated key=value (e.g. hold_ms=50,mode=async)")
	console := fs.Bool("console", false, "copy the guest console to stderr")
	verbose := fs.Bool("v", false, "log progress")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	enc := json.NewEncoder(os.Stdout)
	opts := testguest.Options{
		Dir: *dir, RAMDir: *ramDir, QEMU: *qemu, QEMUDataDir: *datadir, MemoryMiB: *mem, CPUs: *cpus, CPU: *cpu,
		LoopIntervalMS: *loop, Log: log,
	}
	if *qemuDeb != "" || args[0] == "qemu" {
		v := *qemuDeb
		if v == "" {
			v = testguest.QEMUBookworm
		}
		q, err := testguest.PrepareQEMU(ctx, *cache, v, log)
		if err != nil {
			return err
		}
		if args[0] == "qemu" {
			return enc.Encode(q)
		}
		opts = q.Options(opts)
	}
	assets, err := testguest.Prepare(ctx, *cache, log)
	if err != nil {
		return err
	}
	if args[0] == "prepare" {
		return enc.Encode(assets)
	}
	if *console {
		opts.Console = os.Stderr
	}
	switch args[0] {
	case "boot":
		switch *plugin {
		case "auto":
			if opts.Plugin, err = testguest.BuildPlugin(ctx); err != nil {
				return err
			}
		case "", "off":
		default:
			opts.Plugin = *plugin
		}
		if *pluginOpts != "" {
			opts.PluginOpts = strings.Split(*pluginOpts, ",")
		}
		return boot(ctx, assets, opts, enc)
	case "bench":
		return bench(ctx, assets, opts, *rounds, enc)
	}
	return usage()
}

func boot(ctx context.Context, a *testguest.Assets, o testguest.Options, enc *json.Encoder) error {
	g, err := testguest.Boot(ctx, a, o)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.WaitReady(ctx); err != nil {
		return err
	}
	if err := enc.Encode(bootinfo.Info{
		PID: g.PID, Dir: g.Dir, QMP: g.QMPSocket, GDB: g.GDBSocket, RAM: g.RAMPath, RAMSize: g.RAMSize, PluginSHM: g.PluginSHM,
		Kernel: a.Kernel, KernelVersion: a.KernelVersion, Initrd: a.Initrd,
		BootSeconds: g.BootTime().Seconds(), QEMUArgs: g.Args,
	}); err != nil {
		return err
	}
	go commands(ctx, g, os.Stdin, enc)
	select {
	case <-ctx.Done():
		return nil
	case <-g.Exited():
		return errors.New("qemu exited")
	}
}

// commands forwards "run N", "loop MS" and "stop" from r to the guest.
func commands(ctx context.Context, g *testguest.Guest, r io.Reader, enc *json.Encoder) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		n := 0
		if len(f) > 1 {
			n, _ = strconv.Atoi(f[1])
		}
		var err error
		switch f[0] {
		case "run":
			var m *testguest.Manifest
			if m, err = g.Run(ctx, n); err == nil {
				err = enc.Encode(m)
			}
		case "loop":
			err = g.StartLoop(ctx, n)
		case "stop":
			err = g.StopLoop(ctx)
		default:
			err = fmt.Errorf("unknown command %q (run N, loop MS, stop)", f[0])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testguest:", err)
		}
	}
}

func bench(ctx context.Context, a *testguest.Assets, o testguest.Options, rounds int, enc *json.Encoder) error {
	g, err := testguest.Boot(ctx, a, o)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.WaitReady(ctx); err != nil {
		return err
	}
	bootCPU, err := cpuSeconds(g.PID)
	if err != nil {
		return err
	}
	start := time.Now()
	m, err := g.Run(ctx, rounds)
	if err != nil {
		return err
	}
	d := time.Since(start)
	runCPU, err := cpuSeconds(g.PID)
	if err != nil {
		return err
	}
	if err := m.Check(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return enc.Encode(map[string]any{
		"qemu":              g.Args[0],
		"boot_seconds":      g.BootTime().Seconds(),
		"boot_cpu_seconds":  bootCPU,
		"rounds":            rounds,
		"run_seconds":       d.Seconds(),
		"run_cpu_seconds":   runCPU - bootCPU,
		"rounds_per_second": float64(rounds) / d.Seconds(),
		"loadavg":           strings.Fields(string(load))[0],
	})
}

// cpuSeconds is the user+system CPU time of a process so far, a measure of
// the guest's work that depends less on other load than wall time does.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command: state is field 3; utime and
	// stime are fields 14 and 15, in clock ticks (USER_HZ = 100 on Linux).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return (ut + st) / 100, nil
}
