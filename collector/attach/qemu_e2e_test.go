package attach_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/attach"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/internal/promtest"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/gdbstub"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/qmp"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/vmlinux"
)

// The end-to-end tests boot the real test guest under QEMU (TCG), so each
// takes from tens of seconds to minutes on a loaded machine. Every wait is
// a poll with a generous deadline; nothing asserts on timing.

const (
	e2eTimeout = 8 * time.Minute // one boot + attach + a few rounds, heavily loaded host
	guestName  = "tg"
)

func skipE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test on the QEMU guest (without -short)")
	}
	testutil.RequireTool(t, testguest.QEMUBinary(""))
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// bootGuest prepares the test guest's assets and boots it with opts, and
// waits for its workload to be ready. Unless keep is set, the guest is
// closed at the end of the test.
func bootGuest(ctx context.Context, t *testing.T, opts testguest.Options) (*testguest.Guest, *testguest.Assets) {
	t.Helper()
	log := testLog(t)
	assets, err := testguest.Prepare(ctx, "", log)
	if err != nil {
		t.Fatalf("prepare test guest: %v", err)
	}
	opts.Log = log
	start := time.Now()
	g, err := testguest.Boot(ctx, assets, opts)
	if err != nil {
		t.Fatalf("boot test guest: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	if err := g.WaitReady(ctx); err != nil {
		t.Fatalf("guest not ready: %v", err)
	}
	t.Logf("guest booted in %v (QEMU pid %d)", time.Since(start).Round(time.Millisecond), g.PID)
	return g, assets
}

// withPlugin has the guest booted with the vmi-hooks plugin, so that the
// exporter hooks through it (the default engine of a QEMU that runs it).
// The hold deadline is a second: the exact counts need every hold kept, and
// a test machine under load can take longer than the default 20 ms to
// schedule the exporter; a missed hold is counted, not hidden, but its hit
// may decode newer memory than the hit's.
func withPlugin(t *testing.T, opts testguest.Options) testguest.Options {
	t.Helper()
	opts.Plugin = testguest.RequirePlugin(t)
	opts.PluginOpts = append(opts.PluginOpts, "hold_ms=1000")
	return opts
}

func guestConfig(g *testguest.Guest, kernel, cacheDir string) collector.GuestConfig {
	return collector.GuestConfig{
		Name: guestName, Driver: "qemu", OS: "linux",
		QEMU:    collector.QEMUConfig{GDBSocket: g.GDBSocket, QMPSocket: g.QMPSocket, RAMPath: g.RAMPath, PluginSHM: g.PluginSHM},
		Profile: collector.ProfileConfig{KernelImage: kernel, CacheDir: cacheDir},
	}
}

// codeSnapshot is guest kernel code as the shared RAM file holds it.
type codeSnapshot struct {
	hooks  map[string]introspect.Va // probe name -> hooked address
	hookPA map[string]introspect.Pa // probe name -> its physical address
	// pages are the physical addresses of every page of [_text, _etext)
	// (and so of every hooked address); bytes holds their content.
	pages []introspect.Pa
	bytes map[introspect.Pa][]byte
}

// snapshotCode attaches once with the QEMU driver and the Linux OS layer to
// find the hooked functions and the kernel text's physical pages, detaches,
// and reads those pages from the RAM file.
func snapshotCode(ctx context.Context, t *testing.T, g *testguest.Guest, kernel string) *codeSnapshot {
	t.Helper()
	d, err := qemu.Open(ctx, qemu.Config{GDBSocket: g.GDBSocket, QMPSocket: g.QMPSocket, RAMPath: g.RAMPath,
		RAMSize: uint64(g.RAMSize), Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatalf("attach for the code snapshot: %v", err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Errorf("detach after the code snapshot: %v", err)
		}
	}()
	prof, err := vmlinux.Profile(kernel, vmlinux.Options{})
	if err != nil {
		t.Fatalf("kernel profile: %v", err)
	}
	o, err := oslinux.New(d, prof, oslinux.Options{})
	if err != nil {
		t.Fatalf("find kernel: %v", err)
	}
	ps, err := probes.New(o).Probes(collector.ProbeKinds())
	if err != nil {
		t.Fatal(err)
	}
	s := &codeSnapshot{hooks: map[string]introspect.Va{}, hookPA: map[string]introspect.Pa{}, bytes: map[introspect.Pa][]byte{}}
	for _, p := range ps {
		s.hooks[p.Name] = p.Addr
		if s.hookPA[p.Name], err = o.Memory().Translate(o.KernelRoot(), p.Addr); err != nil {
			t.Fatalf("translate hook %s: %v", p.Name, err)
		}
	}
	if _, ok := s.hooks[probes.FuncFileWritev]; len(s.hooks) != 13 || !ok {
		t.Fatalf("probes %v, want the thirteen Linux probes (file.write by vfs_write, vfs_writev and the sendfile, splice, copy_file_range and io_uring paths)", s.hooks)
	}
	text, err1 := o.Symbol("_text")
	etext, err2 := o.Symbol("_etext")
	if err := errors.Join(err1, err2); err != nil || etext <= text || etext-text > 64<<20 {
		t.Fatalf("kernel text [%v, %v): %v", text, etext, err)
	}
	for va := text &^ 0xfff; va < etext; va += 0x1000 {
		pa, err := o.Memory().Translate(o.KernelRoot(), va)
		if err != nil {
			t.Fatalf("translate kernel text page %v: %v", va, err)
		}
		s.pages = append(s.pages, pa)
	}
	for name, va := range s.hooks {
		if va < text || va >= etext {
			t.Fatalf("hook %s at %v outside the kernel text [%v, %v)", name, va, text, etext)
		}
	}
	s.read(t, g.RAMPath)
	t.Logf("kernel text %v-%v: %d pages; hooks %v", text, etext, len(s.pages), s.hooks)
	return s
}

func (s *codeSnapshot) read(t *testing.T, ramPath string) {
	t.Helper()
	f, err := os.Open(ramPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, pa := range s.pages {
		b := make([]byte, 0x1000)
		if _, err := f.ReadAt(b, int64(pa)); err != nil {
			t.Fatalf("read RAM file at %v: %v", pa, err)
		}
		s.bytes[pa] = b
	}
}

// recordSink is a collector.Sink that keeps every event.
type recordSink struct {
	mu     sync.Mutex
	events []collector.Event
	closed bool
}

func (r *recordSink) Name() string { return "record" }
func (r *recordSink) Export(ev *collector.Event) {
	r.mu.Lock()
	r.events = append(r.events, *ev)
	r.mu.Unlock()
}
func (r *recordSink) Close(context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

// upMetrics is a collector.Metrics that tracks whether the guest is up.
type upMetrics struct {
	mu       sync.Mutex
	up       bool
	attaches []error
	attachAt []time.Time
	errs     map[string]int
}

func (m *upMetrics) Event(*collector.Event) {}
func (m *upMetrics) ProbeError(_, probe, reason string) {
	m.mu.Lock()
	m.errs[probe+"/"+reason]++
	m.mu.Unlock()
}
func (m *upMetrics) Notice(string, string) {}
func (m *upMetrics) Attach(_ string, err error) {
	m.mu.Lock()
	m.attaches = append(m.attaches, err)
	m.attachAt = append(m.attachAt, time.Now())
	m.mu.Unlock()
}
func (m *upMetrics) Up(_ string, _ *collector.Guest, up bool) {
	m.mu.Lock()
	m.up = up
	m.mu.Unlock()
}
func (m *upMetrics) Dropped(string, string)   {}
func (m *upMetrics) Queue(string, func() int) {}
func (m *upMetrics) isUp() bool               { m.mu.Lock(); defer m.mu.Unlock(); return m.up }
func (m *upMetrics) attachErrs() []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]error(nil), m.attaches...)
}
func (m *upMetrics) probeErrs() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copyMap(m.errs)
}
func copyMap(in map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range in {
		out[k] = v
	}
	return out
}

