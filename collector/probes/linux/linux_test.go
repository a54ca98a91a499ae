package linux_test

import (
	"encoding/binary"
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
	probes           map[collector.Kind]collector.Probe // the first of each kind
	byName           map[string]collector.Probe
	gos              *probes.Guest
	as               *linuxtest.AddressSpace
	init, sh, thread introspect.Va
	vmiDir           introspect.Va
	tmpMnt           *linuxtest.Mount
	fileOut, tty     introspect.Va
	absName, relName introspect.Va
	dotName          introspect.Va
	how, howNoCreat  introspect.Va
	newFile, iov     introspect.Va
	newName          introspect.Va // dentry w1-a.bak in vmiDir (negative)
	vmiDirFile       introspect.Va
	exe              introspect.Va // a task that has just exec'd
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
	g.PutU32(w.fileOut+linuxtest.FileFlags, 0o2101) // O_WRONLY|O_CREAT|O_APPEND, existing
	w.newFile = g.File(w.tmpMnt, g.Dentry(w.vmiDir, "w1-b.txt", oslinux.SIFREG|0o644))
	g.PutU32(w.newFile+linuxtest.FileFlags, 0o1101)  // O_WRONLY|O_CREAT|O_TRUNC
	g.PutU32(w.newFile+linuxtest.FileMode, 0x100000) // FMODE_CREATED
	w.newName = g.Dentry(w.vmiDir, "w1-a.bak", 0)
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
	w.vmiDirFile = g.File(w.tmpMnt, w.vmiDir)
	g.SetFD(w.sh, 5, w.vmiDirFile)
	g.SetCurrent(1, w.sh)
	w.as = g.NewAddressSpace()
	w.iov = g.UserData(w.as, iovecs(0x7000, 5, 0x7100, 1))
	w.exe = g.NewTask(linuxtest.Task{PID: 50, TGID: 50, Comm: "rm", Parent: w.sh, Exe: bb, AS: w.as})
	argv := []byte("rm\x00-f\x00/tmp/vmi/w1-a.txt\x00")
	av := g.UserData(w.as, argv)
	mm := introspect.Va(g.U64(w.exe + linuxtest.TaskMM))
	g.PutU64(mm+linuxtest.MMArgStart, uint64(av))
	g.PutU64(mm+linuxtest.MMArgEnd, uint64(av)+uint64(len(argv)))
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
	w.byName = map[string]collector.Probe{}
	for _, p := range ps {
		if _, ok := w.probes[p.Kind]; !ok {
			w.probes[p.Kind] = p
		}
		w.byName[p.Name] = p
	}
	w.regs = g.Regs[1]
	w.regs.CR3 = uint64(w.as.Root) | 0x7 // PCID
	return w
}

// hit decodes a hit of the (first) probe of kind k with the given
// arguments.
func (w *guest) hit(k collector.Kind, args ...uint64) (collector.Event, error) {
	return w.hitProbe(w.probes[k], args...)
}

// hitProbe decodes a hit of probe p with the given arguments (at most 6).
func (w *guest) hitProbe(p collector.Probe, args ...uint64) (collector.Event, error) {
	regs := w.regs
	for i, a := range args {
		*[]*uint64{&regs.RDI, &regs.RSI, &regs.RDX, &regs.RCX, &regs.R8, &regs.R9}[i] = a
	}
	k := p.Kind
	regs.RIP = uint64(p.Addr)
	ev := collector.Event{Kind: k, Probe: p.Name}
	err := p.Decode(&hook.Hit{Hook: &hook.Hook{Addr: p.Addr, Tag: p.Name}, Ev: &driver.Event{VCPU: 1, Reason: driver.ReasonBreakpoint, Regs: regs}}, &ev)
	return ev, err
}

