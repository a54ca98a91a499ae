package linux_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux/linuxtest"
)

// The fuzz targets copy their input into a 64 KiB region of kernel memory
// (the direct map) and run the walkers on objects at fixed places in it.
// So that the fuzzer can build pointer graphs without guessing 64-bit
// kernel addresses, an 8-byte word whose top byte is relocTag is replaced
// by the region's address plus its low 16 bits; other words are copied
// as they are.
const (
	fuzzRegion = 64 << 10
	relocTag   = 0x80
	fzTask     = 0x0   // task_struct
	fzMount    = 0x0   // struct mount; its vfsmount at +MountMnt
	fzDentry   = 0x140 // dentry of the dentry walker
)

type fuzzGuest struct {
	g    *linuxtest.Guest
	o    *linux.OS
	base introspect.Va
}

func newFuzzGuest(t testing.TB) *fuzzGuest {
	g := linuxtest.New(slide, 1)
	base := g.Alloc(fuzzRegion)
	o, err := linux.New(g, linuxtest.Profile(), linux.Options{MaxFDs: 256})
	if err != nil {
		t.Fatal(err)
	}
	return &fuzzGuest{g: g, o: o, base: base}
}

func (f *fuzzGuest) load(data []byte) {
	region := f.g.RAM[linuxtest.KPA(f.base):][:fuzzRegion]
	clear(region)
	copy(region, data)
	for i := 0; i+8 <= len(data) && i+8 <= fuzzRegion; i += 8 {
		w := binary.LittleEndian.Uint64(region[i:])
		if w>>56 == relocTag {
			binary.LittleEndian.PutUint64(region[i:], uint64(f.base)+w&0xffff)
		}
	}
}

// seedBuilder writes a fuzz input.
type seedBuilder []byte

func (s seedBuilder) ptr(at, to int) { binary.LittleEndian.PutUint64(s[at:], relocTag<<56|uint64(to)) }
func (s seedBuilder) u32(at int, v uint32) {
	binary.LittleEndian.PutUint32(s[at:], v)
}
func (s seedBuilder) u16(at int, v uint16) { binary.LittleEndian.PutUint16(s[at:], v) }
func (s seedBuilder) dentry(at, parent int, name string) {
	s.ptr(at+linuxtest.DentryParent, parent)
	s.u32(at+linuxtest.DentryName+linuxtest.QstrLen, uint32(len(name)))
	s.ptr(at+linuxtest.DentryName+linuxtest.QstrName, at+0x38)
	copy(s[at+0x38:at+0x40], name)
}