// newCollector builds an in-process collector for the test guest with the
// QEMU backend, every probe, a recording sink and upMetrics; o supplies
// the other options.
func newCollector(t *testing.T, g *testguest.Guest, assets *testguest.Assets, o collector.Options) (*collector.Collector, *recordSink, *upMetrics) {
	t.Helper()
	sink := &recordSink{}
	m := &upMetrics{errs: map[string]int{}}
	o.Guests = []collector.GuestConfig{guestConfig(g, assets.Kernel, t.TempDir())}
	o.Attachers = map[string]collector.Attacher{"qemu": &attach.QEMU{Log: testLog(t), Timeout: time.Minute}}
	o.Enabled = collector.ProbeKinds()
	o.Metrics, o.Sinks, o.Logger = m, []collector.Sink{sink}, testLog(t)
	c, err := collector.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c, sink, m
}

// poll calls cond until it returns true or the deadline passes.
func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkWorkload compares events with the workload's manifest exactly:
// every spawned process starts once with its pid and parent pid and exits
// once with its pid, parent pid and name (vmi-round ends in "exec rm", so
// only its pid and parent are checked); every file
// the manifest lists (under /tmp/vmi/, and /etc/vmi-test-r<round>.conf) is
// created (opened with O_CREAT) and written exactly as often as the
// workload did, with its full path and the writer's pid and name; no other
// such file and no second start or exit of a workload pid shows.
func checkWorkload(t *testing.T, man *testguest.Manifest, events []collector.Event) {
	t.Helper()
	type key struct {
		kind collector.Kind
		pid  uint64
		path string
	}
	files := map[string]bool{}
	for _, f := range man.Files {
		files[f.Path] = true
	}
	got := map[key][]collector.Event{}
	for _, ev := range events {
		switch ev.Kind {
		case collector.KindProcessStart, collector.KindProcessExit:
			got[key{ev.Kind, ev.Process.PID, ""}] = append(got[key{ev.Kind, ev.Process.PID, ""}], ev)
		case collector.KindFileCreate, collector.KindFileWrite:
			if files[ev.Path] || strings.HasPrefix(ev.Path, "/tmp/vmi/") || strings.HasPrefix(ev.Path, "/etc/vmi-test-") {
				got[key{ev.Kind, ev.Process.PID, ev.Path}] = append(got[key{ev.Kind, ev.Process.PID, ev.Path}], ev)
			}
		}
	}
	if len(man.Spawns) != len(man.Rounds)*testguest.SpawnsPerRound || len(man.Files) != len(man.Rounds)*testguest.FilesPerRound {
		t.Fatalf("manifest incomplete: %d rounds, %d spawns, %d files", len(man.Rounds), len(man.Spawns), len(man.Files))
	}
	spawn := map[uint64]testguest.Spawn{}
	want := map[key]bool{}
	for _, s := range man.Spawns {
		pid := uint64(s.PID)
		spawn[pid] = s
		for _, k := range []collector.Kind{collector.KindProcessStart, collector.KindProcessExit} {
			kk := key{k, pid, ""}
			want[kk] = true
			evs := got[kk]
			if len(evs) != 1 {
				t.Errorf("%s of %s pid %d: %d events, want 1", k, s.Name, pid, len(evs))
				continue
			}
			ev := evs[0]
			if ev.Process.PPID != uint64(s.PPID) {
				t.Errorf("%s of %s pid %d: parent pid %d, want %d", k, s.Name, pid, ev.Process.PPID, s.PPID)
			}
			if k == collector.KindProcessExit && s.Name != testguest.NameRound && ev.Process.Name != s.Name {
				t.Errorf("exit of pid %d: name %q, want %q", pid, ev.Process.Name, s.Name)
			}
			if ev.Guest == nil || ev.Guest.Domain != guestName || ev.Guest.OS != "linux" {
				t.Errorf("%s of pid %d: guest %+v", k, pid, ev.Guest)
			}
		}
	}
	for _, f := range man.Files {
		pid := uint64(f.PID)
		writer, ok := spawn[pid]
		if !ok {
			t.Errorf("file %s written by pid %d, which the manifest did not spawn", f.Path, pid)
		}
		for k, n := range map[collector.Kind]int{collector.KindFileCreate: f.Opens, collector.KindFileWrite: f.Writes} {
			kk := key{k, pid, f.Path}
			want[kk] = true
			evs := got[kk]
			if len(evs) != n {
				t.Errorf("%s %s pid %d: %d events, want %d", k, f.Path, pid, len(evs), n)
			}
			for _, ev := range evs {
				if ev.Process.Name != writer.Name {
					t.Errorf("%s %s pid %d: process name %q, want %q", k, f.Path, pid, ev.Process.Name, writer.Name)
				}
			}
		}
	}
	for _, c := range man.Copies {
		pid := uint64(c.PID)
		for k, n := range map[collector.Kind]int{collector.KindFileCreate: 1, collector.KindFileWrite: c.Calls} {
			kk := key{k, pid, c.Path}
			want[kk] = true
			if evs := got[kk]; len(evs) != n {
				t.Errorf("%s %s pid %d (%s): %d events, want %d", k, c.Path, pid, c.Syscall, len(evs), n)
			}
		}
	}
	for k, evs := range got {
		if !want[k] && k.path != "" {
			t.Errorf("unexpected %s of %s by pid %d (%d events)", k.kind, k.path, k.pid, len(evs))
		}
	}
	if t.Failed() {
		var b strings.Builder
		for _, ev := range events {
			fmt.Fprintf(&b, "%s %s probe=%s vcpu=%d pid=%d ppid=%d name=%s path=%s syscall=%s bytes=%d\n", ev.Time.Format("15:04:05.000000"), ev.Kind, ev.Probe, ev.VCPU, ev.Process.PID, ev.Process.PPID, ev.Process.Name, ev.Path, ev.Syscall, ev.Bytes)
		}
		t.Logf("events:\n%s", b.String())
	}
}