// iovecs lays out struct iovec {base, len} pairs.
func iovecs(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

func TestProbes(t *testing.T) {
	w := newGuest(t)
	// Seven kinds; the synthetic profile has no vfs_writev,
	// vfs_copy_file_range nor security_path_rmdir (optional).
	if len(w.probes) != 7 || len(w.byName) != 9 {
		t.Fatalf("probes %v", w.byName)
	}
	want := map[collector.Kind]uint64{
		collector.KindFileCreate:   linuxtest.Symbols["vfs_open"],
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
		{"create new", collector.KindFileCreate, []uint64{uint64(w.newFile + linuxtest.FilePath), uint64(w.newFile)}, "/tmp/vmi/w1-b.txt", proc, nil},
		{"create existing", collector.KindFileCreate, []uint64{uint64(w.fileOut + linuxtest.FilePath), uint64(w.fileOut)}, "/tmp/vmi/w1-a.txt", proc, nil},
		{"open without O_CREAT", collector.KindFileCreate, []uint64{uint64(w.tty + linuxtest.FilePath), uint64(w.tty)}, "", collector.Process{}, collector.ErrSkip},
		{"create with forged file", collector.KindFileCreate, []uint64{uint64(w.newFile + linuxtest.FilePath), 0x1000}, "", collector.Process{}, oslinux.ErrBadPointer},
		{"create with forged path", collector.KindFileCreate, []uint64{0x1000, uint64(w.newFile)}, "", collector.Process{}, oslinux.ErrBadPointer},
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

// An iovec array on a page the guest has paged out gives an error from
// which the engine can learn the address to fault in.
func TestDecodePageFault(t *testing.T) {
	w := newGuest(t)
	missing := introspect.Va(0x7fff0000)
	ps := writevProbes(t, w)
	ev, err := w.hitProbe(ps[1], uint64(w.fileOut), uint64(missing), 2)
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
	if err != nil || len(ps) != 3 || ps[0].Name != probes.FuncFileWrite || ps[1].Name != probes.FuncSendfile || ps[2].Name != probes.FuncSplice {
		t.Fatalf("probes %+v, %v", ps, err)
	}
	if !slices.Contains(collector.Kinds(), collector.KindPageIn) {
		t.Fatal("kind list changed")
	}
}

// writevOff is where writevProbes puts vfs_writev in the synthetic kernel.
const writevOff = 0x1234

// writevProbes returns the file.write probes of the synthetic kernel with a
// vfs_writev symbol added (at writevOff).
func writevProbes(t *testing.T, w *guest) []collector.Probe {
	t.Helper()
	prof := linuxtest.Profile()
	prof.Symbols[probes.FuncFileWritev] = linuxtest.LinkBase + writevOff
	o, err := oslinux.New(w.g, prof, oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := probes.New(o).Probes([]collector.Kind{collector.KindFileWrite})
	if err != nil {
		t.Fatal(err)
	}
	return ps
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
	ps := writevProbes(t, w)
	if len(ps) != 4 || ps[0].Name != probes.FuncFileWrite || ps[1].Name != probes.FuncFileWritev {
		t.Fatalf("file.write probes %+v", ps)
	}
	p := ps[1]
	if p.Kind != collector.KindFileWrite || uint64(p.Addr) != linuxtest.LinkBase+writevOff+slide || p.Root != w.g.KernelRoot {
		t.Errorf("vfs_writev probe %+v", p)
	}
	hit := func(file introspect.Va) (collector.Event, error) {
		regs := w.regs
		regs.RIP = uint64(p.Addr)
		regs.RDI = uint64(file)
		regs.RSI = uint64(w.iov) // two iovecs: 5 and 1 bytes
		regs.RDX = 2
		ev := collector.Event{Kind: p.Kind, Probe: p.Name}
		err := p.Decode(&hook.Hit{Hook: &hook.Hook{Addr: p.Addr, Tag: p.Name}, Ev: &driver.Event{VCPU: 1, Reason: driver.ReasonBreakpoint, Regs: regs}}, &ev)
		return ev, err
	}
	ev, err := hit(w.fileOut)
	want := collector.Process{PID: 42, PPID: 1, Name: "vmi-writer", Image: "/bin/busybox"}
	if err != nil || ev.Path != "/tmp/vmi/w1-a.txt" || ev.Process != want || ev.Probe != probes.FuncFileWritev ||
		ev.Syscall != probes.SyscallWritev || ev.Bytes != 6 {
		t.Errorf("writev to a file: %+v, %v", ev, err)
	}
	if _, err := hit(w.tty); !errors.Is(err, collector.ErrSkip) {
		t.Errorf("writev to a tty: err %v, want skip", err)
	}
	if _, err := hit(0x1000); !errors.Is(err, oslinux.ErrBadPointer) {
		t.Errorf("writev with a forged file: err %v, want ErrBadPointer", err)
	}
}

// TestDecodeNewKinds decodes the probes added for issue #12: the write
// families, rename, delete, exec and the exit status.
func TestDecodeNewKinds(t *testing.T) {
	w := newGuest(t)
	proc := collector.Process{PID: 42, PPID: 1, Name: "vmi-writer", Image: "/bin/busybox"}
	dir := uint64(w.vmiDirFile + linuxtest.FilePath)
	oldD := w.g.U64(w.fileOut + linuxtest.FilePath + 8)

	ev, err := w.hitProbe(w.byName[probes.FuncFileRename], dir, oldD, dir, uint64(w.newName), 0)
	if err != nil || ev.OldPath != "/tmp/vmi/w1-a.txt" || ev.Path != "/tmp/vmi/w1-a.bak" || ev.Process != proc {
		t.Errorf("rename: %+v, %v", ev, err)
	}
	if _, err := w.hitProbe(w.byName[probes.FuncFileRename], dir, 0x1000, dir, uint64(w.newName), 0); !errors.Is(err, oslinux.ErrBadPointer) {
		t.Errorf("rename of a forged dentry: %v", err)
	}
	ev, err = w.hitProbe(w.byName[probes.FuncFileUnlink], dir, oldD)
	if err != nil || ev.Path != "/tmp/vmi/w1-a.txt" || ev.Syscall != probes.SyscallUnlink || ev.Process != proc {
		t.Errorf("unlink: %+v, %v", ev, err)
	}
	ev, err = w.hitProbe(w.byName[probes.FuncSendfile], 1, 7, 0, 300, 1<<40)
	if err != nil || ev.Path != "/tmp/vmi/w1-a.txt" || ev.Syscall != probes.SyscallSendfile || ev.Bytes != 300 {
		t.Errorf("sendfile: %+v, %v", ev, err)
	}
	for fd, want := range map[uint64]error{2: collector.ErrSkip, 9: collector.ErrSkip, 1 << 20: collector.ErrSkip} {
		if _, err := w.hitProbe(w.byName[probes.FuncSendfile], fd, 7, 0, 300, 0); !errors.Is(err, want) {
			t.Errorf("sendfile to fd %d: %v, want %v", fd, err, want)
		}
	}
	ev, err = w.hitProbe(w.byName[probes.FuncSplice], 0, 0, uint64(w.fileOut), 0, 17, 0)
	if err != nil || ev.Path != "/tmp/vmi/w1-a.txt" || ev.Syscall != probes.SyscallSplice || ev.Bytes != 17 {
		t.Errorf("splice: %+v, %v", ev, err)
	}
	if _, err := w.hitProbe(w.byName[probes.FuncSplice], 0, 0, uint64(w.tty), 0, 17, 0); !errors.Is(err, collector.ErrSkip) {
		t.Errorf("splice to a tty: %v", err)
	}
	ev, err = w.hitProbe(w.byName[probes.FuncProcessExec], uint64(w.exe))
	if err != nil || ev.Process.Name != "rm" || ev.Process.PID != 50 || ev.Path != "/bin/busybox" ||
		!slices.Equal(ev.Args, []string{"rm", "-f", "/tmp/vmi/w1-a.txt"}) || ev.ArgsTruncated {
		t.Errorf("exec: %+v, %v", ev, err)
	}
	o, err := oslinux.New(w.g, linuxtest.Profile(), oslinux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := probes.NewWith(o, probes.Options{ArgsMax: 2}).Probes([]collector.Kind{collector.KindProcessExec})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err = w.hitProbe(ps[0], uint64(w.exe)); err != nil || !slices.Equal(ev.Args, []string{"rm", "-f"}) || !ev.ArgsTruncated {
		t.Errorf("exec, two arguments at most: %+v, %v", ev, err)
	}
	for status, want := range map[uint32][2]int32{3 << 8: {3, 0}, 0: {0, 0}, 9: {-1, 9}} {
		w.g.PutU32(w.sh+linuxtest.TaskExitCode, status)
		ev, err := w.hit(collector.KindProcessExit, uint64(w.sh), 1)
		code := int32(-1)
		if ev.ExitCode != nil {
			code = *ev.ExitCode
		}
		if err != nil || code != want[0] || ev.ExitSignal != want[1] {
			t.Errorf("exit status %#x: code %d signal %d, %v; want %v", status, code, ev.ExitSignal, err, want)
		}
	}
}

// TestDecodeCreated: vfs_open tells a new file (FMODE_CREATED) from an
// existing one opened with O_CREAT.
func TestDecodeCreated(t *testing.T) {
	w := newGuest(t)
	for file, want := range map[introspect.Va]bool{w.newFile: true, w.fileOut: false} {
		ev, err := w.hit(collector.KindFileCreate, uint64(file+linuxtest.FilePath), uint64(file))
		if err != nil || ev.Created == nil || *ev.Created != want {
			t.Errorf("file %v: %+v, %v; want created=%v", file, ev, err, want)
		}
	}
}

// TestSumIovecs: lengths add up, saturating, and a partial iovec is ignored.
func TestSumIovecs(t *testing.T) {
	if n := probes.SumIovecs(iovecs(1, 5, 2, 7, 3)); n != 12 {
		t.Errorf("sum %d, want 12", n)
	}
	if n := probes.SumIovecs(iovecs(0, 1<<63, 0, 1<<63)); n != 1<<64-1 {
		t.Errorf("overflowing sum %d, want saturation", n)
	}
}
