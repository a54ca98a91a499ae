package linux_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux/linuxtest"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

const slide = 0x2c600000

// guest is a synthetic guest: init (pid 1) runs a shell (pid 42, pwd
// /tmp/vmi on a tmpfs mounted at /tmp) whose process is in a user address
// space with some strings.
type guest struct {
	g                *linuxtest.Guest
	probes           map[collector.Kind]collector.Probe
	gos              *probes.Guest
	as               *linuxtest.AddressSpace
	init, sh, thread introspect.Va
	vmiDir           introspect.Va
	tmpMnt           *linuxtest.Mount
	fileOut, tty     introspect.Va
	absName, relName introspect.Va
	dotName          introspect.Va
	how, howNoCreat  introspect.Va
	regs             amd64.Registers
}

func newGuest(t testing.TB) *guest {
	t.Helper()
	g := linuxtest.New(slide, 2)
	w := &guest{g: g}
	root := g.Dentry(0, "/", oslinux.SIFDIR)
	rootMnt := g.NewMount(nil, 0, root)
	tmp := g.Dentry(root, "tmp", oslinux.SIFDIR)
	tmpRoot := g.Dentry(0, "/", oslinux.SIFDIR)
	w.tmpMnt = g.NewMount(rootMnt, tmp, tmpRoot)
	w.vmiDir = g.Dentry(tmpRoot, "vmi", oslinux.SIFDIR)
	out := g.Dentry(w.vmiDir, "w1-a.txt", oslinux.SIFREG|0o644)
	w.fileOut = g.File(w.tmpMnt, out)
	dev := g.Dentry(root, "dev", oslinux.SIFDIR)
	ttyD := g.Dentry(dev, "ttyS0", 0o020000|0o620)
	w.tty = g.File(rootMnt, ttyD)
	bin := g.Dentry(root, "bin", oslinux.SIFDIR)
	bb := g.File(rootMnt, g.Dentry(bin, "busybox", oslinux.SIFREG|0o755))
	w.init = g.NewTask(linuxtest.Task{PID: 1, TGID: 1, Comm: "init", Exe: bb})
	w.sh = g.NewTask(linuxtest.Task{PID: 42, TGID: 42, Comm: "vmi-writer", Parent: w.init, Exe: bb,
		Pwd: [2]introspect.Va{w.tmpMnt.Mnt, w.vmiDir}})
	w.thread = g.NewTask(linuxtest.Task{PID: 43, TGID: 42, Comm: "vmi-writer", Parent: w.init, Leader: w.sh, Exe: bb})
	g.SetFD(w.sh, 1, w.fileOut)
	g.SetFD(w.sh, 2, w.tty)
	g.SetFD(w.sh, 5, g.File(w.tmpMnt, w.vmiDir))
	g.SetCurrent(1, w.sh)
	w.as = g.NewAddressSpace()
	w.absName = g.UserData(w.as, []byte("/tmp/vmi//w1-b.txt\x00"))
	w.relName = g.UserData(w.as, []byte("w1-c.txt\x00"))
	w.dotName = g.UserData(w.as, []byte("../vmi/./w1-d.txt\x00"))
	w.how = g.Alloc(24)
	g.PutU64(w.how, 0o1101) // O_WRONLY|O_CREAT|O_TRUNC
	w.howNoCreat = g.Alloc(24)
	g.PutU64(w.howNoCreat, 0o2001) // O_WRONLY|O_APPEND
	o, err := oslinux.New(g, linuxtest.Profile(), oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gos := probes.New(o)
	w.gos = gos
	if gos.OS() != "linux" || gos.Kernel() != linuxtest.Banner {
		t.Fatalf("identity %q %q", gos.OS(), gos.Kernel())
	}
	ps, err := gos.Probes(collector.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	w.probes = map[collector.Kind]collector.Probe{}
	for _, p := range ps {
		w.probes[p.Kind] = p
	}
	w.regs = g.Regs[1]
	w.regs.CR3 = uint64(w.as.Root) | 0x7 // PCID
	return w
}

// hit decodes a hit of the probe of kind k with the given arguments.
func (w *guest) hit(k collector.Kind, args ...uint64) (collector.Event, error) {
	regs := w.regs
	for i, a := range args {
		switch i {
		case 0:
			regs.RDI = a
		case 1:
			regs.RSI = a
		case 2:
			regs.RDX = a
		}
	}
	p := w.probes[k]
	regs.RIP = uint64(p.Addr)
	ev := collector.Event{Kind: k, Probe: p.Name}
	err := p.Decode(&hook.Hit{Hook: &hook.Hook{Addr: p.Addr, Tag: p.Name}, Ev: &driver.Event{VCPU: 1, Reason: driver.ReasonBreakpoint, Regs: regs}}, &ev)
	return ev, err
}

func TestProbes(t *testing.T) {
	w := newGuest(t)
	// Four kinds; the synthetic profile has no vfs_writev (optional).
	if len(w.probes) != 4 {
		t.Fatalf("probes %v", w.probes)
	}
	want := map[collector.Kind]uint64{
		collector.KindFileCreate:   linuxtest.Symbols["do_sys_openat2"],
		collector.KindFileWrite:    linuxtest.Symbols["vfs_write"],
		collector.KindProcessStart: linuxtest.Symbols["wake_up_new_task"],
		collector.KindProcessExit:  linuxtest.Symbols["taskstats_exit"],
	}
	for k, a := range want {
		p := w.probes[k]
		if uint64(p.Addr) != a+slide || p.Root != w.g.KernelRoot || p.Name == "" {
			t.Errorf("probe %s: %+v", k, p)
		}
	}
	ps, err := w.gos.Probes(nil)
	if err != nil || len(ps) != 0 {
		t.Errorf("no kinds: %v %v", ps, err)
	}
}

func TestDecode(t *testing.T) {
	w := newGuest(t)
	proc := collector.Process{PID: 42, PPID: 1, Name: "vmi-writer", Image: "/bin/busybox"}
	cases := []struct {
		name string
		kind collector.Kind
		args []uint64
		path string
		proc collector.Process
		err  error
	}{
		{"create absolute", collector.KindFileCreate, []uint64{uint64(0xffffff9c), uint64(w.absName), uint64(w.how)}, "/tmp/vmi/w1-b.txt", proc, nil},
		{"create relative to cwd", collector.KindFileCreate, []uint64{uint64(0xffffff9c), uint64(w.relName), uint64(w.how)}, "/tmp/vmi/w1-c.txt", proc, nil},
		{"create relative to dfd", collector.KindFileCreate, []uint64{5, uint64(w.dotName), uint64(w.how)}, "/tmp/vmi/w1-d.txt", proc, nil},
		{"open without O_CREAT", collector.KindFileCreate, []uint64{uint64(0xffffff9c), uint64(w.absName), uint64(w.howNoCreat)}, "", collector.Process{}, collector.ErrSkip},
		{"create with bad dfd", collector.KindFileCreate, []uint64{9, uint64(w.relName), uint64(w.how)}, "", proc, oslinux.ErrBadValue},
		{"create with kernel filename", collector.KindFileCreate, []uint64{uint64(0xffffff9c), uint64(w.how), uint64(w.how)}, "", collector.Process{}, oslinux.ErrBadPointer},
		{"write file", collector.KindFileWrite, []uint64{uint64(w.fileOut)}, "/tmp/vmi/w1-a.txt", proc, nil},
		{"write tty", collector.KindFileWrite, []uint64{uint64(w.tty)}, "", collector.Process{}, collector.ErrSkip},
		{"write forged file", collector.KindFileWrite, []uint64{0x1000}, "", collector.Process{}, oslinux.ErrBadPointer},
		{"start process", collector.KindProcessStart, []uint64{uint64(w.sh)}, "", proc, nil},
		{"start thread", collector.KindProcessStart, []uint64{uint64(w.thread)}, "", collector.Process{}, collector.ErrSkip},
		{"exit", collector.KindProcessExit, []uint64{uint64(w.sh), 1}, "", proc, nil},
		{"exit of a thread, others live", collector.KindProcessExit, []uint64{uint64(w.thread), 0}, "", collector.Process{}, collector.ErrSkip},
		{"exit of a forged task", collector.KindProcessExit, []uint64{0x1000, 1}, "", collector.Process{}, oslinux.ErrBadPointer},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := w.hit(c.kind, c.args...)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Path != c.path || ev.Process != c.proc {
				t.Errorf("event path %q process %+v; want %q %+v", ev.Path, ev.Process, c.path, c.proc)
			}
		})
	}
}