// Issue 2, done when: boot the test guest, attach through the collector,
// check the workload's exact events, detach, and prove the guest keeps
// running with its code bytes unchanged and no breakpoint left behind.
//
// It runs on both QEMU engines: the vmi-hooks plugin (QEMU started with
// it) and gdbstub breakpoints (the fallback, QEMU without the plugin).
func TestQEMUEndToEnd(t *testing.T) {
	skipE2E(t)
	t.Run("plugin", func(t *testing.T) { testQEMUEndToEnd(t, true) })
	t.Run("gdbstub", func(t *testing.T) { testQEMUEndToEnd(t, false) })
}

func testQEMUEndToEnd(t *testing.T, plugin bool) {
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	t0 := time.Now()
	opts := testguest.Options{}
	if plugin {
		opts = withPlugin(t, opts)
	}
	g, assets := bootGuest(ctx, t, opts)
	before := snapshotCode(ctx, t, g, assets.Kernel)

	c, sink, m := newCollector(t, g, assets, collector.Options{Once: true})
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	poll(ctx, t, "collector attached", func() bool {
		select {
		case err := <-done:
			t.Fatalf("collector ended before attaching: %v", err)
		default:
		}
		return m.isUp()
	})

	const rounds = 2
	rstart := time.Now()
	man, err := g.Run(ctx, rounds)
	if err != nil {
		t.Fatalf("workload under monitoring: %v", err)
	}
	elapsed := time.Since(rstart)
	if err := man.Check(); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	// Cancelling detaches: every hook removed, gdbstub detached, guest
	// resumed; Run drains the queue into the sink before it returns.
	ccancel()
	if err := <-done; err != nil {
		t.Errorf("collector: %v", err)
	}
	sink.mu.Lock()
	events := append([]collector.Event(nil), sink.events...)
	closed := sink.closed
	sink.mu.Unlock()
	if !closed {
		t.Error("sink not closed when the collector returned")
	}
	if errs := m.attachErrs(); len(errs) != 1 || errs[0] != nil {
		t.Errorf("attach attempts %v, want one success", errs)
	}
	hits := len(events)
	for _, n := range m.probeErrs() {
		hits += n
	}
	t.Logf("%d rounds in %v under monitoring: %d hits (%.1f hits/s), %d events, hits without an event %v",
		rounds, elapsed.Round(time.Millisecond), hits, float64(hits)/elapsed.Seconds(), len(events), m.probeErrs())
	checkWorkload(t, man, events)
	if plugin {
		checkPluginDetached(ctx, t, g, hits)
	}

	// No breakpoint is left: QEMU answers z0 for an address with no
	// breakpoint with an error, and OK for one it has. A raw gdbstub
	// client (connecting stops the guest) checks each hooked address,
	// then proves the check tells the two apart by setting one itself.
	gdb, err := gdbstub.Dial(ctx, "unix", g.GDBSocket, gdbstub.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatalf("raw gdbstub client after detach: %v", err)
	}
	for name, va := range before.hooks {
		if err := gdb.RemoveBreakpoint(0, uint64(va), 1); err == nil {
			t.Errorf("breakpoint of %s at %v still set after detach (z0 answered OK)", name, va)
		}
	}
	va := before.hooks[probes.FuncFileWrite]
	if err := gdb.InsertBreakpoint(0, uint64(va), 1); err != nil {
		t.Fatalf("control: Z0 at %v: %v", va, err)
	}
	if err := gdb.RemoveBreakpoint(0, uint64(va), 1); err != nil {
		t.Fatalf("control: z0 of a breakpoint just set at %v: %v (the check above would prove nothing)", va, err)
	}
	if err := gdb.Detach(); err != nil {
		t.Fatalf("raw gdbstub detach: %v", err)
	}
	gdb.Close()

	// The guest keeps running: a further round completes exactly, and QMP
	// says the VM runs.
	man2, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatalf("workload after detach: %v", err)
	}
	if err := man2.Check(); err != nil {
		t.Errorf("manifest after detach: %v", err)
	}
	want := rounds + 1
	if plugin {
		want++ // checkPluginDetached ran one
	}
	if man2.Rounds[0] != want {
		t.Errorf("round after detach is %v, want %d", man2.Rounds, want)
	}
	q, err := qmp.Dial(ctx, "unix", g.QMPSocket, qmp.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatalf("QMP after detach: %v", err)
	}
	st, err := q.QueryStatus()
	q.Close()
	if err != nil || !st.Running || st.Status != "running" {
		t.Errorf("QMP status after detach: %+v, %v; want running", st, err)
	}

	// The kernel code is byte-for-byte what it was before the attach.
	after := &codeSnapshot{pages: before.pages, bytes: map[introspect.Pa][]byte{}}
	after.read(t, g.RAMPath)
	changed := 0
	for _, pa := range before.pages {
		if !bytes.Equal(before.bytes[pa], after.bytes[pa]) {
			changed++
			if changed <= 5 {
				t.Errorf("kernel text page at %v changed across attach/detach", pa)
			}
		}
	}
	for name, pa := range before.hookPA {
		page, off := pa&^0xfff, pa&0xfff
		b, a := before.bytes[page][off:off+16], after.bytes[page][off:off+16]
		if !bytes.Equal(b, a) {
			t.Errorf("hook %s at %v (%v): code % x before attach, % x after detach", name, before.hooks[name], pa, b, a)
		}
		t.Logf("hook %s at %v (%v): % x", name, before.hooks[name], pa, a)
	}
	if changed > 0 {
		t.Errorf("%d of %d kernel text pages changed", changed, len(before.pages))
	}
	t.Logf("test took %v", time.Since(t0).Round(time.Millisecond))
}

