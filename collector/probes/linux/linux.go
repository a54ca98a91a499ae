// Package linux implements the collector's view of a Linux guest: its
// identity and one probe per event kind (two for file.write), each a kernel
// function hooked at its entry and decoded with the Linux OS layer.
//
// The functions were chosen from what Debian's 6.1 cloud kernel
// (6.1.0-56-cloud-amd64) has as real, non-inlined functions in kallsyms,
// preferring one hook per event that carries everything the event needs in
// its arguments:
//
//   - file.create: do_sys_openat2(int dfd, const char __user *filename,
//     struct open_how *how). Every open(2), openat(2), creat(2) and
//     openat2(2) passes through it (io_uring excepted); an event is emitted
//     when how->flags has O_CREAT, so "create" means an open that may create
//     the file. The path is the user's string, resolved against the task's
//     working directory (dfd == AT_FDCWD) or the directory of dfd, and
//     cleaned lexically. The candidates that see only real creations are
//     worse hooks: lookup_open, may_o_create and open_last_lookups are
//     inlined in this build, vfs_create is used by mknod(2) only, and
//     security_path_mknod also fires for names not yet in the dcache.
//   - file.write: vfs_write(struct file *file, ...) and vfs_writev(struct
//     file *file, const struct iovec __user *vec, ...), two probes decoded
//     alike. write(2) and pwrite64(2) reach vfs_write, writev(2),
//     pwritev(2) and pwritev2(2) reach vfs_writev, each with the struct
//     file, whose f_path gives the full path without an fd-table lookup;
//     neither calls the other, so a write is seen once, as one event per
//     system call whatever the number of iovecs. Writes to anything but a
//     regular file (pipes, ttys, sockets: inode i_mode) are skipped
//     (collector.ErrSkip). vfs_writev is static in fs/read_write.c: here it
//     is a real function under its plain name (a GCC clone with a changed
//     signature would be named vfs_writev.isra.N or .constprop.N), so RDI is
//     the file; a build that inlines it into do_writev and do_pwritev has no
//     such symbol, and the probe is optional (collector.ProbeSpec.Optional):
//     such a kernel still gets the other probes, and misses vectored writes.
//     Hooking the system calls instead would need an fd-table lookup per hit
//     and three entry points (plus compat ones) for one path.
//     Not seen: writes through io_uring, splice/sendfile, mmap'ed pages, and
//     the kernel's own (kernel_write).
//   - process.start: wake_up_new_task(struct task_struct *p), called once per
//     new task after fork/clone has fully built it. Threads (pid != tgid) are
//     skipped. At this point the child has not exec'd yet, so its name and
//     image are the parent's (the comm after exec shows at exit).
//   - process.exit: taskstats_exit(struct task_struct *tsk, int
//     group_dead), which do_exit calls for every exiting thread after it
//     has decremented signal->live, and before exit_mm, so the exiting
//     task's mm (and image) are still there. The event is emitted when
//     group_dead is set: exactly once per process, by the last thread,
//     even when several threads exit at once (exit_group). It is a global
//     function of kernel/taskstats.c, so it is not inlined into do_exit;
//     a kernel built without CONFIG_TASKSTATS has no such symbol, and then
//     do_exit(long code) is hooked instead and the event emitted when
//     signal->live is still 1 on entry (the decrement comes later in
//     do_exit): there, two last threads entering do_exit at once on two
//     vCPUs both see 2 and the exit is missed. The mm teardown (__mmput)
//     is not used: it also runs for the old mm at every execve.
package linux

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Hooked kernel functions: one per event kind, two for file.write.
const (
	FuncFileCreate   = "do_sys_openat2"
	FuncFileWrite    = "vfs_write"
	FuncFileWritev   = "vfs_writev" // optional: absent where inlined
	FuncProcessStart = "wake_up_new_task"
	FuncProcessExit  = "taskstats_exit"
	// FuncProcessExitFallback is hooked for process.exit when the kernel
	// has no FuncProcessExit (built without CONFIG_TASKSTATS).
	FuncProcessExitFallback = "do_exit"
)

// Flags of open(2) (include/uapi/asm-generic/fcntl.h).
const (
	oCreat  = 0o100
	atFDCWD = -100
)

// Guest is a Linux guest's OS layer as the collector sees it. It
// implements collector.GuestOS.
type Guest struct {
	os *oslinux.OS
}

var _ collector.GuestOS = (*Guest)(nil)

// New returns the collector's view of the kernel o found.
func New(o *oslinux.OS) *Guest { return &Guest{os: o} }

