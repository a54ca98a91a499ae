package testguest

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
)

// prepared skips under -short, else returns a context that ends with the
// test (10 minutes at most), a logger to the test's output, and the
// prepared guest assets.
func prepared(t *testing.T) (context.Context, *slog.Logger, *Assets) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; run without -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	a, err := Prepare(ctx, "", log)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, log, a
}

// TestGuestIntegration prepares the guest with apt, boots it under QEMU and
// checks the workload's manifest, the loop mode and shutdown.
func TestGuestIntegration(t *testing.T) {
	ctx, log, a := prepared(t)
	// A second Prepare reuses everything.
	b, err := Prepare(ctx, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if *a != *b {
		t.Errorf("second Prepare differs: %+v vs %+v", a, b)
	}
	console := &testutil.SyncBuffer{}
	g, err := Boot(ctx, a, Options{Log: log, Console: console})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, p := range []string{g.QMPSocket, g.GDBSocket} {
		if st, err := os.Stat(p); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: not a socket (%v)", p, err)
		}
	}
	if st, err := os.Stat(g.RAMPath); err != nil || st.Size() != g.RAMSize {
		t.Errorf("RAM file %s: %v, size want %d", g.RAMPath, err, g.RAMSize)
	}
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to VMI idle: %v", g.BootTime())

	// The RAM file is the guest's memory: the running kernel's banner is in it.
	ram, err := os.ReadFile(g.RAMPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ram, []byte("Linux version "+a.KernelVersion)) {
		t.Errorf("kernel banner for %s not found in guest RAM", a.KernelVersion)
	}

	m, err := g.Run(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Errorf("manifest of run 2: %v\nconsole:\n%s", err, console.String())
	}
	if len(m.Rounds) != 2 || m.Rounds[0] != 1 || m.Rounds[1] != 2 {
		t.Errorf("rounds = %v, want [1 2]", m.Rounds)
	}
	if len(m.Spawns) != 2*SpawnsPerRound || len(m.Files) != 2*FilesPerRound || len(m.Exits) != 2*ExitsPerRound {
		t.Errorf("got %d spawns, %d files, %d exits", len(m.Spawns), len(m.Files), len(m.Exits))
	}

	// Round numbers continue across commands, so paths stay unique.
	m, err = g.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil || len(m.Rounds) != 1 || m.Rounds[0] != 3 {
		t.Errorf("run 1: rounds %v, check %v", m.Rounds, err)
	}

	// Loop mode: follow records until two rounds are done, then stop.
	lctx, lcancel := context.WithCancel(ctx)
	recs := g.Records(lctx)
	if err := g.StartLoop(ctx, 10); err != nil {
		t.Fatal(err)
	}
	var loop Manifest
	for r := range recs {
		loop.Add(r)
		if len(loop.Rounds) == 2 {
			break
		}
	}
	lcancel()
	if err := g.StopLoop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := loop.Check(); err != nil || len(loop.Rounds) != 2 || loop.Rounds[0] != 4 {
		t.Errorf("loop: rounds %v, check %v", loop.Rounds, err)
	}
	// Idle again: a run after the loop still works.
	if m, err = g.Run(ctx, 1); err != nil {
		t.Fatal(err)
	} else if err := m.Check(); err != nil {
		t.Errorf("run after loop: %v", err)
	}
	if n := g.BadLines(); n != 0 {
		t.Errorf("%d malformed manifest lines:\n%s", n, console.String())
	}

	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Exited():
	default:
		t.Error("QEMU still running after Close")
	}
	if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary dir %s not removed: %v", g.Dir, err)
	}
}

// TestGuestKill checks that Kill ends QEMU at once (crash tests use it) and
// that Run then fails instead of hanging.
func TestGuestKill(t *testing.T) {
	ctx, log, a := prepared(t)
	g, err := Boot(ctx, a, Options{Log: log, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Kill while booting: no need to wait for the guest.
	g.Kill()
	if _, err := g.Run(ctx, 1); err == nil {
		t.Error("Run on a killed guest succeeded")
	}
	if err := g.WaitReady(ctx); err == nil {
		t.Error("WaitReady on a killed guest succeeded")
	}
}

// TestGuestQEMUBookworm boots the guest under Debian 12's QEMU 7.2, unpacked
// into the cache beside the installed QEMU, as the breakpoint-rate
// comparison does.
func TestGuestQEMUBookworm(t *testing.T) {
	ctx, log, a := prepared(t)
	q, err := PrepareQEMU(ctx, "", QEMUBookworm, log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(q.Version, "1:7.2") {
		t.Errorf("bookworm QEMU version %s, want 1:7.2*", q.Version)
	}
	g, err := Boot(ctx, a, q.Options(Options{Log: log}))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU %s: boot to VMI idle: %v", q.Version, g.BootTime())
	m, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Error(err)
	}
}