// checkPluginDetached proves that the hits came through the plugin (its
// own counters saw at least the hits the collector handled) and that the
// detach left no instrumentation: the plugin applied an empty table, and
// a workload round with nobody attached adds no hit to its counters.
func checkPluginDetached(ctx context.Context, t *testing.T, g *testguest.Guest, handled int) {
	t.Helper()
	d, err := qemu.OpenPlugin(ctx, qemu.PluginConfig{SHMPath: g.PluginSHM, RAMPath: g.RAMPath}, testLog(t))
	if err != nil {
		t.Fatalf("open the plugin's shared file after detach: %v", err)
	}
	defer d.Close()
	c0, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c0.Hits < uint64(handled) {
		t.Errorf("plugin counted %d hits, the collector handled %d: the hooks did not run through the plugin", c0.Hits, handled)
	}
	if c0.MissedDeadline != 0 || c0.MissedNoConsumer != 0 {
		t.Errorf("plugin counters %+v: holds missed while the collector was attached", c0)
	}
	if n := d.AppliedHooks(); n != 0 {
		t.Errorf("plugin still applies %d hooks after detach", n)
	}
	man, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatalf("workload with the plugin unhooked: %v", err)
	}
	if err := man.Check(); err != nil {
		t.Errorf("manifest with the plugin unhooked: %v", err)
	}
	c1, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c1.Hits != c0.Hits {
		t.Errorf("plugin counted %d hits during a round after detach, want 0", c1.Hits-c0.Hits)
	}
	t.Logf("plugin counters at detach: %+v", c0)
}