// validSeed is a consistent task: pid 7 "fuzz", exe /tmp/fuzz on a second
// mount, fd 1 open on it, pwd /tmp. The objects are packed into the unused
// head of the task_struct, where their fields do not overlap the task's,
// to keep fuzz inputs small.
func validSeed() []byte {
	s := make(seedBuilder, linuxtest.TaskSignal+8)
	s.u32(fzTask+linuxtest.TaskPID, 7)
	s.u32(fzTask+linuxtest.TaskTGID, 7)
	copy(s[fzTask+linuxtest.TaskComm:], "fuzz")
	s.ptr(fzTask+linuxtest.TaskRealParent, fzTask)
	s.ptr(fzTask+linuxtest.TaskGroupLeader, fzTask)
	// Child mount at 0x000 (root dentry 0x100) on "tmp" (0x0c0) of the
	// root mount at 0x040 (root dentry 0x080).
	s.ptr(fzMount+linuxtest.MountParent, 0x040)
	s.ptr(fzMount+linuxtest.MountMountpoint, 0x0c0)
	s.ptr(fzMount+linuxtest.MountMnt+linuxtest.VfsmountRoot, 0x100)
	s.ptr(0x040+linuxtest.MountParent, 0x040)
	s.ptr(0x040+linuxtest.MountMountpoint, 0x080)
	s.ptr(0x040+linuxtest.MountMnt+linuxtest.VfsmountRoot, 0x080)
	s.dentry(0x080, 0x080, "/")
	s.dentry(0x0c0, 0x080, "tmp")
	s.dentry(0x100, 0x100, "/")
	s.dentry(fzDentry, 0x100, "fuzz")
	// struct file at 0x180 on (mount 0x000, dentry fzDentry), inode 0x1b0.
	s.ptr(0x180+linuxtest.FilePath, fzMount+linuxtest.MountMnt)
	s.ptr(0x180+linuxtest.FilePath+8, fzDentry)
	s.ptr(0x180+linuxtest.FileInode, 0x1b0)
	s.u16(0x1b0, linux.SIFREG|0o644)
	// mm at 0x1c0 (exe_file at 0x560).
	s.ptr(fzTask+linuxtest.TaskMM, 0x1c0)
	s.ptr(0x1c0+linuxtest.MMExeFile, 0x180)
	// files_struct 0x200 -> fdtable 0x230 (max_fds 4) -> fd array 0x240.
	s.ptr(fzTask+linuxtest.TaskFiles, 0x200)
	s.ptr(0x200+linuxtest.FilesFdt, 0x230)
	s.u32(0x230+linuxtest.FdtMaxFDs, 4)
	s.ptr(0x230+linuxtest.FdtFD, 0x240)
	s.ptr(0x240+8, 0x180)
	// fs_struct 0x260: pwd = (child mount, its root).
	s.ptr(fzTask+linuxtest.TaskFS, 0x260)
	s.ptr(0x260+linuxtest.FSPwd, fzMount+linuxtest.MountMnt)
	s.ptr(0x260+linuxtest.FSPwd+8, 0x100)
	// signal_struct 0x2a0.
	s.ptr(fzTask+linuxtest.TaskSignal, 0x2a0)
	s.u32(0x2a0+linuxtest.SignalLive, 1)
	return s
}

func TestFuzzSeedValid(t *testing.T) {
	f := newFuzzGuest(t)
	f.load(validSeed())
	task, err := f.o.Task(f.base + fzTask)
	if err != nil || task.PID != 7 || task.Comm != "fuzz" || task.PPID != 7 {
		t.Fatalf("task %+v, %v", task, err)
	}
	if p, err := f.o.ImagePath(&task); err != nil || p != "/tmp/fuzz" {
		t.Fatalf("image %q, %v", p, err)
	}
	if p, err := f.o.FDPath(task.Addr, 1); err != nil || p != "/tmp/fuzz" {
		t.Fatalf("fd 1 %q, %v", p, err)
	}
	if p, err := f.o.Pwd(task.Addr); err != nil || p != "/tmp" {
		t.Fatalf("pwd %q, %v", p, err)
	}
}

func checkPath(t *testing.T, p string, err error) {
	if err == nil && (len(p) > linux.PathMax || len(p) == 0 || p[0] != '/') {
		t.Fatalf("path %q accepted", p)
	}
}

// FuzzTaskWalker runs every task-level read on a forged task.
func FuzzTaskWalker(f *testing.F) {
	f.Add(validSeed())
	cyc := seedBuilder(validSeed())
	cyc.ptr(0x100+linuxtest.DentryParent, fzDentry) // d_parent cycle
	f.Add([]byte(cyc))
	huge := seedBuilder(validSeed())
	huge.u32(0x230+linuxtest.FdtMaxFDs, 0xffffffff)
	f.Add([]byte(huge))
	f.Add([]byte{})
	fg := newFuzzGuest(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fg.load(data)
		fg.o.Flush()
		task, err := fg.o.Task(fg.base + fzTask)
		if err != nil {
			return
		}
		if len(task.Comm) >= linux.TaskCommLen {
			t.Fatalf("comm %q too long", task.Comm)
		}
		p, err := fg.o.ImagePath(&task)
		if err == nil && p != "" {
			checkPath(t, p, err)
		}
		files, err := fg.o.Files(task.Addr)
		if len(files) > 256 {
			t.Fatalf("%d files beyond MaxFDs", len(files))
		}
		for _, of := range files {
			p, err := fg.o.FilePath(of.File)
			checkPath(t, p, err)
			_, _ = fg.o.IsRegular(of.File)
		}
		p, err = fg.o.FDPath(task.Addr, 1)
		checkPath(t, p, err)
		p, err = fg.o.Pwd(task.Addr)
		checkPath(t, p, err)
		_, _, _ = fg.o.ThreadGroupLive(task.Addr)
	})
}

