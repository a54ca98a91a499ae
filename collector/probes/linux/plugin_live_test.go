package linux_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/vmlinux"
)

// TestLivePlugin is TestLive on the vmi-hooks QEMU plugin instead of the
// gdbstub: the guest (2 vCPUs) never stops, the probes decode from the
// mailbox registers and the RAM file while the hitting vCPU is held, and
// the events must match the workload's manifest exactly. Then the engine
// is closed and the plugin must count no hit at all while the workload
// runs on (detach leaves no instrumentation).
func TestLivePlugin(t *testing.T) {
	testutil.RequireTool(t, testguest.QEMUBinary(""))
	so := testguest.RequirePlugin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	assets, err := testguest.Prepare(ctx, "", log)
	if err != nil {
		t.Fatalf("prepare test guest: %v", err)
	}
	dir, err := os.MkdirTemp("", "vpl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	shm := filepath.Join(dir, "hooks")
	g, err := testguest.Boot(ctx, assets, testguest.Options{Dir: dir, Log: log, CPUs: 2,
		ExtraArgs: testguest.PluginArgs(so, shm)})
	if err != nil {
		t.Fatalf("boot test guest: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := qemu.OpenPlugin(ctx, qemu.PluginConfig{SHMPath: shm, RAMPath: g.RAMPath, RAMSize: uint64(g.RAMSize)}, log)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if d.VCPUs() != 2 {
		t.Fatalf("VCPUs = %d, want 2", d.VCPUs())
	}
	prof, err := vmlinux.Profile(assets.Kernel, vmlinux.Options{})
	if err != nil {
		t.Fatalf("kernel profile: %v", err)
	}
	// The OS layer finds the kernel from register samples the plugin
	// takes while the guest runs.
	o, err := oslinux.New(d, prof, oslinux.Options{})
	if err != nil {
		t.Fatalf("find kernel: %v", err)
	}
	t.Logf("kernel %q slide %#x root %v", o.Banner(), o.Slide(), o.KernelRoot())

	gos := probes.New(o)
	ps, err := gos.Probes(collector.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{probes: map[string]collector.Probe{}, skips: map[string]int{}, errs: map[string][]error{}, notices: map[hook.NoticeKind]int{},
		last: map[introspect.VCPU]amd64.Registers{}}
	eng := hook.NewPlugin(d, hook.WithPluginFlush(o.Flush))
	for _, p := range ps {
		rec.probes[p.Name] = p
		if err := eng.Add(hook.Hook{Addr: p.Addr, Root: p.Root, Global: true, Tag: p.Name}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { eng.Close() })
	t0 := time.Now()
	if err := eng.WaitApplied(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d hooks applied in %v", len(ps), time.Since(t0))

	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(rctx, rec) }()
	const rounds = 2
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	start := time.Now()
	man, err := g.Run(wctx, rounds)
	wcancel()
	elapsed := time.Since(start)
	rcancel()
	if rerr := <-done; rerr != nil {
		t.Errorf("engine: %v", rerr)
	}
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	st, _ := d.HookStats()
	rec.mu.Lock()
	t.Logf("%d rounds in %v: %d hits (%.0f/s), decode %v/hit, %d events, skips %v, notices %v; plugin %+v",
		rounds, elapsed, rec.hits, float64(rec.hits)/elapsed.Seconds(), rec.decode/time.Duration(max(rec.hits, 1)),
		len(rec.events), rec.skips, rec.notices, st)
	for name, es := range rec.errs {
		t.Errorf("probe %s: %d decode errors, first: %v", name, len(es), es[0])
	}
	if st.MissedDeadline != 0 {
		t.Errorf("%d holds missed their deadline", st.MissedDeadline)
	}
	checkManifest(t, man, rec.events)
	if t.Failed() {
		t.Logf("hits:\n%s", strings.Join(rec.trace, "\n"))
	}
	rec.mu.Unlock()

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
	wctx, wcancel = context.WithTimeout(context.Background(), 5*time.Minute)
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
