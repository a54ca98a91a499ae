package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
)

// pluginGuest boots the test guest (2 vCPUs) with the vmi-hooks plugin
// loaded with opts, and returns it with the plugin's shared file.
func pluginGuest(tb testing.TB, opts ...string) (*testguest.Guest, *testguest.Assets, string) {
	tb.Helper()
	return pluginGuestWith(tb, testguest.Options{}, opts...)
}

// pluginGuestWith is pluginGuest with boot options (Dir, Log, CPUs and
// ExtraArgs are set here).
func pluginGuestWith(tb testing.TB, bo testguest.Options, opts ...string) (*testguest.Guest, *testguest.Assets, string) {
	tb.Helper()
	so := testguest.RequirePlugin(tb)
	dir := tb.TempDir()
	shm := filepath.Join(dir, "hooks")
	bo.CPUs = 2
	bo.ExtraArgs = append(bo.ExtraArgs, testguest.PluginArgs(so, shm, opts...)...)
	g, assets := testguest.BootForTest(tb, "vqp", bo)
	return g, assets, shm
}

func openPlugin(tb testing.TB, g *testguest.Guest, shm string) *PluginDriver {
	tb.Helper()
	d, err := OpenPlugin(context.Background(), PluginConfig{SHMPath: shm, RAMPath: g.RAMPath, RAMSize: uint64(g.RAMSize)}, nil)
	if err != nil {
		tb.Fatalf("open plugin: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// loopingPlugin boots a plugin guest (bo and opts as for
// pluginGuestWith), starts its workload loop, measures its records/s for
// free before anything attaches, then attaches and finds the kernel.
func loopingPlugin(tb testing.TB, bo testguest.Options, free time.Duration, opts ...string) (*testguest.Guest, *PluginDriver, *linux.OS, float64) {
	tb.Helper()
	g, assets, shm := pluginGuestWith(tb, bo, opts...)
	if err := g.StartLoop(context.Background(), 0); err != nil {
		tb.Fatal(err)
	}
	var rate float64
	if free > 0 {
		rate = recordRate(g, free)
	}
	d := openPlugin(tb, g, shm)
	return g, d, kernelOS(tb, d, assets), rate
}

// applyHooks sets the plugin's table and waits until it is applied,
// failing after timeout; it returns how long that took.
func applyHooks(tb testing.TB, d *PluginDriver, vas []introspect.Va, timeout time.Duration) time.Duration {
	tb.Helper()
	t0 := time.Now()
	if err := d.SetHooks(vas); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := d.WaitHooksApplied(ctx); err != nil {
		tb.Fatalf("table of %d hooks not applied within %v: %v", len(vas), timeout, err)
	}
	return time.Since(t0)
}

// readCounters reads the plugin's counters and applied hook count from
// its shared file, as a process that is not attached would.
func readCounters(tb testing.TB, shm string) (PluginCounters, int) {
	tb.Helper()
	b, err := os.ReadFile(shm)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := parseSHMHeader(b)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := decodeCounters(b[h.CountersOff:], h.VCPUs)
	if err != nil {
		tb.Fatal(err)
	}
	return c, int(uint32(b[hdrAppliedHooks]) | uint32(b[hdrAppliedHooks+1])<<8 | uint32(b[hdrAppliedHooks+2])<<16 | uint32(b[hdrAppliedHooks+3])<<24)
}

// slowHandler makes each hit take a while, so that a kill is likely to
// find a vCPU held, and counts hits on a channel.
type slowHandler struct {
	delay time.Duration
	hits  chan<- struct{}
}

func (h *slowHandler) HandleHit(*hook.Hit) error {
	time.Sleep(h.delay)
	select {
	case h.hits <- struct{}{}:
	default:
	}
	return nil
}

func (h *slowHandler) Notice(hook.Notice) {}

const childEnv = "VMI_PLUGIN_CHILD"

// TestLivePluginChild is the exporter that TestLivePluginSIGKILL kills: it
// runs only when re-executed with VMI_PLUGIN_CHILD=shm|ram|size|kernel.
func TestLivePluginChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("helper process of TestLivePluginSIGKILL")
	}
	f := strings.Split(spec, "|")
	if len(f) != 4 {
		t.Fatalf("%s=%q", childEnv, spec)
	}
	size, _ := strconv.ParseUint(f[2], 10, 64)
	d, err := OpenPlugin(context.Background(), PluginConfig{SHMPath: f[0], RAMPath: f[1], RAMSize: size}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := kernelOS(t, d, &testguest.Assets{Kernel: f[3]})
	eng := hook.NewPlugin(d, hook.WithPluginFlush(o.Flush))
	for _, name := range []string{"ksys_write", "do_syscall_64"} {
		fn, err := o.Symbol(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Add(hook.Hook{Addr: fn, Root: o.KernelRoot(), Global: true, Tag: name}); err != nil {
			t.Fatal(err)
		}
	}
	hits := make(chan struct{}, 1)
	go func() {
		n := 0
		for range hits {
			if n++; n == 200 {
				fmt.Println("CHILD-HOOKED")
			}
		}
	}()
	// Runs until killed.
	_ = eng.Run(context.Background(), &slowHandler{delay: 200 * time.Microsecond, hits: hits})
}

// TestLivePluginSIGKILL kills an exporter (a child process, so that the
// kill is real) while it holds hits of a hot function: the guest must go
// on running its workload, holds must stop after at most one deadline per
// vCPU, and the plugin must drop its instrumentation once the exporter's
// heartbeat is stale.
func TestLivePluginSIGKILL(t *testing.T) {
	g, assets, shm := pluginGuest(t)
	if err := g.StartLoop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	free := recordRate(g, 3*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLivePluginChild$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d|%s", childEnv, shm, g.RAMPath, g.RAMSize, assets.Kernel))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hooked := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "CHILD-HOOKED") {
				close(hooked)
			}
		}
	}()
	select {
	case <-hooked:
	case <-ctx.Done():
		cmd.Process.Kill()
		t.Fatal("child exporter never hooked")
	}
	held := recordRate(g, 3*time.Second)
	c0, n0 := readCounters(t, shm)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	t.Logf("killed the exporter: %d hooks instrumented, counters %+v", n0, c0)

	// Records go on arriving: nothing waits for the dead exporter.
	if !waitRecords(g, 5, 30*time.Second) {
		t.Fatal("guest does not run its workload after the exporter was killed")
	}
	var c1 PluginCounters
	var n1 int
	for {
		c1, n1 = readCounters(t, shm)
		if n1 == 0 || time.Since(killed) > 10*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("instrumentation dropped %v after the kill", time.Since(killed))
	if n1 != 0 {
		t.Fatalf("%d hooks still instrumented 10s after the exporter died", n1)
	}
	after := recordRate(g, 3*time.Second)
	c2, _ := readCounters(t, shm)
	t.Logf("records/s: %.1f unhooked, %.1f hooked, %.1f after the kill; counters at the drop %+v, later %+v", free, held, after, c1, c2)
	if d := c1.MissedDeadline - c0.MissedDeadline; d > 2 {
		t.Errorf("%d holds ran out after the kill, want at most one per vCPU", d)
	}
	if c1.Held-c0.Held > 2 {
		// A hold released by the child just before it died may count.
		t.Errorf("%d holds completed after the kill", c1.Held-c0.Held)
	}
	if c2.Hits != c1.Hits || c2.Held != c1.Held || c2.MissedDeadline != c1.MissedDeadline {
		t.Errorf("the plugin still sees hits after dropping its instrumentation: %+v then %+v", c1, c2)
	}

	// A new exporter can attach to the same plugin and hook again.
	d := openPlugin(t, g, shm)
	if err := d.SetHooks([]introspect.Va{0xffff_ffff_ff00_0000}); err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer acancel()
	if err := d.WaitHooksApplied(actx); err != nil {
		t.Fatalf("re-attach: %v", err)
	}
}

// TestLivePluginAsync runs the plugin in async mode with a tiny ring and
// a slow consumer on a hot function: hits arrive as copies, the overflow
// is counted, and the guest never waits for the exporter.
func TestLivePluginAsync(t *testing.T) {
	g, d, o, free := loopingPlugin(t, testguest.Options{}, 3*time.Second, "mode=async", "ring=4")
	if d.Mode() != "async" {
		t.Fatalf("mode %s", d.Mode())
	}
	fn, err := o.Symbol("do_syscall_64")
	if err != nil {
		t.Fatal(err)
	}
	eng := hook.NewPlugin(d, hook.WithStatsInterval(100*time.Millisecond))
	if err := eng.Add(hook.Hook{Addr: fn, Root: o.KernelRoot(), Global: true, Tag: "syscall"}); err != nil {
		t.Fatal(err)
	}
	hits := make(chan struct{}, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, &slowHandler{delay: 2 * time.Millisecond, hits: hits}) }()
	async := recordRate(g, 3*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := d.HookStats()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := d.Counters()
	t.Logf("records/s %.1f unhooked, %.1f async-hooked; %d hits handled; plugin %+v", free, async, len(hits), c)
	if len(hits) == 0 || c.RingPosted == 0 {
		t.Fatal("no hit came through the ring")
	}
	if st.Overflow == 0 {
		t.Error("a 4-entry ring behind a 2ms consumer never overflowed")
	}
	if st.Held != 0 || st.MissedDeadline != 0 {
		t.Errorf("async mode held vCPUs: %+v", st)
	}
	if !waitRecords(g, 5, 30*time.Second) {
		t.Fatal("guest does not run its workload")
	}
}

// TestLivePluginNoIdle changes the hook table of a guest that never idles
// (idle=poll: its vCPUs never halt, so QEMU's idle callback never runs):
// the plugin must apply a new table, and an empty one, within a second,
// and count no hit once the table is empty.
func TestLivePluginNoIdle(t *testing.T) {
	_, d, o, _ := loopingPlugin(t, testguest.Options{ExtraAppend: "idle=poll"}, 0)
	fn, err := o.Symbol("ksys_write")
	if err != nil {
		t.Fatal(err)
	}
	apply := func(vas []introspect.Va) time.Duration { return applyHooks(t, d, vas, time.Second) }
	var lat []time.Duration
	for range 5 {
		lat = append(lat, apply([]introspect.Va{fn}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ev, err := d.WaitHit(ctx)
		cancel()
		if err != nil {
			t.Fatalf("no hit after the table was applied: %v", err)
		}
		if _, err := d.ReleaseHit(ev); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, apply(nil))
	}
	// Hits the mailbox goroutines queued before the empty table applied.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		ev, err := d.WaitHit(ctx)
		cancel()
		if err != nil {
			break
		}
		d.ReleaseHit(ev)
	}
	c1, _ := d.Counters()
	time.Sleep(2 * time.Second)
	c2, _ := d.Counters()
	t.Logf("apply latencies (set, clear, ...): %v; counters %+v", lat, c2)
	if c2.Hits != c1.Hits {
		t.Errorf("%d hits counted with an empty table", c2.Hits-c1.Hits)
	}
}

// TestLivePluginHung attaches an exporter that never answers (alive, its
// heartbeat fresh, but no hit is ever taken): the plugin's backoff must
// keep the holds that run out few, and the workload going.
func TestLivePluginHung(t *testing.T) {
	g, d, o, free := loopingPlugin(t, testguest.Options{}, 3*time.Second)
	fn, err := o.Symbol("do_syscall_64")
	if err != nil {
		t.Fatal(err)
	}
	applyHooks(t, d, []introspect.Va{fn}, 10*time.Second)
	c0, _ := d.Counters()
	const window = 5 * time.Second
	hung := recordRate(g, window)
	c1, _ := d.Counters()
	missed := c1.MissedDeadline - c0.MissedDeadline
	t.Logf("records/s %.1f unhooked, %.1f with a hung exporter; %d holds ran out in %v, %d hits not held", free, hung, missed,
		window, c1.MissedNoConsumer-c0.MissedNoConsumer)
	// Backoff 20ms, 40ms, ... 1s: about 6 misses to reach 1s, then one a
	// second, per vCPU at most.
	if missed > 2*(6+uint64(window/time.Second)+2) {
		t.Errorf("%d holds ran out in %v: no backoff", missed, window)
	}
	if hung == 0 {
		t.Error("workload stopped under a hung exporter")
	}
}
