package linux_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux/linuxtest"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

const slide = 0x1a400000 // a 2 MiB multiple inside the KASLR window

// world is a small guest: / (rootfs) with /tmp/a.txt, a tmpfs mounted on
// /mnt/data holding /mnt/data/logs/x.log, a pipe, an init task and a shell.
type world struct {
	g                     *linuxtest.Guest
	rootMnt, dataMnt      *linuxtest.Mount
	root, tmp, a, logs, x introspect.Va
	fileA, fileX, pipe    introspect.Va
	initTask, shell, exe  introspect.Va
	busybox               introspect.Va
}

func newWorld(t testing.TB, slide uint64) *world {
	g := linuxtest.New(slide, 2)
	w := &world{g: g}
	w.root = g.Dentry(0, "/", linux.SIFDIR)
	w.rootMnt = g.NewMount(nil, 0, w.root)
	w.tmp = g.Dentry(w.root, "tmp", linux.SIFDIR)
	w.a = g.Dentry(w.tmp, "a.txt", linux.SIFREG|0o644)
	mntDir := g.Dentry(w.root, "mnt", linux.SIFDIR)
	dataDir := g.Dentry(mntDir, "data", linux.SIFDIR)
	dataRoot := g.Dentry(0, "/", linux.SIFDIR)
	w.dataMnt = g.NewMount(w.rootMnt, dataDir, dataRoot)
	w.logs = g.Dentry(dataRoot, "logs", linux.SIFDIR)
	w.x = g.Dentry(w.logs, "x.log", linux.SIFREG|0o600)
	bin := g.Dentry(w.root, "bin", linux.SIFDIR)
	bb := g.Dentry(bin, "busybox", linux.SIFREG|0o755)
	w.busybox = g.File(w.rootMnt, bb)
	w.fileA = g.File(w.rootMnt, w.a)
	w.fileX = g.File(w.dataMnt, w.x)
	pipeRoot := g.Dentry(0, "pipe:", 0o010000|0o600)
	pipeMnt := g.NewMount(nil, 0, pipeRoot)
	w.pipe = g.File(pipeMnt, pipeRoot)
	w.initTask = g.NewTask(linuxtest.Task{PID: 1, TGID: 1, Comm: "init", Exe: w.busybox,
		Pwd: [2]introspect.Va{w.rootMnt.Mnt, w.root}})
	w.shell = g.NewTask(linuxtest.Task{PID: 42, TGID: 42, Comm: "workload-shell", Parent: w.initTask, Exe: w.busybox,
		Pwd: [2]introspect.Va{w.dataMnt.Mnt, w.logs}})
	g.SetFD(w.shell, 0, w.pipe)
	g.SetFD(w.shell, 3, w.fileA)
	g.SetFD(w.shell, 7, w.fileX)
	g.SetCurrent(0, w.initTask)
	g.SetCurrent(1, w.shell)
	return w
}