// exporterConfig writes the YAML configuration for one QEMU guest.
func exporterConfig(t *testing.T, listen, jsonl string, gc collector.GuestConfig) string {
	t.Helper()
	cfg := fmt.Sprintf(`web:
  listen_address: %q
guests:
  - name: %q
    driver: qemu
    os: linux
    qemu:
      gdb_socket: %q
      qmp_socket: %q
      ram_path: %q
      plugin_shm: %q
    profile:
      kernel_image: %q
      cache_dir: %q
jsonl:
  path: %q
backoff:
  initial: 500ms
  max: 4s
  jitter: 0.1
log:
  level: info
`, listen, gc.Name, gc.QEMU.GDBSocket, gc.QEMU.QMPSocket, gc.QEMU.RAMPath, gc.QEMU.PluginSHM, gc.Profile.KernelImage, gc.Profile.CacheDir, jsonl)
	p := filepath.Join(t.TempDir(), "vmi-exporter.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startExporter runs `vmi-exporter run --config cfg` until the end of the
// test, then stops it with SIGTERM (it detaches) and checks it exits 0.
func startExporter(t *testing.T, bin, cfg string) *testutil.SyncBuffer {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", cfg)
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("vmi-exporter exit: %v", err)
			}
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			<-waited
			t.Errorf("vmi-exporter did not stop within 2 minutes of SIGTERM")
		}
		if t.Failed() {
			t.Logf("vmi-exporter output:\n%s", logs.String())
		}
	})
	return logs
}

// scrapeMetrics returns the exporter's /metrics text, or an error.
func scrapeMetrics(base string) (string, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return b.String(), nil
}

// metricValue returns the value of one series (name{labels} exactly as
// the exposition format writes it) in a scrape.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// readJSONL returns the events of the exporter's JSON-lines log so far
// (a trailing partial line is left for later).
func readJSONL(t *testing.T, path string) []collector.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var evs []collector.Event
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		var ev struct {
			collector.Event
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(b[:i], &ev); err != nil {
			t.Fatalf("JSON event %q: %v", b[:i], err)
		}
		k, err := collector.ParseKind(ev.Kind)
		if err != nil {
			t.Fatalf("JSON event %q: %v", b[:i], err)
		}
		ev.Event.Kind = k
		evs = append(evs, ev.Event)
		b = b[i+1:]
	}
	return evs
}

