package linux_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
)

// livePlugin boots the test guest (2 vCPUs) with the vmi-hooks plugin
// loaded with a hold deadline of holdMS, attaches the plugin driver over
// its shared file and the RAM file, and finds the kernel. The guest runs
// (it is never stopped).
func livePlugin(t testing.TB, holdMS int, opts ...string) (*testguest.Guest, *qemu.PluginDriver, *oslinux.OS) {
	t.Helper()
	so := testguest.RequirePlugin(t)
	shm := filepath.Join(t.TempDir(), "hooks")
	g, assets := testguest.BootForTest(t, "vpl", testguest.Options{CPUs: 2,
		ExtraArgs: testguest.PluginArgs(so, shm, append([]string{"hold_ms=" + strconv.Itoa(holdMS)}, opts...)...)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := qemu.OpenPlugin(ctx, qemu.PluginConfig{SHMPath: shm, RAMPath: g.RAMPath, RAMSize: uint64(g.RAMSize)}, log)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if d.VCPUs() != 2 {
		t.Fatalf("VCPUs = %d, want 2", d.VCPUs())
	}
	// The OS layer finds the kernel from register samples the plugin
	// takes while the guest runs.
	return g, d, findKernel(t, d, assets.Kernel)
}

// TestLivePlugin is TestLive on the vmi-hooks QEMU plugin instead of the
// gdbstub: the guest (2 vCPUs) never stops, the probes decode from the
// mailbox registers and the RAM file while the hitting vCPU is held, and
// the events must match the workload's manifest exactly. The hold
// deadline is 1s rather than the default 20ms: on a loaded test machine
// the exporter is sometimes not scheduled within 20ms, and a hit whose
// hold ran out is missed, which would make the exact count flaky. Then the engine
// is closed and the plugin must count no hit at all while the workload
// runs on (detach leaves no instrumentation).
func TestLivePlugin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, d, o := livePlugin(t, 1000)
	t.Logf("kernel %q slide %#x root %v", o.Banner(), o.Slide(), o.KernelRoot())

	gos := probes.New(o)
	ps, err := gos.Probes(collector.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	eng := hook.NewPlugin(d, hook.WithPluginFlush(o.Flush))
	runProbes(t, g, eng, ps, func() error {
		t0 := time.Now()
		if err := eng.WaitApplied(ctx); err != nil {
			return err
		}
		t.Logf("%d hooks applied in %v", len(ps), time.Since(t0))
		return nil
	})
	st, _ := d.HookStats()
	t.Logf("plugin counters %+v", st)
	if st.MissedDeadline != 0 {
		t.Errorf("%d holds missed their deadline", st.MissedDeadline)
	}

	// Detach: no instrumentation is left, so the plugin counts nothing.
	t1 := time.Now()
	if err := eng.Close(); err != nil {
		t.Fatalf("close engine: %v", err)
	}
	t.Logf("table cleared and applied in %v", time.Since(t1))
	if n := d.AppliedHooks(); n != 0 {
		t.Fatalf("%d hooks still instrumented after Close", n)
	}
	before, _ := d.HookStats()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	_, err = g.Run(wctx, 1)
	wcancel()
	if err != nil {
		t.Fatalf("workload after detach: %v", err)
	}
	after, _ := d.HookStats()
	if after.Hits != before.Hits {
		t.Errorf("plugin counted %d hits after detach", after.Hits-before.Hits)
	}
}
