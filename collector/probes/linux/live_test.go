package linux_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/vmlinux"
)

// liveOS boots the test guest, attaches with the QEMU driver over shared
// RAM and finds the kernel. The guest is left paused.
func liveOS(t testing.TB) (*testguest.Guest, *qemu.Driver, *oslinux.OS) {
	return liveOSWith(t, testguest.Options{})
}

// liveOSWith is liveOS with boot options (Dir and Log are set when empty).
func liveOSWith(t testing.TB, opts testguest.Options) (*testguest.Guest, *qemu.Driver, *oslinux.OS) {
	t.Helper()
	g, assets := testguest.BootForTest(t, "vlx", opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d, err := qemu.Open(ctx, qemu.Config{GDBSocket: g.GDBSocket, QMPSocket: g.QMPSocket,
		RAMPath: g.RAMPath, RAMSize: uint64(g.RAMSize), Timeout: 20 * time.Second}, nil)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return g, d, findKernel(t, d, assets.Kernel)
}

// findKernel finds the running kernel of the image at kernel (KASLR
// slide, kernel root) through m.
func findKernel(t testing.TB, m oslinux.Memory, kernel string) *oslinux.OS {
	t.Helper()
	prof, err := vmlinux.Profile(kernel, vmlinux.Options{})
	if err != nil {
		t.Fatalf("kernel profile: %v", err)
	}
	o, err := oslinux.New(m, prof, oslinux.Options{})
	if err != nil {
		t.Fatalf("find kernel: %v", err)
	}
	return o
}

// recorder decodes hits like the collector's event loop does and keeps
// the events.
type recorder struct {
	probes map[string]collector.Probe

	mu      sync.Mutex
	events  []collector.Event
	skips   map[string]int
	errs    map[string][]error
	notices map[hook.NoticeKind]int
	hits    int
	decode  time.Duration // total time in Decode
	// last is each vCPU's previous hit; rereported lists hits that are
	// the same execution again.
	last       map[introspect.VCPU]lastHit
	rereported []string
	trace      []string // one line per hit
	// noTrace leaves trace empty (the benchmark: no formatting while a
	// vCPU is held, and no memory growing with a flood).
	noTrace bool
}

// lastHit is what recorder keeps of a vCPU's previous hit.
type lastHit struct {
	regs amd64.Registers
	seq  uint64
}

func (r *recorder) HandleHit(h *hook.Hit) error {
	p := r.probes[h.Hook.Tag]
	ev := collector.Event{Kind: p.Kind, Probe: p.Name, VCPU: int(h.Ev.VCPU)}
	t0 := time.Now()
	err := p.Decode(h, &ev)
	dt := time.Since(t0)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits++
	r.decode += dt
	// A driver that numbers each vCPU's hits (the plugin's Seq) reported
	// one execution twice if the number repeats. Without numbers, the
	// same vCPU stopping twice in a row with identical registers is taken
	// as one execution reported twice: a guest can call a function twice
	// with identical registers (two same-length writes of one buffer to
	// the console), but the gdbstub engine's stops happen to differ.
	if prev, ok := r.last[h.Ev.VCPU]; ok {
		same := prev.regs == h.Ev.Regs
		if h.Ev.Seq != 0 {
			same = prev.seq == h.Ev.Seq
		}
		if same {
			r.rereported = append(r.rereported, fmt.Sprintf("vCPU %d %s rip %#x rsp %#x seq %d", h.Ev.VCPU, p.Name, prev.regs.RIP, prev.regs.RSP, h.Ev.Seq))
		}
	}
	r.last[h.Ev.VCPU] = lastHit{h.Ev.Regs, h.Ev.Seq}
	rg := &h.Ev.Regs
	if !r.noTrace {
		r.trace = append(r.trace, fmt.Sprintf("#%d vcpu%d %s rsp=%#x rflags=%#x rdi=%#x rsi=%#x cr3=%#x pid=%d err=%v",
			r.hits, h.Ev.VCPU, p.Name, rg.RSP, rg.RFLAGS, rg.RDI, rg.RSI, rg.CR3, ev.Process.PID, err))
	}
	switch {
	case err == nil:
		r.events = append(r.events, ev)
	case errors.Is(err, collector.ErrSkip):
		r.skips[p.Name]++
	default:
		if _, ok := paging.PageFault(err); ok {
			return err
		}
		r.errs[p.Name] = append(r.errs[p.Name], err)
	}
	return nil
}

func (r *recorder) Notice(n hook.Notice) {
	r.mu.Lock()
	r.notices[n.Kind]++
	r.mu.Unlock()
}

// TestLive attaches to the test guest, lists the current task of every
// vCPU, hooks the probes (four kinds, file.write by vfs_write and
// vfs_writev) with the native engine, runs workload rounds and checks the
// decoded events against the guest's own manifest.
func TestLive(t *testing.T) {
	g, d, o := liveOS(t)
	t.Logf("kernel %q slide %#x root %v", o.Banner(), o.Slide(), o.KernelRoot())
	if !strings.HasPrefix(o.Banner(), "Linux version 6.") {
		t.Errorf("banner %q", o.Banner())
	}
	tasks, errs := o.CurrentTasks()
	for i := range tasks {
		if errs[i] != nil {
			t.Fatalf("vCPU %d current task: %v", i, errs[i])
		}
		img, err := o.ImagePath(&tasks[i])
		t.Logf("vCPU %d: pid %d tgid %d ppid %d comm %q image %q (%v)", i, tasks[i].PID, tasks[i].TGID, tasks[i].PPID, tasks[i].Comm, img, err)
		if tasks[i].Comm == "" || err != nil {
			t.Errorf("vCPU %d task %+v image err %v", i, tasks[i], err)
		}
	}

	gos := probes.New(o)
	ps, err := gos.Probes(collector.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	// Debian's 6.1 cloud kernel has every optional function as a real
	// one: each probe must be there, or the checks below would only fail
	// later and less clearly.
	for _, f := range []string{probes.FuncFileWritev, probes.FuncSendfile, probes.FuncSplice, probes.FuncCopyRange,
		probes.FuncIOWrite, probes.FuncFileRename, probes.FuncFileUnlink, probes.FuncFileRmdir, probes.FuncProcessExec} {
		if !slices.Contains(names, f) {
			t.Errorf("probes %v: no %s", names, f)
		}
	}
	if len(ps) != 13 {
		t.Fatalf("probes %v, want 13", names)
	}
	eng := hook.NewNative(d, hook.WithFlush(o.Flush))
	runProbes(t, g, eng, ps, func() error { return d.Resume() })
	if err := eng.Close(); err != nil {
		t.Errorf("close engine: %v", err)
	}
}

// hookProbes adds a global hook per probe of ps to eng and returns a
// recorder that decodes their hits.
func hookProbes(t testing.TB, eng hook.Engine, ps []collector.Probe) *recorder {
	t.Helper()
	rec := &recorder{probes: map[string]collector.Probe{}, skips: map[string]int{}, errs: map[string][]error{}, notices: map[hook.NoticeKind]int{},
		last: map[introspect.VCPU]lastHit{}}
	for _, p := range ps {
		rec.probes[p.Name] = p
		if err := eng.Add(hook.Hook{Addr: p.Addr, Root: p.Root, Global: true, Tag: p.Name}); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// runProbes hooks the probes ps with eng, calls start (which lets the
// guest run, or waits until the hooks are in effect), runs two workload
// rounds while the engine's loop decodes every hit, and checks the events
// against the workload's manifest. The engine is left open (a cleanup
// closes it).
func runProbes(t *testing.T, g *testguest.Guest, eng hook.Engine, ps []collector.Probe, start func() error) *recorder {
	t.Helper()
	rec := hookProbes(t, eng, ps)
	t.Cleanup(func() { eng.Close() })
	if err := start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, rec) }()

	const rounds = 2
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t0 := time.Now()
	man, err := g.Run(rctx, rounds)
	rcancel()
	elapsed := time.Since(t0)
	cancel()
	if rerr := <-done; rerr != nil {
		t.Errorf("engine: %v", rerr)
	}
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	t.Logf("%d rounds in %v: %d hits (%.0f/s), decode %v/hit, %d events, skips %v, notices %v", rounds, elapsed, rec.hits,
		float64(rec.hits)/elapsed.Seconds(), rec.decode/time.Duration(max(rec.hits, 1)), len(rec.events), rec.skips, rec.notices)
	if len(rec.rereported) > 0 {
		t.Errorf("%d hits re-reported with identical registers (driver delivered one execution twice): %v", len(rec.rereported), rec.rereported)
	}
	for name, es := range rec.errs {
		t.Errorf("probe %s: %d decode errors, first: %v", name, len(es), es[0])
	}
	checkManifest(t, man, rec.events)
	checkNewKinds(t, man, rec.events)
	if t.Failed() {
		t.Logf("hits:\n%s", strings.Join(rec.trace, "\n"))
	}
	return rec
}

// checkManifest compares events with what the workload reported: every
// spawned process starts with its pid and parent and exits with its pid
// (and, except vmi-round which ends in "exec rm", its name); every file is
// created and written exactly as often as the workload did it, with its
// full path and the writer's pid; and no other file under /tmp/vmi shows.
// The writes of vmi-writev's file (writev(2)) must come from the
// vfs_writev probe, all others (write(2)) from vfs_write.
func checkManifest(t *testing.T, man *testguest.Manifest, events []collector.Event) {
	t.Helper()
	type key = eventKey
	got := countEvents(events)
	writeProbe := map[key]map[string]int{} // file.write events by probe
	exitName := map[uint64]string{}
	startParent := map[uint64]uint64{}
	for _, ev := range events {
		switch k, ok := keyOf(ev); {
		case ev.Kind == collector.KindProcessStart:
			startParent[ev.Process.PID] = ev.Process.PPID
		case ev.Kind == collector.KindProcessExit:
			exitName[ev.Process.PID] = ev.Process.Name
		case ok && ev.Kind == collector.KindFileWrite:
			if writeProbe[k] == nil {
				writeProbe[k] = map[string]int{}
			}
			writeProbe[k][ev.Probe]++
		}
	}
	want := wantEvents(man)
	if len(man.Spawns) != len(man.Rounds)*testguest.SpawnsPerRound || len(man.Files) != len(man.Rounds)*testguest.FilesPerRound {
		t.Fatalf("manifest incomplete: %d rounds, %d spawns, %d files", len(man.Rounds), len(man.Spawns), len(man.Files))
	}
	for _, s := range man.Spawns {
		pid := uint64(s.PID)
		if pp, ok := startParent[pid]; !ok || pp != uint64(s.PPID) {
			t.Errorf("spawn %+v: start event parent %d (seen %v)", s, pp, ok)
		}
		if n, ok := exitName[pid]; !ok || (s.Name != testguest.NameRound && n != s.Name) {
			t.Errorf("spawn %+v: exit event name %q (seen %v)", s, n, ok)
		}
	}
	writevFiles := 0
	for _, f := range man.Files {
		k := key{collector.KindFileWrite, uint64(f.PID), f.Path}
		s, _ := man.SpawnByPID(f.PID)
		probe := probes.FuncFileWrite
		if s.Name == testguest.NameWritev {
			probe = probes.FuncFileWritev
			writevFiles++
			t.Logf("round %d: %s by %s pid %d: %d writev(2) in the manifest, %d file.write events by probe (%v)",
				f.Round, f.Path, s.Name, f.PID, f.Writes, got[k], writeProbe[k])
		}
		if byProbe := writeProbe[k]; byProbe[probe] != f.Writes || len(byProbe) > 1 {
			t.Errorf("%s pid %d (%s): file.write events by probe %v, want %d from %s only", f.Path, f.PID, s.Name, byProbe, f.Writes, probe)
		}
	}
	copyProbe := map[string]string{probes.SyscallSendfile: probes.FuncSendfile, probes.SyscallSplice: probes.FuncSplice, probes.SyscallCopyRange: probes.FuncCopyRange, probes.SyscallIOUring: probes.FuncIOWrite}
	for _, c := range man.Copies {
		k := key{collector.KindFileWrite, uint64(c.PID), c.Path}
		if byProbe := writeProbe[k]; byProbe[copyProbe[c.Syscall]] != c.Calls || len(byProbe) > 1 {
			t.Errorf("%s pid %d (%s): file.write events by probe %v, want %d from %s only", c.Path, c.PID, c.Syscall, byProbe, c.Calls, copyProbe[c.Syscall])
		}
	}
	if writevFiles != len(man.Rounds) {
		t.Errorf("%d files written with writev(2) in %d rounds, want one per round", writevFiles, len(man.Rounds))
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s pid %d %s: %d events, want %d", k.kind, k.pid, k.path, got[k], n)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok && k.path != "" {
			t.Errorf("unexpected %s pid %d %s (%d)", k.kind, k.pid, k.path, n)
		}
	}
	if t.Failed() {
		var b strings.Builder
		for _, ev := range events {
			fmt.Fprintf(&b, "%s probe=%s pid=%d ppid=%d name=%s image=%s path=%s\n", ev.Kind, ev.Probe, ev.Process.PID, ev.Process.PPID, ev.Process.Name, ev.Process.Image, ev.Path)
		}
		t.Logf("events:\n%s", b.String())
	}
}

// eventKey identifies what checkManifest counts: a process event by pid,
// a file event by kind, writer pid and path.
type eventKey struct {
	kind collector.Kind
	pid  uint64
	path string
}

// keyOf returns ev's key, and false for what is not counted here: a file
// event outside the workload's files (/tmp/vmi/ and /etc/vmi-test-*), and
// the kinds checkNewKinds checks (renames, deletes, execs).
func keyOf(ev collector.Event) (eventKey, bool) {
	switch ev.Kind {
	case collector.KindProcessStart, collector.KindProcessExit:
		return eventKey{ev.Kind, ev.Process.PID, ""}, true
	case collector.KindFileCreate, collector.KindFileWrite:
	default:
		return eventKey{}, false
	}
	if strings.HasPrefix(ev.Path, "/tmp/vmi/") || strings.HasPrefix(ev.Path, "/etc/vmi-test-") {
		return eventKey{ev.Kind, ev.Process.PID, ev.Path}, true
	}
	return eventKey{}, false
}

// countEvents counts events by key.
func countEvents(events []collector.Event) map[eventKey]int {
	got := map[eventKey]int{}
	for _, ev := range events {
		if k, ok := keyOf(ev); ok {
			got[k]++
		}
	}
	return got
}

// wantEvents is the events the manifest's actions must give: a start and
// an exit per spawn, a create per open and a write per write(2) or
// writev(2) of every file.
func wantEvents(man *testguest.Manifest) map[eventKey]int {
	want := map[eventKey]int{}
	for _, s := range man.Spawns {
		want[eventKey{collector.KindProcessStart, uint64(s.PID), ""}] = 1
		want[eventKey{collector.KindProcessExit, uint64(s.PID), ""}] = 1
	}
	for _, f := range man.Files {
		want[eventKey{collector.KindFileCreate, uint64(f.PID), f.Path}] = f.Opens
		want[eventKey{collector.KindFileWrite, uint64(f.PID), f.Path}] = f.Writes
	}
	for _, c := range man.Copies {
		want[eventKey{collector.KindFileCreate, uint64(c.PID), c.Path}] = 1
		want[eventKey{collector.KindFileWrite, uint64(c.PID), c.Path}] = c.Calls
	}
	return want
}

// TestLiveLA57 finds the kernel of a guest on 5-level paging (CPU "max"),
// whose direct map and per-cpu areas live below the 4-level kernel half,
// and reads init's identity, image and open files.
func TestLiveLA57(t *testing.T) {
	_, _, o := liveOSWith(t, testguest.Options{CPU: "max"})
	if o.Mode() != paging.Level5 {
		t.Fatalf("paging mode %d, want 5-level", o.Mode())
	}
	init, err := findInit(o)
	if err != nil {
		t.Fatal(err)
	}
	checkProcessList(t, o)
	img, err := o.ImagePath(&init)
	if err != nil || img != "/bin/busybox" {
		t.Errorf("init image %q, %v", img, err)
	}
	files, err := o.Files(init.Addr)
	if err != nil || len(files) == 0 {
		t.Fatalf("init files %v, %v", files, err)
	}
	for _, f := range files {
		p, err := o.FilePath(f.File)
		t.Logf("init fd %d: %q", f.FD, p)
		if err != nil || !strings.HasPrefix(p, "/") {
			t.Errorf("init fd %d: %q, %v", f.FD, p, err)
		}
	}
	if root, err := o.TaskRoot(&init); err != nil || root == 0 {
		t.Errorf("init's mm->pgd: %v, %v", root, err)
	}
	if uint64(init.Addr) >= 0xffff_8000_0000_0000 {
		t.Errorf("task at %v: not in the 5-level direct map", init.Addr)
	}
}

// BenchmarkLiveTask reads the current task (comm, pids, parent) of a vCPU
// of the paused test guest from the mapped RAM.
func BenchmarkLiveTask(b *testing.B) {
	_, d, o := liveOS(b)
	regs, err := d.Registers(0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		o.Flush()
		if _, err := o.CurrentTask(&regs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLiveFDPath reads the path of an open descriptor of init (its
// console, /dev/console or a tty) and init's image path from the mapped
// RAM, uncached as at every hit.
func BenchmarkLiveFDPath(b *testing.B) {
	_, _, o := liveOS(b)
	init, err := findInit(o)
	if err != nil {
		b.Fatal(err)
	}
	files, err := o.Files(init.Addr)
	if err != nil || len(files) == 0 {
		b.Fatalf("init files %v %v", files, err)
	}
	p, err := o.FilePath(files[0].File)
	b.Logf("init fd %d: %q %v", files[0].FD, p, err)
	for b.Loop() {
		o.Flush()
		if _, err := o.FDPath(init.Addr, files[0].FD); err != nil {
			b.Fatal(err)
		}
	}
}

// checkProcessList checks the live process list: unique pids, init and
// kthreadd (pid 2, a kernel thread) present, every parent in the list or the
// idle task (pid 0).
func checkProcessList(t *testing.T, o *oslinux.OS) {
	t.Helper()
	ps, err := o.Processes(0)
	if err != nil {
		t.Fatalf("process list: %v", err)
	}
	byPID := map[uint64]oslinux.Task{}
	for _, p := range ps {
		if _, dup := byPID[p.PID]; dup {
			t.Errorf("pid %d twice", p.PID)
		}
		if !p.IsGroupLeader() {
			t.Errorf("thread %+v in the process list", p)
		}
		byPID[p.PID] = p
	}
	for _, p := range ps {
		if _, ok := byPID[p.PPID]; !ok && p.PPID != 0 {
			t.Errorf("pid %d %q: parent %d not listed", p.PID, p.Comm, p.PPID)
		}
	}
	if k, ok := byPID[2]; !ok || k.Comm != "kthreadd" || k.MM != 0 {
		t.Errorf("kthreadd: %+v (listed %v)", k, ok)
	}
	t.Logf("%d processes", len(ps))
}

// BenchmarkLiveProcesses walks the process list of the paused guest from
// the mapped RAM, uncached.
func BenchmarkLiveProcesses(b *testing.B) {
	_, _, o := liveOS(b)
	ps, err := o.Processes(0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		o.Flush()
		if _, err := o.Processes(0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ps)), "processes")
}

// findInit returns pid 1 from the kernel's process list. (The vCPUs'
// current tasks are no way to it: on an idle guest every vCPU runs its
// swapper, whose parent is itself.)
func findInit(o *oslinux.OS) (oslinux.Task, error) {
	ps, err := o.Processes(0)
	if err != nil {
		return oslinux.Task{}, fmt.Errorf("process list: %w", err)
	}
	for _, p := range ps {
		if p.PID == 1 {
			return p, nil
		}
	}
	return oslinux.Task{}, fmt.Errorf("init not among %d processes", len(ps))
}

// checkNewKinds checks the kinds and fields of issue #12 against the
// manifest, exactly: every file.create of a workload file says whether it
// made the file (the first open of each file) or not (the O_APPEND one);
// the writes of each file add up to its bytes and name their family; each
// copy is one write of its family with its bytes; each rename, each
// unlink of the round's files by vmi-round's rm, each exec (one per spawn:
// see testguest.ExecsPerRound) and each exit status shows once.
func checkNewKinds(t *testing.T, man *testguest.Manifest, events []collector.Event) {
	t.Helper()
	type key struct {
		kind       collector.Kind
		pid        uint64
		path, more string
	}
	got := map[key]int{}
	bytes := map[key]uint64{}
	pids := map[uint64]bool{}
	for _, s := range man.Spawns {
		pids[uint64(s.PID)] = true
	}
	exitCode := map[uint64]int32{}
	execs := map[uint64][]collector.Event{}
	for _, ev := range events {
		workload := strings.HasPrefix(ev.Path, "/tmp/vmi/") || strings.HasPrefix(ev.Path, "/etc/vmi-test-")
		switch ev.Kind {
		case collector.KindFileCreate:
			if workload {
				got[key{ev.Kind, ev.Process.PID, ev.Path, fmt.Sprint(ev.Created != nil && *ev.Created)}]++
			}
		case collector.KindFileWrite:
			if workload {
				k := key{ev.Kind, ev.Process.PID, ev.Path, ev.Syscall}
				got[k]++
				bytes[k] += ev.Bytes
			}
		case collector.KindFileRename:
			got[key{ev.Kind, ev.Process.PID, ev.Path, ev.OldPath}]++
		case collector.KindFileDelete:
			if workload {
				got[key{ev.Kind, ev.Process.PID, ev.Path, ev.Syscall}]++
			}
		case collector.KindProcessExec:
			if pids[ev.Process.PID] {
				execs[ev.Process.PID] = append(execs[ev.Process.PID], ev)
			} else {
				t.Errorf("exec by pid %d (%s %v), not a workload process", ev.Process.PID, ev.Path, ev.Args)
			}
		case collector.KindProcessExit:
			if ev.ExitCode != nil {
				exitCode[ev.Process.PID] = *ev.ExitCode
			} else {
				exitCode[ev.Process.PID] = -ev.ExitSignal - 1000
			}
		}
	}
	want := map[key]int{}
	wantBytes := map[key]uint64{}
	for _, f := range man.Files {
		pid := uint64(f.PID)
		want[key{collector.KindFileCreate, pid, f.Path, "true"}] = 1
		want[key{collector.KindFileCreate, pid, f.Path, "false"}] = f.Opens - 1
		family := probes.SyscallWrite
		if s, _ := man.SpawnByPID(f.PID); s.Name == testguest.NameWritev {
			family = probes.SyscallWritev
		}
		k := key{collector.KindFileWrite, pid, f.Path, family}
		want[k], wantBytes[k] = f.Writes, uint64(f.Bytes)
	}
	for _, c := range man.Copies {
		pid := uint64(c.PID)
		want[key{collector.KindFileCreate, pid, c.Path, "true"}] = 1
		k := key{collector.KindFileWrite, pid, c.Path, c.Syscall}
		want[k], wantBytes[k] = c.Calls, uint64(c.Bytes)
	}
	for _, r := range man.Renames {
		want[key{collector.KindFileRename, uint64(r.PID), r.New, r.Old}] = 1
	}
	for _, s := range man.Spawns {
		if s.Name == testguest.NameRound {
			for _, p := range man.RoundFiles(s.Round) {
				want[key{collector.KindFileDelete, uint64(s.PID), p, probes.SyscallUnlink}] = 1
			}
		}
	}
	if len(man.Copies) != len(man.Rounds)*testguest.CopiesPerRound || len(man.Renames) != len(man.Rounds)*testguest.RenamesPerRound {
		t.Errorf("manifest: %d copies, %d renames in %d rounds", len(man.Copies), len(man.Renames), len(man.Rounds))
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s pid %d %s (%s): %d events, want %d", k.kind, k.pid, k.path, k.more, got[k], n)
		}
		if b, ok := wantBytes[k]; ok && bytes[k] != b {
			t.Errorf("%s pid %d %s (%s): %d bytes, want %d", k.kind, k.pid, k.path, k.more, bytes[k], b)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok && n > 0 {
			t.Errorf("unexpected %s pid %d %s (%s): %d events", k.kind, k.pid, k.path, k.more, n)
		}
	}
	nexec := 0
	for _, s := range man.Spawns {
		pid := uint64(s.PID)
		evs := execs[pid]
		nexec += len(evs)
		const n = 1
		if len(evs) != n {
			t.Errorf("%s pid %d: %d exec events, want %d", s.Name, pid, len(evs), n)
			continue
		}
		// Scripts run as "/bin/sh /bin/<name> args" (binfmt_script);
		// vmi-writev is a program of its own.
		prog := "/bin/" + s.Name
		if e := evs[0]; e.Process.Name != s.Name || len(e.Args) < 2 || (e.Args[0] != prog && e.Args[1] != prog) || e.ArgsTruncated {
			t.Errorf("%s pid %d: exec %q image %q args %q (truncated %v)", s.Name, pid, e.Process.Name, e.Path, e.Args, e.ArgsTruncated)
		}
	}
	if nexec != len(man.Rounds)*testguest.ExecsPerRound {
		t.Errorf("%d exec events of the workload, want %d", nexec, len(man.Rounds)*testguest.ExecsPerRound)
	}
	for _, e := range man.Exits {
		if c, ok := exitCode[uint64(e.PID)]; !ok || c != int32(e.Status) {
			t.Errorf("exit of pid %d: code %d (seen %v), want %d", e.PID, c, ok, e.Status)
		}
	}
	if t.Failed() {
		var b strings.Builder
		for _, ev := range events {
			fmt.Fprintf(&b, "%s probe=%s pid=%d name=%s path=%s old=%s created=%v syscall=%s bytes=%d args=%q exit=%v/%d\n", ev.Kind, ev.Probe, ev.Process.PID,
				ev.Process.Name, ev.Path, ev.OldPath, ev.Created != nil && *ev.Created, ev.Syscall, ev.Bytes, ev.Args, ev.ExitCode != nil, ev.ExitSignal)
		}
		t.Logf("events (issue 12 fields):\n%s", b.String())
	}
}