func newOS(t testing.TB, w *world) *linux.OS {
	t.Helper()
	o, err := linux.New(w.g, linuxtest.Profile(), linux.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return o
}

func TestKASLR(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slide uint64
		setup func(g *linuxtest.Guest)
	}{
		{"nokaslr", 0, nil},
		{"slid", slide, nil},
		{"top of window", 0x3e000000 - 0x100000, nil},
		// No hint from registers: the full scan must find it.
		{"no hints", slide, func(g *linuxtest.Guest) {
			for i := range g.Regs {
				g.Regs[i].LSTAR, g.Regs[i].RIP = 0, 0
			}
		}},
		// A wrong LSTAR hint must be verified, not trusted.
		{"wrong hint", slide, func(g *linuxtest.Guest) {
			for i := range g.Regs {
				g.Regs[i].LSTAR += 0x200000
				g.Regs[i].RIP = 0
			}
		}},
		// vCPUs in user mode under PTI: CR3 is the user PGD, which does
		// not map the kernel; the kernel PGD is one page below.
		{"pti user mode", slide, func(g *linuxtest.Guest) {
			as := g.NewAddressSpace()
			for i := range g.Regs {
				g.Regs[i].CS.Selector = 0x33
				g.Regs[i].CR3 = uint64(as.UserRoot) | 0x800 | 5 // PCID bits
				g.Regs[i].KernelGSBase, g.Regs[i].GSBase = g.Regs[i].GSBase, 0x7f0000001000
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.slide
			if s%0x200000 != 0 {
				s &^= 0x1fffff
			}
			w := newWorld(t, s)
			if tc.setup != nil {
				tc.setup(w.g)
			}
			o := newOS(t, w)
			if o.Slide() != s {
				t.Errorf("slide %#x, want %#x", o.Slide(), s)
			}
			if o.KernelRoot() != w.g.KernelRoot {
				t.Errorf("kernel root %v, want init_top_pgt at %v", o.KernelRoot(), w.g.KernelRoot)
			}
			if o.Banner() != linuxtest.Banner {
				t.Errorf("banner %q", o.Banner())
			}
			pb, err := o.PhysicalBase()
			if err != nil || pb != linuxtest.ImagePhys {
				t.Errorf("physical base %v, %v", pb, err)
			}
			tasks, errs := o.CurrentTasks()
			if errs[1] != nil || tasks[1].PID != 42 {
				t.Errorf("current task of vcpu1: %+v, %v", tasks[1], errs[1])
			}
		})
	}
}

func TestKASLRNotFound(t *testing.T) {
	w := newWorld(t, slide)
	prof := linuxtest.Profile()
	prof.Name = "Linux version 9.9.9 (someone else)"
	_, err := linux.New(w.g, prof, linux.Options{})
	if !errors.Is(err, linux.ErrKernelNotFound) {
		t.Fatalf("err = %v, want ErrKernelNotFound", err)
	}
	// No vCPU in long mode.
	w = newWorld(t, slide)
	for i := range w.g.Regs {
		w.g.Regs[i].EFER = 0
	}
	if _, err := linux.New(w.g, linuxtest.Profile(), linux.Options{}); !errors.Is(err, linux.ErrKernelNotFound) {
		t.Fatalf("err = %v, want ErrKernelNotFound", err)
	}
}

func TestProfileMissingFields(t *testing.T) {
	w := newWorld(t, slide)
	prof := linuxtest.Profile()
	delete(prof.Types, "mount")
	delete(prof.Types["task_struct"].Fields, "comm")
	_, err := linux.New(w.g, prof, linux.Options{})
	if !errors.Is(err, profile.ErrNotFound) || !strings.Contains(err.Error(), "mount") || !strings.Contains(err.Error(), "comm") {
		t.Fatalf("err = %v, want both missing names", err)
	}
}

// A profile that kept qstr's anonymous union as hash_len and put
// mm_struct's members in a named anonymous struct still resolves.
func TestProfileAnonymousMembers(t *testing.T) {
	w := newWorld(t, slide)
	prof := linuxtest.Profile()
	q := prof.Types["qstr"]
	delete(q.Fields, "len")
	delete(q.Fields, "hash")
	mm := prof.Types["mm_struct"]
	prof.Types["mm_inner"] = &profile.Struct{Name: "mm_inner", Size: 0x400, Fields: map[string]profile.Field{
		"exe_file": {Name: "exe_file", Offset: linuxtest.MMExeFile - 0x100, Type: profile.Type{Kind: profile.KindPointer, Size: 8}},
	}}
	mm.Fields = map[string]profile.Field{"__anon0": {Name: "__anon0", Offset: 0x100, Type: profile.Type{Kind: profile.KindStruct, Name: "mm_inner"}}}
	o, err := linux.New(w.g, prof, linux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	task, err := o.Task(w.shell)
	if err != nil {
		t.Fatal(err)
	}
	img, err := o.ImagePath(&task)
	if err != nil || img != "/bin/busybox" {
		t.Fatalf("image %q, %v", img, err)
	}
}

func TestPCPUHot(t *testing.T) {
	// 6.2+: current_task lives in pcpu_hot.
	w := newWorld(t, slide)
	prof := linuxtest.Profile()
	delete(prof.Symbols, "current_task")
	prof.Symbols["pcpu_hot"] = linuxtest.PerCPUCur - 0x10
	prof.Types["pcpu_hot"] = &profile.Struct{Name: "pcpu_hot", Size: 64, Fields: map[string]profile.Field{
		"current_task": {Name: "current_task", Offset: 0x10, Type: profile.Type{Kind: profile.KindPointer, Size: 8}},
	}}
	o, err := linux.New(w.g, prof, linux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	regs, _ := w.g.Registers(1)
	task, err := o.CurrentTask(&regs)
	if err != nil || task.PID != 42 {
		t.Fatalf("task %+v, %v", task, err)
	}
}

func TestTask(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	regs, _ := w.g.Registers(1)
	task, err := o.CurrentTask(&regs)
	if err != nil {
		t.Fatal(err)
	}
	want := linux.Task{Addr: w.shell, PID: 42, TGID: 42, Parent: w.initTask, PPID: 1, Comm: "workload-shell", GroupLeader: w.shell, MM: task.MM}
	if task != want || task.MM == 0 || !task.IsGroupLeader() {
		t.Errorf("task %+v, want %+v", task, want)
	}
	img, err := o.ImagePath(&task)
	if err != nil || img != "/bin/busybox" {
		t.Errorf("image %q, %v", img, err)
	}
	// User mode: the per-cpu base is in KernelGSBase.
	regs.CS.Selector = 0x33
	regs.KernelGSBase, regs.GSBase = regs.GSBase, 0x7fff12340000
	if task2, err := o.CurrentTask(&regs); err != nil || task2.PID != 42 {
		t.Errorf("user-mode current task %+v, %v", task2, err)
	}
	// Kernel thread: no mm, no image.
	kt := w.g.NewTask(linuxtest.Task{PID: 2, TGID: 2, Comm: "kthreadd"})
	task, err = o.Task(kt)
	if err != nil || task.MM != 0 {
		t.Fatalf("kthread %+v, %v", task, err)
	}
	if img, err := o.ImagePath(&task); err != nil || img != "" {
		t.Errorf("kthread image %q, %v", img, err)
	}
	// A thread: pid != tgid, leader elsewhere.
	th := w.g.NewTask(linuxtest.Task{PID: 43, TGID: 42, Comm: "worker", Parent: w.initTask, Leader: w.shell, Exe: w.busybox})
	task, err = o.Task(th)
	if err != nil || task.IsGroupLeader() || task.GroupLeader != w.shell {
		t.Errorf("thread %+v, %v", task, err)
	}
	live, ok, err := o.ThreadGroupLive(w.shell)
	if err != nil || !ok || live != 1 {
		t.Errorf("live %d %v %v", live, ok, err)
	}
}

func TestTaskForged(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	g := w.g
	cases := []struct {
		name  string
		forge func() introspect.Va
		want  error
	}{
		{"null", func() introspect.Va { return 0 }, linux.ErrBadPointer},
		{"user pointer", func() introspect.Va { return 0x400000 }, linux.ErrBadPointer},
		{"parent null", func() introspect.Va {
			a := g.NewTask(linuxtest.Task{PID: 5, TGID: 5, Comm: "x"})
			g.PutU64(a+linuxtest.TaskRealParent, 0)
			return a
		}, linux.ErrBadPointer},
		{"negative pid", func() introspect.Va {
			return g.NewTask(linuxtest.Task{PID: 0xffffffff, TGID: 5, Comm: "x"})
		}, linux.ErrBadValue},
		{"mm user pointer", func() introspect.Va {
			a := g.NewTask(linuxtest.Task{PID: 5, TGID: 5, Comm: "x"})
			g.PutU64(a+linuxtest.TaskMM, 0x1000)
			return a
		}, linux.ErrBadPointer},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := o.Task(c.forge())
			if !errors.Is(err, c.want) {
				t.Errorf("err = %v, want %v", err, c.want)
			}
		})
	}
	// Unmapped kernel address: a translation error, not a panic.
	if _, err := o.Task(0xffffc90000000000); err == nil {
		t.Error("unmapped task read succeeded")
	}
	// comm without NUL is cut to 15 bytes.
	a := g.NewTask(linuxtest.Task{PID: 6, TGID: 6, Comm: "x"})
	g.PutBytes(a+linuxtest.TaskComm, []byte("0123456789abcdefXYZ"))
	if c, err := o.Comm(a); err != nil || c != "0123456789abcde" {
		t.Errorf("comm %q, %v", c, err)
	}
}

func TestPaths(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	for _, c := range []struct {
		file introspect.Va
		want string
	}{
		{w.fileA, "/tmp/a.txt"},
		{w.fileX, "/mnt/data/logs/x.log"},
		{w.busybox, "/bin/busybox"},
	} {
		got, err := o.FilePath(c.file)
		if err != nil || got != c.want {
			t.Errorf("FilePath = %q, %v; want %q", got, err, c.want)
		}
	}
	if p, err := o.DentryPath(w.rootMnt.Mnt, w.root); err != nil || p != "/" {
		t.Errorf("root path %q, %v", p, err)
	}
	if p, err := o.FDPath(w.shell, 7); err != nil || p != "/mnt/data/logs/x.log" {
		t.Errorf("fd 7 path %q, %v", p, err)
	}
	if p, err := o.Pwd(w.shell); err != nil || p != "/mnt/data/logs" {
		t.Errorf("pwd %q, %v", p, err)
	}
	for fd, want := range map[int]bool{0: false, 3: true, 7: true} {
		f, err := o.FileOfFD(w.shell, fd)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := o.IsRegular(f)
		if err != nil || reg != want {
			t.Errorf("fd %d regular %v, %v", fd, reg, err)
		}
	}
	files, err := o.Files(w.shell)
	if err != nil || len(files) != 3 || files[0].FD != 0 || files[1].FD != 3 || files[2].FD != 7 || files[2].File != w.fileX {
		t.Errorf("files %+v, %v", files, err)
	}
	if _, err := o.FDPath(w.shell, 5); !errors.Is(err, linux.ErrBadValue) {
		t.Errorf("closed fd: %v", err)
	}
	if _, err := o.FDPath(w.shell, 64); !errors.Is(err, linux.ErrBadValue) {
		t.Errorf("fd past max_fds: %v", err)
	}
	if _, err := o.FDPath(w.shell, -1); !errors.Is(err, linux.ErrBadValue) {
		t.Errorf("negative fd: %v", err)
	}
}

func TestPathsForged(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	g := w.g
	t.Run("d_parent cycle", func(t *testing.T) {
		a := g.Dentry(w.root, "a", linux.SIFDIR)
		b := g.Dentry(a, "b", linux.SIFDIR)
		g.PutU64(a+linuxtest.DentryParent, uint64(b))
		if _, err := o.DentryPath(w.rootMnt.Mnt, b); !errors.Is(err, linux.ErrLoop) {
			t.Errorf("err = %v, want ErrLoop", err)
		}
	})
	t.Run("deep chain", func(t *testing.T) {
		d := w.root
		for i := 0; i < linux.MaxDepth+10; i++ {
			d = g.Dentry(d, "d", linux.SIFDIR)
		}
		if _, err := o.DentryPath(w.rootMnt.Mnt, d); !errors.Is(err, linux.ErrTooDeep) {
			t.Errorf("err = %v, want ErrTooDeep", err)
		}
	})
	t.Run("long path", func(t *testing.T) {
		d := w.root
		for i := 0; i < 20; i++ {
			d = g.Dentry(d, strings.Repeat("n", 250), linux.SIFDIR)
		}
		if _, err := o.DentryPath(w.rootMnt.Mnt, d); !errors.Is(err, linux.ErrTooLong) {
			t.Errorf("err = %v, want ErrTooLong", err)
		}
	})
	t.Run("huge name length", func(t *testing.T) {
		d := g.Dentry(w.root, "x", linux.SIFREG)
		g.PutU32(d+linuxtest.DentryName+linuxtest.QstrLen, 1<<30)
		if _, err := o.DentryPath(w.rootMnt.Mnt, d); !errors.Is(err, linux.ErrBadValue) {
			t.Errorf("err = %v, want ErrBadValue", err)
		}
	})
	t.Run("slash in name", func(t *testing.T) {
		d := g.Dentry(w.root, "../etc", linux.SIFREG)
		if _, err := o.DentryPath(w.rootMnt.Mnt, d); !errors.Is(err, linux.ErrBadValue) {
			t.Errorf("err = %v, want ErrBadValue", err)
		}
	})
	t.Run("mount cycle", func(t *testing.T) {
		r1 := g.Dentry(0, "/", linux.SIFDIR)
		r2 := g.Dentry(0, "/", linux.SIFDIR)
		m1 := g.NewMount(w.rootMnt, r2, r1)
		m2 := g.NewMount(m1, r1, r2)
		g.PutU64(m1.Addr+linuxtest.MountParent, uint64(m2.Addr))
		d := g.Dentry(r1, "f", linux.SIFREG)
		if _, err := o.DentryPath(m1.Mnt, d); !errors.Is(err, linux.ErrLoop) {
			t.Errorf("err = %v, want ErrLoop", err)
		}
	})
	t.Run("huge max_fds", func(t *testing.T) {
		task := g.NewTask(linuxtest.Task{PID: 9, TGID: 9, Comm: "fds", MaxFDs: 1 << 31})
		g.SetFD(task, 100, w.fileA)
		files, err := o.Files(task)
		if !errors.Is(err, linux.ErrTooLong) || len(files) != 1 || files[0].FD != 100 {
			t.Errorf("files %+v, err %v", files, err)
		}
		// One slot past the walk bound is still reachable by index.
		g.SetFD(task, 4095, w.fileX)
		if p, err := o.FDPath(task, 4095); err != nil || p != "/mnt/data/logs/x.log" {
			t.Errorf("fd 4095: %q %v", p, err)
		}
	})
	t.Run("fd slot user pointer", func(t *testing.T) {
		task := g.NewTask(linuxtest.Task{PID: 10, TGID: 10, Comm: "fds"})
		g.SetFD(task, 1, 0x1000)
		if _, err := o.FDPath(task, 1); !errors.Is(err, linux.ErrBadPointer) {
			t.Errorf("err = %v", err)
		}
		if _, err := o.Files(task); !errors.Is(err, linux.ErrBadPointer) {
			t.Errorf("files err = %v", err)
		}
	})
}

func TestArgsAndUserStrings(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	as := w.g.NewAddressSpace()
	name := w.g.UserData(as, []byte("/tmp/created-by-test\x00"))
	long := w.g.UserData(as, []byte(strings.Repeat("a", 5000)))
	regs, _ := w.g.Registers(1)
	regs.CR3 = uint64(as.Root) | 3
	regs.RDI, regs.RSI, regs.RDX, regs.RCX, regs.R8, regs.R9 = 1, uint64(name), 3, 4, 5, 6
	stack := introspect.Va(regs.RSP)
	w.g.PutU64(stack, 0xffffffff81234567) // return address
	w.g.PutU64(stack+8, 7)
	w.g.PutU64(stack+16, 8)
	for i, want := range []uint64{1, uint64(name), 3, 4, 5, 6, 7, 8} {
		got, err := o.Arg(&regs, i)
		if err != nil || got != want {
			t.Errorf("arg %d = %#x, %v; want %#x", i, got, err, want)
		}
	}
	if _, err := o.Arg(&regs, 99); !errors.Is(err, linux.ErrBadValue) {
		t.Errorf("arg 99: %v", err)
	}
	s, err := o.UserString(&regs, name, linux.PathMax)
	if err != nil || s != "/tmp/created-by-test" {
		t.Errorf("user string %q, %v", s, err)
	}
	if _, err := o.UserString(&regs, long, linux.PathMax); !errors.Is(err, linux.ErrTooLong) {
		t.Errorf("long string: %v", err)
	}
	if _, err := o.UserString(&regs, introspect.Va(w.shell), linux.PathMax); !errors.Is(err, linux.ErrBadPointer) {
		t.Errorf("kernel pointer as user string: %v", err)
	}
	// Through the task's mm->pgd, from any vCPU.
	task := w.g.NewTask(linuxtest.Task{PID: 77, TGID: 77, Comm: "u", Exe: w.busybox, AS: as})
	tk, err := o.Task(task)
	if err != nil {
		t.Fatal(err)
	}
	if root, err := o.TaskRoot(&tk); err != nil || root != as.Root {
		t.Errorf("task root %v, %v; want %v", root, err, as.Root)
	}
	if s, err := o.TaskUserString(&tk, name, 64); err != nil || s != "/tmp/created-by-test" {
		t.Errorf("task user string %q, %v", s, err)
	}
	shell, _ := o.Task(w.shell) // mm without pgd
	if _, err := o.TaskUserString(&shell, name, 64); !errors.Is(err, linux.ErrBadPointer) {
		t.Errorf("task without pgd: %v", err)
	}
	// The PTI user PGD maps user memory as well.
	regs.CR3 = uint64(as.UserRoot)
	if s, err := o.UserString(&regs, name, 64); err != nil || s != "/tmp/created-by-test" {
		t.Errorf("user string via user PGD %q, %v", s, err)
	}
	_ = amd64.Registers{}
}
