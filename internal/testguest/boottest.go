package testguest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
)

// BootForTest boots the test guest for a live test or benchmark and waits
// until it is ready: it skips (fails under CI) when QEMU is missing,
// prepares the assets, makes a short socket directory named after prefix,
// logs warnings to stderr, and closes the guest and removes the directory
// when tb ends. opts.Dir and opts.Log are set here when empty.
func BootForTest(tb testing.TB, prefix string, opts Options) (*Guest, *Assets) {
	tb.Helper()
	testutil.RequireTool(tb, QEMUBinary(opts.QEMU))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	assets, err := Prepare(ctx, "", opts.Log)
	if err != nil {
		tb.Fatalf("prepare test guest: %v", err)
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		opts.Dir = dir
	}
	g, err := Boot(ctx, assets, opts)
	if err != nil {
		tb.Fatalf("boot test guest: %v", err)
	}
	tb.Cleanup(func() { g.Close() })
	if err := g.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
	return g, assets
}