// Issue 3, done when: a real Prometheus server from Debian scrapes the
// exporter (the vmi-exporter binary, `run` with a configuration file)
// during an end-to-end run on the QEMU test guest, and its HTTP API
// returns the expected counter values for the workload.
//
// The counters count everything the guest does, not only the workload
// (e.g. the init shell's own opens), so the test asserts exactly:
//   - per kind, the counter Prometheus returns equals the number of events
//     of that kind in the exporter's JSON-lines log, and
//     vmi_breakpoint_hits_total{probe} equals it plus the probe's
//     vmi_probe_errors_total (hits that yielded no event, e.g. opens
//     without O_CREAT);
//   - the JSON events of the workload match its manifest exactly
//     (checkWorkload: pids, parents, names, paths, counts);
//   - the counters' increase over the rounds is at least the manifest's
//     counts (per round 6 starts, 6 exits, and 2 creates and 2 writes of
//     each of testguest.FilesPerRound files), and the
//     file counters' increase is exactly that: the workload is the only
//     thing that creates or writes regular files while it runs;
//   - vmi_guest_up is 1 and no event was dropped.
func TestPrometheusScrapesExporter(t *testing.T) {
	skipE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	t0 := time.Now()
	bin := testutil.BuildExporter(ctx, t)
	g, assets := bootGuest(ctx, t, withPlugin(t, testguest.Options{}))
	listen := testutil.FreeAddr(t)
	jsonl := filepath.Join(t.TempDir(), "events.jsonl")
	startExporter(t, bin, exporterConfig(t, listen, jsonl, guestConfig(g, assets.Kernel, t.TempDir())))
	prom := promtest.Server(t, listen, time.Second)

	up := `vmi_guest_up{domain="tg"}`
	poll(ctx, t, "Prometheus sees the guest up", func() bool {
		v, ok := promtest.Query(t, prom, up)
		return ok && v == 1
	})
	tUp := time.Since(t0)

	kinds := []struct {
		kind   collector.Kind
		metric string
		probe  string // regular expression: the probes of the kind
		perRun int    // per workload round
	}{
		{collector.KindProcessStart, "vmi_process_starts_total", probes.FuncProcessStart, testguest.SpawnsPerRound},
		{collector.KindProcessExit, "vmi_process_exits_total", probes.FuncProcessExit, testguest.ExitsPerRound},
		// The create counter counts new files: one per file and copy.
		{collector.KindFileCreate, "vmi_file_creates_total", probes.FuncFileCreate, testguest.FilesPerRound + testguest.CopiesPerRound},
		{collector.KindFileWrite, "vmi_file_writes_total", strings.Join([]string{probes.FuncFileWrite, probes.FuncFileWritev,
			probes.FuncSendfile, probes.FuncSplice, probes.FuncCopyRange, probes.FuncIOWrite}, "|"), testguest.FileWritesPerRound + testguest.CopiesPerRound},
		{collector.KindFileRename, "vmi_file_renames_total", probes.FuncFileRename, testguest.RenamesPerRound},
		{collector.KindFileDelete, "vmi_file_deletes_total", probes.FuncFileUnlink + "|" + probes.FuncFileRmdir, testguest.FilesPerRound + testguest.CopiesPerRound},
		{collector.KindProcessExec, "vmi_process_execs_total", probes.FuncProcessExec, testguest.ExecsPerRound},
	}
	// count counts the events of kind k that its counter counts (all
	// when all is set).
	count := func(evs []collector.Event, k collector.Kind, all ...bool) int {
		n := 0
		for i := range evs {
			if evs[i].Kind == k && (len(all) > 0 || k.Counted(&evs[i])) {
				n++
			}
		}
		return n
	}
	// settled waits until Prometheus' value of every counter equals the
	// JSON log's count of that kind (both are behind the event loop: the
	// log flushes every 200ms, Prometheus scrapes every second), and
	// returns the values.
	settled := func(what string) map[collector.Kind]float64 {
		t.Helper()
		vals := map[collector.Kind]float64{}
		var last string
		for {
			evs := readJSONL(t, jsonl)
			ok := true
			var b strings.Builder
			for _, k := range kinds {
				v, found := promtest.Query(t, prom, fmt.Sprintf(`%s{domain="tg"}`, k.metric))
				if !found {
					v = 0 // a counter without a sample yet is 0
				}
				n := count(evs, k.kind)
				vals[k.kind] = v
				fmt.Fprintf(&b, "%s prometheus %v json %d; ", k.metric, v, n)
				ok = ok && v == float64(n)
			}
			if ok {
				// Two agreeing reads a scrape apart: nothing was in flight.
				if b.String() == last {
					return vals
				}
				last = b.String()
			} else {
				last = ""
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: Prometheus and the JSON log never agreed: %s", what, b.String())
			case <-time.After(1500 * time.Millisecond):
			}
		}
	}
	base := settled("before the workload")

	const rounds = 2
	rstart := time.Now()
	man, err := g.Run(ctx, rounds)
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	elapsed := time.Since(rstart)
	if err := man.Check(); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	final := settled("after the workload")
	evs := readJSONL(t, jsonl)
	checkWorkload(t, man, evs)

	for _, k := range kinds {
		inc := final[k.kind] - base[k.kind]
		want := float64(rounds * k.perRun)
		t.Logf("%s: %v before, %v after the %d rounds (+%v; workload %v)", k.metric, base[k.kind], final[k.kind], rounds, inc, want)
		if inc < want {
			t.Errorf("%s increased by %v over %d rounds, want at least %v", k.metric, inc, rounds, want)
		}
		if k.kind != collector.KindProcessStart && k.kind != collector.KindProcessExit && k.kind != collector.KindProcessExec && inc != want {
			t.Errorf("%s increased by %v over %d rounds, want exactly %v", k.metric, inc, rounds, want)
		}
		hits, ok := promtest.Query(t, prom, fmt.Sprintf(`sum(vmi_breakpoint_hits_total{domain="tg",probe=~%q})`, k.probe))
		noEvent, _ := promtest.Query(t, prom, fmt.Sprintf(`sum(vmi_probe_errors_total{domain="tg",probe=~%q})`, k.probe))
		// Every hit is an event (counted or not: opens of existing files
		// with O_CREAT) or a probe error.
		events := float64(count(evs, k.kind, true))
		if !ok || hits != events+noEvent || hits <= 0 {
			t.Errorf("vmi_breakpoint_hits_total{probe=%q} = %v (found %v), want %v events + %v without event (> 0)", k.probe, hits, ok, events, noEvent)
		}
	}
	if v, ok := promtest.Query(t, prom, up); !ok || v != 1 {
		t.Errorf("%s = %v (found %v), want 1", up, v, ok)
	}
	if v, ok := promtest.Query(t, prom, `sum(vmi_events_dropped_total)`); ok && v != 0 {
		t.Errorf("events dropped: %v", v)
	}
	if v, ok := promtest.Query(t, prom, `vmi_guest_attach_attempts_total{domain="tg",result="success"}`); !ok || v != 1 {
		t.Errorf("successful attaches %v (found %v), want 1", v, ok)
	}
	t.Logf("exporter up in Prometheus after %v; %d rounds in %v under monitoring (%d events); test took %v",
		tUp.Round(time.Millisecond), rounds, elapsed.Round(time.Millisecond), len(evs), time.Since(t0).Round(time.Millisecond))
}