// FuzzDentryWalker runs the path walk on a forged dentry and mount graph.
func FuzzDentryWalker(f *testing.F) {
	f.Add(validSeed())
	loop := seedBuilder(validSeed())
	loop.ptr(0x040+linuxtest.MountParent, fzMount) // mount cycle
	f.Add([]byte(loop))
	f.Add([]byte{})
	fg := newFuzzGuest(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fg.load(data)
		fg.o.Flush()
		p, err := fg.o.DentryPath(fg.base+fzMount+linuxtest.MountMnt, fg.base+fzDentry)
		checkPath(t, p, err)
	})
}

// headTag marks, in a process-list fuzz input, a word that becomes the
// address of init_task.tasks: the list head an intact walk returns to.
const headTag = 0x81

// processSeed is a list of three processes (pids 1, 2, 3) in task_structs
// at 0x0, 0x1000 and 0x2000 of the region; the fields the walk reads do
// not overlap at that stride.
func processSeed() []byte {
	s := make(seedBuilder, 0x2000+linuxtest.TaskTasks+16)
	for i, at := range []int{0, 0x1000, 0x2000} {
		s.u32(at+linuxtest.TaskPID, uint32(i+1))
		s.u32(at+linuxtest.TaskTGID, uint32(i+1))
		copy(s[at+linuxtest.TaskComm:], "p")
		s.ptr(at+linuxtest.TaskRealParent, at)
		s.ptr(at+linuxtest.TaskGroupLeader, at)
		if at < 0x2000 {
			s.ptr(at+linuxtest.TaskTasks, at+0x1000+linuxtest.TaskTasks)
		} else {
			binary.LittleEndian.PutUint64(s[at+linuxtest.TaskTasks:], headTag<<56)
		}
	}
	return s
}

type processFuzzGuest struct {
	*fuzzGuest
	head introspect.Va
}

func newProcessFuzzGuest(t testing.TB) *processFuzzGuest {
	fg := newFuzzGuest(t)
	head := fg.g.InitTask() + linuxtest.TaskTasks
	fg.g.PutU64(head, uint64(fg.base+linuxtest.TaskTasks))
	return &processFuzzGuest{fg, head}
}

// processes loads data, points headTag words at the list head and walks.
func (fg *processFuzzGuest) processes(data []byte) ([]linux.Task, error) {
	fg.load(data)
	region := fg.g.RAM[linuxtest.KPA(fg.base):][:fuzzRegion]
	for i := 0; i+8 <= len(data) && i+8 <= fuzzRegion; i += 8 {
		if binary.LittleEndian.Uint64(region[i:])>>56 == headTag {
			binary.LittleEndian.PutUint64(region[i:], uint64(fg.head))
		}
	}
	fg.o.Flush()
	return fg.o.Processes(0)
}

func TestProcessSeedValid(t *testing.T) {
	fg := newProcessFuzzGuest(t)
	ps, err := fg.processes(processSeed())
	if err != nil || len(ps) != 3 || ps[0].PID != 1 || ps[2].PID != 3 || ps[2].Addr != fg.base+0x2000 {
		t.Fatalf("processes %+v, %v", ps, err)
	}
	loop := seedBuilder(processSeed())
	loop.ptr(0x2000+linuxtest.TaskTasks, linuxtest.TaskTasks)
	if ps, err := fg.processes(loop); !errors.Is(err, linux.ErrLoop) || len(ps) != 3 {
		t.Fatalf("loop: %d processes, %v", len(ps), err)
	}
}

