package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/bootinfo"
)

// demoLoopMS is the pause between workload rounds of the demo guest.
const demoLoopMS = 1000

// testGuestEnv names the testguest command the demo runs, when it is
// neither next to this binary nor on PATH.
const testGuestEnv = "VMI_TESTGUEST"

// bootTestGuest has the reproducible test guest (Debian's cloud kernel and
// busybox, fetched with apt and cached) prepared and booted by the
// testguest command, with its workload looping, and returns how to reach
// it and how to stop it. The test guest is not linked into this binary:
// the demo talks to testguest through its command line and the JSON line
// it prints (bootinfo.Info).
var bootTestGuest bootTestGuestFunc = func(ctx context.Context, dir string, log *slog.Logger) (collector.GuestConfig, func() error, error) {
	bin, err := testGuestCommand()
	if err != nil {
		return collector.GuestConfig{}, nil, err
	}
	cmd := exec.Command(bin, "boot", "-cache", filepath.Join(dir, "testguest-cache"), "-loop", strconv.Itoa(demoLoopMS), "-v")
	cmd.Stderr = os.Stderr
	// Its own process group: Ctrl-C reaches the demo only, which detaches
	// from the guest before it stops testguest (and so QEMU).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	first := &firstLine{c: make(chan []byte, 1)}
	cmd.Stdout = first
	if err := cmd.Start(); err != nil {
		return collector.GuestConfig{}, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error { return stopTestGuest(cmd, exited) }
	var bg bootinfo.Info
	select {
	case line := <-first.c:
		err = json.Unmarshal(line, &bg)
	case werr := <-exited:
		exited <- werr // for stop
		err = fmt.Errorf("%s exited before the guest was ready: %v", bin, werr)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return collector.GuestConfig{}, nil, errors.Join(err, stop())
	}
	log.Info("test guest booted", "kernel", bg.KernelVersion, "boot", time.Duration(bg.BootSeconds*float64(time.Second)).Round(time.Millisecond), "qemu_pid", bg.PID)
	return collector.GuestConfig{
		Name:   "demo",
		Driver: "qemu",
		OS:     "linux",
		QEMU: collector.QEMUConfig{
			GDBSocket: bg.GDB,
			QMPSocket: bg.QMP,
			RAMPath:   bg.RAM,
			RAMSize:   uint64(bg.RAMSize),
			PluginSHM: bg.PluginSHM,
		},
		Profile: collector.ProfileConfig{
			KernelImage: bg.Kernel,
			CacheDir:    filepath.Join(dir, "profiles"),
		},
	}, stop, nil
}

// testGuestCommand finds the testguest command: $VMI_TESTGUEST, else next
// to this binary (scripts/demo.sh builds both there), else on PATH.
func testGuestCommand() (string, error) {
	if p := os.Getenv(testGuestEnv); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "testguest")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("testguest"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no testguest command next to this binary, on PATH or in $%s: build it with go build ./cmd/testguest (scripts/demo.sh does)", testGuestEnv)
}

// stopTestGuest asks testguest to shut the guest down (SIGTERM) and waits
// for it (exited has Wait's result), killing it if it takes too long.
func stopTestGuest(cmd *exec.Cmd, exited <-chan error) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-exited:
		return err
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return fmt.Errorf("testguest did not stop within 30s: killed: %w", <-exited)
	}
}

// firstLine is testguest's standard output: it sends the first line on c
// and discards the rest (the manifests of commands the demo never sends).
type firstLine struct {
	buf  []byte
	sent bool
	c    chan []byte
}

func (w *firstLine) Write(p []byte) (int, error) {
	if w.sent {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if i := bytes.IndexByte(w.buf, '\n'); i >= 0 {
		w.c <- w.buf[:i]
		w.sent = true
	} else if len(w.buf) > 1<<16 {
		return 0, errors.New("testguest: first line too long")
	}
	return len(p), nil
}