// Attach finds the Linux kernel of a paused guest (oslinux.Discover: its
// profile as pc says, then its KASLR slide) and returns the guest's
// collector view. log may be nil.
func Attach(d oslinux.Memory, pc collector.ProfileConfig, log *slog.Logger) (*Guest, error) {
	o, err := oslinux.Discover(d, oslinux.ProfileSource{
		KernelImage: pc.KernelImage,
		SystemMap:   pc.SystemMap,
		ISF:         pc.ISF,
		CacheDir:    pc.CacheDir,
	}, oslinux.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	return New(o), nil
}

// OSLayer returns the Linux OS layer.
func (g *Guest) OSLayer() *oslinux.OS { return g.os }

// OS returns "linux".
func (g *Guest) OS() string { return "linux" }

// Kernel returns the kernel banner read from the guest.
func (g *Guest) Kernel() string { return g.os.Banner() }

// Probes returns the probes of the enabled kinds among file.create,
// file.write (vfs_write, and vfs_writev when the kernel has it),
// process.start and process.exit. Other kinds (page faults, page-in/out,
// reinjections) come from the hook engine, not from probes, and are
// ignored here.
func (g *Guest) Probes(enabled []collector.Kind) ([]collector.Probe, error) {
	return collector.SelectProbes(enabled, []collector.ProbeSpec{
		{Kind: collector.KindFileCreate, Func: FuncFileCreate, Decode: g.decodeCreate},
		{Kind: collector.KindFileWrite, Func: FuncFileWrite, Decode: g.decodeWrite},
		{Kind: collector.KindFileWrite, Func: FuncFileWritev, Decode: g.decodeWrite, Optional: true},
		{Kind: collector.KindProcessStart, Func: FuncProcessStart, Decode: g.decodeStart},
		g.exitSpec(),
	}, g.os.Symbol, g.os.KernelRoot())
}

// exitSpec picks the process.exit probe: taskstats_exit where the kernel
// has it, do_exit otherwise.
func (g *Guest) exitSpec() collector.ProbeSpec {
	if _, err := g.os.Symbol(FuncProcessExit); errors.Is(err, profile.ErrNotFound) {
		return collector.ProbeSpec{Kind: collector.KindProcessExit, Func: FuncProcessExitFallback, Decode: g.decodeExit}
	}
	return collector.ProbeSpec{Kind: collector.KindProcessExit, Func: FuncProcessExit, Decode: g.decodeGroupExit}
}

func skip(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, collector.ErrSkip)...)
}

// process fills an event's process from a task.
func (g *Guest) process(t *oslinux.Task, p *collector.Process) error {
	img, err := g.os.ImagePath(t)
	if err != nil {
		return fmt.Errorf("image of pid %d: %w", t.TGID, err)
	}
	*p = collector.Process{PID: t.TGID, PPID: t.PPID, Name: t.Comm, Image: img}
	return nil
}

// current reads the hit vCPU's task into ev.
func (g *Guest) current(h *hook.Hit, ev *collector.Event) (oslinux.Task, error) {
	t, err := g.os.CurrentTask(&h.Ev.Regs)
	if err != nil {
		return t, fmt.Errorf("current task: %w", err)
	}
	return t, g.process(&t, &ev.Process)
}

func (g *Guest) decodeCreate(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	dfd := int32(regs.RDI)
	how, err := g.os.OpenHowFlags(introspect.Va(regs.RDX))
	if err != nil {
		return err
	}
	if how&oCreat == 0 {
		return skip("open without O_CREAT")
	}
	name, err := g.os.UserString(regs, introspect.Va(regs.RSI), oslinux.PathMax)
	if err != nil {
		return fmt.Errorf("filename: %w", err)
	}
	if name == "" {
		return skip("empty filename")
	}
	t, err := g.current(h, ev)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(name, "/") {
		var dir string
		if dfd == atFDCWD {
			dir, err = g.os.Pwd(t.Addr)
		} else {
			dir, err = g.os.FDPath(t.Addr, int(dfd))
		}
		if err != nil {
			return fmt.Errorf("directory of relative %q (dfd %d): %w", name, dfd, err)
		}
		name = path.Join(dir, name)
	} else {
		name = path.Clean(name)
	}
	ev.Path = name
	return nil
}

// decodeWrite decodes vfs_write and vfs_writev: both take the struct file
// first.
func (g *Guest) decodeWrite(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	file := introspect.Va(h.Ev.Regs.RDI)
	reg, err := g.os.IsRegular(file)
	if err != nil {
		return err
	}
	if !reg {
		return skip("write to a non-regular file")
	}
	p, err := g.os.FilePath(file)
	if err != nil {
		return err
	}
	if _, err := g.current(h, ev); err != nil {
		return err
	}
	ev.Path = p
	return nil
}

func (g *Guest) decodeStart(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	t, err := g.os.Task(introspect.Va(h.Ev.Regs.RDI))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	if !t.IsGroupLeader() {
		return skip("new thread %d of process %d", t.PID, t.TGID)
	}
	return g.process(&t, &ev.Process)
}

// decodeGroupExit decodes taskstats_exit(tsk, group_dead).
func (g *Guest) decodeGroupExit(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	t, err := g.os.Task(introspect.Va(h.Ev.Regs.RDI))
	if err != nil {
		return fmt.Errorf("exiting task: %w", err)
	}
	if int32(h.Ev.Regs.RSI) == 0 {
		return skip("thread %d of %d exits, others live", t.PID, t.TGID)
	}
	return g.process(&t, &ev.Process)
}

// decodeExit decodes do_exit(code) on the current task (the fallback).
func (g *Guest) decodeExit(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	t, err := g.os.CurrentTask(&h.Ev.Regs)
	if err != nil {
		return fmt.Errorf("current task: %w", err)
	}
	live, ok, err := g.os.ThreadGroupLive(t.Addr)
	switch {
	case err != nil:
		return err
	case ok && live > 1:
		return skip("thread %d exits, %d threads of %d live", t.PID, live, t.TGID)
	case !ok && !t.IsGroupLeader():
		return skip("thread %d of %d exits", t.PID, t.TGID)
	}
	return g.process(&t, &ev.Process)
}