// Issue 3, done when: killing the QEMU guest mid-run leaves the exporter
// serving, with the guest marked down; restarting it (same sockets, same
// RAM file, same configuration) brings it back by itself.
// TestGuestRebooted resets the guest under the collector (QMP
// system_reset, as a host would): the new boot puts the kernel at another
// KASLR slide, so the hooks of the first session sit on the wrong code.
// The periodic kernel check notices, the session ends (hooks removed) and
// the supervisor attaches to the new kernel; its file writes are decoded
// again.
//
// It runs on the gdbstub engine. On the plugin it passed every local run,
// but once, on a machine at a load of about 10, the guest never came back
// from the reset (no register samples, no answer to poweroff) and the
// cause is not known yet; until it is, the check that reboots are handled
// (which is the collector's, whatever the engine) does not depend on it.
func TestGuestRebooted(t *testing.T) {
	skipE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	t0 := time.Now()
	dir, err := os.MkdirTemp("", "vmirb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctl := filepath.Join(dir, "ctl.qmp") // the host's own QMP; the driver holds the other
	g, assets := bootGuest(ctx, t, testguest.Options{Dir: dir, Reboot: true, LoopIntervalMS: 20,
		ExtraArgs: []string{"-qmp", "unix:" + ctl + ",server=on,wait=off"}})

	c, sink, m := newCollector(t, g, assets, collector.Options{
		Backoff:        collector.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
		VerifyInterval: 300 * time.Millisecond,
	})
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() {
		ccancel()
		if err := <-done; err != nil {
			t.Errorf("collector: %v", err)
		}
	}()
	// writesSince counts decoded writes of workload files after since.
	writesSince := func(since time.Time) int {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		n := 0
		for _, ev := range sink.events {
			if ev.Kind == collector.KindFileWrite && ev.Time.After(since) && strings.HasPrefix(ev.Path, "/tmp/vmi/") {
				n++
			}
		}
		return n
	}
	poll(ctx, t, "writes decoded before the reset", func() bool { return writesSince(t0) > 0 })

	q, err := qmp.Dial(ctx, "unix", ctl, qmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	tReset := time.Now()
	if err := q.Execute("system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	var second time.Time
	poll(ctx, t, "attached again after the reset, and writes decoded", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, at := range m.attachAt {
			if i > 0 && m.attaches[i] == nil && at.After(tReset) {
				second = at
				return writesSince(at) > 0
			}
		}
		return false
	})
	errs := m.attachErrs()
	t.Logf("reset at +%v; attached again at +%v after %d attach attempts (%d failed while the guest booted); %d writes decoded since; probe errors %v",
		tReset.Sub(t0).Round(time.Millisecond), second.Sub(t0).Round(time.Millisecond), len(errs), len(errs)-2,
		writesSince(second), m.probeErrs())
}

func TestGuestKilledAndRestarted(t *testing.T) {
	skipE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*e2eTimeout)
	defer cancel()
	t0 := time.Now()
	bin := testutil.BuildExporter(ctx, t)
	dir, err := os.MkdirTemp("", "vmikr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ramDir := "/dev/shm"
	if st, err := os.Stat(ramDir); err != nil || !st.IsDir() {
		ramDir = dir
	}
	ram := filepath.Join(ramDir, fmt.Sprintf("vmi-e2e-%d.ram", os.Getpid()))
	t.Cleanup(func() { os.Remove(ram) })
	opts := withPlugin(t, testguest.Options{Dir: dir, RAMFile: ram})

	g1, assets := bootGuest(ctx, t, opts)
	listen := testutil.FreeAddr(t)
	startExporter(t, bin, exporterConfig(t, listen, filepath.Join(t.TempDir(), "events.jsonl"),
		guestConfig(g1, assets.Kernel, t.TempDir())))
	base := "http://" + listen

	value := func(series string) (float64, bool) {
		text, err := scrapeMetrics(base)
		if err != nil {
			return 0, false
		}
		return metricValue(text, series)
	}
	up := `vmi_guest_up{domain="tg"}`
	writes := `vmi_file_writes_total{domain="tg"}`
	failures := `vmi_guest_attach_attempts_total{domain="tg",result="failure"}`
	successes := `vmi_guest_attach_attempts_total{domain="tg",result="success"}`
	waitValue := func(what, series string, cond func(float64) bool) float64 {
		t.Helper()
		var v float64
		poll(ctx, t, what, func() bool {
			var ok bool
			v, ok = value(series)
			return ok && cond(v)
		})
		return v
	}
	waitValue("guest up", up, func(v float64) bool { return v == 1 })
	if _, err := g1.Run(ctx, 1); err != nil {
		t.Fatalf("workload on the first guest: %v", err)
	}
	w1 := waitValue("writes of round 1", writes, func(v float64) bool { return v >= testguest.FileWritesPerRound })

	// Kill QEMU mid-run, while the workload loops and hooks are hit: the
	// exporter keeps serving and marks the guest down; its supervisor
	// keeps trying to attach (with backoff) and failing. Close removes the
	// dead guest's sockets and RAM file, as a host would.
	if err := g1.StartLoop(ctx, 20); err != nil {
		t.Fatalf("start the workload loop: %v", err)
	}
	waitValue("writes of the loop", writes, func(v float64) bool { return v > w1 })
	tKill := time.Now()
	g1.Kill()
	g1.Close()
	waitValue("guest marked down", up, func(v float64) bool { return v == 0 })
	tDown := time.Since(tKill)
	f0, _ := value(failures)
	wDown, _ := value(writes)
	waitValue("attach retried and failed twice more", failures, func(v float64) bool { return v >= f0+2 })
	text, err := scrapeMetrics(base)
	if err != nil {
		t.Fatalf("exporter stopped serving with the guest down: %v", err)
	}
	if v, ok := metricValue(text, writes); !ok || v != wDown || v <= w1 {
		t.Errorf("with the guest down, %s = %v (found %v), want the %v counted at the kill (> %v)", writes, v, ok, wDown, w1)
	}

	// Restart the guest at the same paths: the exporter comes back by
	// itself, and events flow again.
	g2, _ := bootGuest(ctx, t, opts)
	if g2.RAMPath != g1.RAMPath || g2.GDBSocket != g1.GDBSocket {
		t.Fatalf("restarted guest at %s %s, want %s %s", g2.RAMPath, g2.GDBSocket, g1.RAMPath, g1.GDBSocket)
	}
	waitValue("guest up again", up, func(v float64) bool { return v == 1 })
	if v, ok := value(successes); !ok || v != 2 {
		t.Errorf("%s = %v (found %v), want 2 (first guest, restarted guest)", successes, v, ok)
	}
	man, err := g2.Run(ctx, 1)
	if err != nil {
		t.Fatalf("workload on the restarted guest: %v", err)
	}
	if err := man.Check(); err != nil {
		t.Errorf("manifest of the restarted guest: %v", err)
	}
	w2 := waitValue("writes of the restarted guest", writes, func(v float64) bool { return v >= wDown+testguest.FileWritesPerRound })
	f1, _ := value(failures)
	t.Logf("down %v after the kill; %v failed attaches while down; writes %v (round 1), %v (at the kill), %v (restarted guest); test took %v",
		tDown.Round(time.Millisecond), f1, w1, wDown, w2, time.Since(t0).Round(time.Millisecond))
}