// TestDecodeExitLastThread: the last thread of a process (not its leader)
// ends it, with group_dead set, whatever signal->live still says.
func TestDecodeExitLastThread(t *testing.T) {
	w := newGuest(t)
	ev, err := w.hit(collector.KindProcessExit, uint64(w.thread), 1)
	if err != nil || ev.Process.PID != 42 || ev.Process.PPID != 1 || ev.Process.Image != "/bin/busybox" {
		t.Fatalf("event %+v, %v", ev, err)
	}
}

// TestDecodeExitFallback: a kernel without taskstats_exit gets do_exit, and
// the event comes from the thread that finds signal->live at 1.
func TestDecodeExitFallback(t *testing.T) {
	w := newGuest(t)
	prof := linuxtest.Profile()
	delete(prof.Symbols, probes.FuncProcessExit)
	o, err := oslinux.New(w.g, prof, oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := probes.New(o).Probes([]collector.Kind{collector.KindProcessExit})
	if err != nil || len(ps) != 1 || ps[0].Name != probes.FuncProcessExitFallback ||
		uint64(ps[0].Addr) != linuxtest.Symbols["do_exit"]+slide {
		t.Fatalf("exit probes %+v, %v", ps, err)
	}
	w.probes[collector.KindProcessExit] = ps[0]
	// Two live threads: the first to exit is skipped.
	sig := w.g.Alloc(0x400)
	w.g.PutU32(sig+linuxtest.SignalLive, 2)
	w.g.PutU64(w.sh+linuxtest.TaskSignal, uint64(sig))
	if _, err := w.hit(collector.KindProcessExit); !errors.Is(err, collector.ErrSkip) {
		t.Fatalf("err = %v, want skip", err)
	}
	// The last thread (not the leader) ends the process.
	w.g.PutU32(sig+linuxtest.SignalLive, 1)
	w.g.PutU64(w.thread+linuxtest.TaskSignal, uint64(sig))
	w.g.SetCurrent(1, w.thread)
	ev, err := w.hit(collector.KindProcessExit)
	if err != nil || ev.Process.PID != 42 || ev.Process.PPID != 1 {
		t.Fatalf("event %+v, %v", ev, err)
	}
}

// A filename on a page the guest has paged out gives an error from which
// the engine can learn the address to fault in.
func TestDecodePageFault(t *testing.T) {
	w := newGuest(t)
	missing := introspect.Va(0x7fff0000)
	ev, err := w.hit(collector.KindFileCreate, uint64(0xffffff9c), uint64(missing), uint64(w.how))
	va, ok := paging.PageFault(err)
	if !ok || va != missing {
		t.Fatalf("err = %v (event %+v), want a page fault at %v", err, ev, missing)
	}
}

func TestKindsIgnored(t *testing.T) {
	w := newGuest(t)
	_ = w
	o, err := oslinux.New(w.g, linuxtest.Profile(), oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := probes.New(o).Probes([]collector.Kind{collector.KindPageIn, collector.KindFileWrite})
	if err != nil || len(ps) != 1 || ps[0].Name != probes.FuncFileWrite {
		t.Fatalf("probes %+v, %v", ps, err)
	}
	if !slices.Contains(collector.Kinds(), collector.KindPageIn) {
		t.Fatal("kind list changed")
	}
}

// TestWritevProbe checks the optional vfs_writev probe: absent from a
// kernel without the symbol (the synthetic profile of newGuest), and, where
// the symbol is present, a second file.write probe decoded like vfs_write.
func TestWritevProbe(t *testing.T) {
	w := newGuest(t)
	for _, p := range w.probes {
		if p.Name == probes.FuncFileWritev {
			t.Fatalf("vfs_writev probe without the symbol: %+v", p)
		}
	}
	prof := linuxtest.Profile()
	const off = 0x1234
	prof.Symbols[probes.FuncFileWritev] = linuxtest.LinkBase + off
	o, err := oslinux.New(w.g, prof, oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := probes.New(o).Probes([]collector.Kind{collector.KindFileWrite})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != probes.FuncFileWrite || ps[1].Name != probes.FuncFileWritev {
		t.Fatalf("file.write probes %+v", ps)
	}
	p := ps[1]
	if p.Kind != collector.KindFileWrite || uint64(p.Addr) != linuxtest.LinkBase+off+slide || p.Root != w.g.KernelRoot {
		t.Errorf("vfs_writev probe %+v", p)
	}
	hit := func(file introspect.Va) (collector.Event, error) {
		regs := w.regs
		regs.RIP = uint64(p.Addr)
		regs.RDI = uint64(file)
		regs.RSI = 0x7fff1000 // iovec array: not read
		regs.RDX = 2          // vlen
		ev := collector.Event{Kind: p.Kind, Probe: p.Name}
		err := p.Decode(&hook.Hit{Hook: &hook.Hook{Addr: p.Addr, Tag: p.Name}, Ev: &driver.Event{VCPU: 1, Reason: driver.ReasonBreakpoint, Regs: regs}}, &ev)
		return ev, err
	}
	ev, err := hit(w.fileOut)
	want := collector.Process{PID: 42, PPID: 1, Name: "vmi-writer", Image: "/bin/busybox"}
	if err != nil || ev.Path != "/tmp/vmi/w1-a.txt" || ev.Process != want || ev.Probe != probes.FuncFileWritev {
		t.Errorf("writev to a file: %+v, %v", ev, err)
	}
	if _, err := hit(w.tty); !errors.Is(err, collector.ErrSkip) {
		t.Errorf("writev to a tty: err %v, want skip", err)
	}
	if _, err := hit(0x1000); !errors.Is(err, oslinux.ErrBadPointer) {
		t.Errorf("writev with a forged file: err %v, want ErrBadPointer", err)
	}
}