// FuzzProcessList walks a forged process list: init_task's next entry is
// the task at the start of the region.
func FuzzProcessList(f *testing.F) {
	f.Add(processSeed())
	loop := seedBuilder(processSeed())
	loop.ptr(0x2000+linuxtest.TaskTasks, linuxtest.TaskTasks) // back to the first, not the head
	f.Add([]byte(loop))
	f.Add([]byte{})
	fg := newProcessFuzzGuest(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := fg.processes(data)
		if len(ps) > linux.MaxProcesses {
			t.Fatalf("%d processes", len(ps))
		}
		if err != nil {
			return
		}
		seen := map[introspect.Va]bool{}
		for _, p := range ps {
			if seen[p.Addr] {
				t.Fatalf("task %v listed twice without an error", p.Addr)
			}
			seen[p.Addr] = true
		}
	})
}

// FuzzNewKindReaders runs the readers of the rename, delete, create, exec
// and exit probes on a forged task, file and directory: ChildPath (the
// pwd's struct path and a dentry), FileOpenFlags, ExitCode and Args (whose
// mm, argument area and page-table root all come from the input). Bad
// data must give an error, never a panic, an over-long path or more
// arguments or bytes than the bounds.
func FuzzNewKindReaders(f *testing.F) {
	seed := seedBuilder(validSeed())
	f.Add([]byte(seed))
	args := seedBuilder(append([]byte(nil), seed...))
	args = append(args, make([]byte, 0x40)...)
	binary.LittleEndian.PutUint64(args[0x1c0+linuxtest.MMArgStart:], linuxtest.UserBase)
	binary.LittleEndian.PutUint64(args[0x1c0+linuxtest.MMArgEnd:], linuxtest.UserBase+1<<20)
	f.Add([]byte(args))
	f.Add([]byte{})
	fg := newFuzzGuest(f)
	const maxArgs, maxBytes = 4, 64
	f.Fuzz(func(t *testing.T, data []byte) {
		fg.load(data)
		fg.o.Flush()
		p, err := fg.o.ChildPath(fg.base+0x260+linuxtest.FSPwd, fg.base+fzDentry)
		checkPath(t, p, err)
		_, _, _ = fg.o.FileOpenFlags(fg.base + 0x180)
		_, _ = fg.o.ExitCode(fg.base + fzTask)
		task, err := fg.o.Task(fg.base + fzTask)
		if err != nil {
			return
		}
		a, _, err := fg.o.Args(&task, maxArgs, maxBytes)
		n := 0
		for _, s := range a {
			n += len(s) + 1
		}
		if len(a) > maxArgs || n > maxBytes+1 || (err != nil && a != nil) {
			t.Fatalf("args %q (%d bytes), %v", a, n, err)
		}
	})
}

// FuzzSplitArgs: at most maxCount strings, none longer than the input,
// and truncated whenever strings were left out.
func FuzzSplitArgs(f *testing.F) {
	f.Add([]byte("rm\x00-f\x00/tmp/x\x00"), 2)
	f.Add([]byte("cut"), 4)
	f.Add([]byte{0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, b []byte, maxCount int) {
		maxCount = max(maxCount%64, 0)
		args, cut := linux.SplitArgs(b, maxCount)
		n := 0
		for _, a := range args {
			n += len(a) + 1
		}
		if len(args) > maxCount || n > len(b)+1 {
			t.Fatalf("%q (max %d): %q", b, maxCount, args)
		}
		if !cut && n != len(b) {
			t.Fatalf("%q (max %d): %q not truncated but %d of %d bytes", b, maxCount, args, n, len(b))
		}
	})
}
