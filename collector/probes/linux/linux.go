// Package linux implements the collector's view of a Linux guest: its
// identity and one probe per event kind (five for file.write, two for
// file.delete), each a kernel function hooked at its entry and decoded
// with the Linux OS layer.
//
// The functions were chosen from what Debian's 6.1 cloud kernel
// (6.1.0-56-cloud-amd64) has as real, non-inlined functions in kallsyms,
// preferring one hook per event that carries everything the event needs in
// its arguments:
//
//   - file.create: vfs_open(const struct path *path, struct file *file),
//     which do_open calls once the last component is looked up or made,
//     for every open(2), openat(2), creat(2), openat2(2) and io_uring
//     open. An event is emitted when file->f_flags has O_CREAT (the open
//     flags are set on the file before vfs_open, and cleared of O_CREAT
//     only inside it, by do_dentry_open); Created is f_mode's
//     FMODE_CREATED, which lookup_open sets only when it made the file.
//     The path is the struct path the kernel resolved (symlinks, dfd and
//     working directory already applied). do_sys_openat2, hooked before,
//     sees the flags but not whether the file existed, and counted failed
//     opens; lookup_open, may_o_create and open_last_lookups are inlined
//     in this build; vfs_create is used by mknod(2) only;
//     security_path_mknod and security_inode_create fire for names not yet
//     in the dcache, existing or not; fd_install sees FMODE_CREATED but
//     no longer O_CREAT. Filesystems with atomic_open (NFS, FUSE, CIFS,
//     9p, ceph) open the file themselves and skip vfs_open: their creates
//     are not seen.
//   - file.write, one probe per family, each where the family's call
//     still names the target file, so that one call is one event with
//     the byte count asked for (entry hooks do not see the result):
//     vfs_write(struct file *file, buf, count, pos) and vfs_writev(struct
//     file *file, const struct iovec __user *vec, vlen, pos, flags).
//     write(2) and pwrite64(2) reach vfs_write, writev(2),
//     pwritev(2) and pwritev2(2) reach vfs_writev, each with the struct
//     file, whose f_path gives the full path without an fd-table lookup;
//     neither calls the other, so a write is seen once, as one event per
//     system call whatever the number of iovecs (the byte count sums the
//     iovecs, at most UIO_MAXIOV, read from the caller's memory). Writes
//     to anything but a regular file (pipes, ttys, sockets: inode i_mode)
//     are skipped (collector.ErrSkip). vfs_writev is static in
//     fs/read_write.c: here it is a real function under its plain name (a
//     GCC clone with a changed signature would be named vfs_writev.isra.N
//     or .constprop.N), so RDI is the file; a build that inlines it has
//     no such symbol, and the probe is optional. Hooking the system
//     calls instead would need an fd-table lookup per hit and three entry
//     points (plus compat ones) for one path.
//     sendfile(2): do_sendfile(int out_fd, int in_fd, loff_t *ppos,
//     size_t count, loff_t max), a real function in this build, whose
//     out_fd is looked up in the task's fd table. It is chosen over
//     do_splice_direct and splice_direct_to_actor, where the data meets
//     the file, because copy_file_range's fallback
//     (generic_copy_file_range) and overlayfs copy-up call those too: a
//     copy would count twice. splice(2): do_splice(in, off_in, out,
//     off_out, len, flags), global since io_uring's splice calls it too
//     (do_splice_from, where pipe meets file, is inlined); an event when
//     out is a regular file. copy_file_range(2): vfs_copy_file_range(in,
//     pos_in, out, pos_out, len, flags), the one entry of the system call
//     and of in-kernel users (nfsd, ksmbd, overlayfs); its splice fallback
//     goes through do_splice_direct, not hooked, so it is seen once.
//     io_uring WRITE, WRITEV and WRITE_FIXED: io_write(struct io_kiocb
//     *req, unsigned int issue_flags), the one function that runs them
//     (it calls the filesystem's write_iter itself, not vfs_write); see
//     decodeIOWrite for how a request is counted once although io_write
//     runs twice for a buffered write.
//     Not seen: writes through shared mmap'ed pages (see the README's
//     coverage table) and the kernel's own (kernel_write).
//   - file.rename: security_path_rename(const struct path *old_dir, struct
//     dentry *old_dentry, const struct path *new_dir, struct dentry
//     *new_dentry, unsigned int flags), called once by do_renameat2 (for
//     rename(2), renameat(2), renameat2(2) and io_uring) after both names
//     are looked up, before vfs_rename. Unlike vfs_rename (struct
//     renamedata: dentries without their mounts) and do_renameat2 (user
//     strings relative to two dfds), it has both directories as struct
//     paths, so the full paths are the directory's path and the dentry's
//     name. It needs CONFIG_SECURITY_PATH (Debian has it, for AppArmor
//     and TOMOYO); the probe is optional. A rename refused later by
//     vfs_rename (EBUSY, permissions of sticky directories) still shows.
//   - file.delete: security_path_unlink(dir, dentry) for unlink(2) and
//     unlinkat(2), security_path_rmdir(dir, dentry) for rmdir(2) and
//     unlinkat(2) with AT_REMOVEDIR, called by do_unlinkat and do_rmdir,
//     chosen over vfs_unlink and vfs_rmdir for the same reason (a struct
//     path for the directory; vfs_unlink is also called by nfsd,
//     overlayfs and cachefiles). Syscall says which.
//   - process.exec: proc_exec_connector(struct task_struct *task), which
//     exec_binprm calls after a successful execve once the new program
//     is in place (with CONFIG_PROC_EVENTS, as Debian has; optional): the
//     task has its new comm and mm->exe_file, and the new mm's argument
//     area (arg_start..arg_end) holds argv, read bounded in count and
//     bytes (Options). exec_binprm itself and bprm_execve's callers are
//     inlined or static; begin_new_exec and setup_new_exec run before
//     argv is copied to the new stack's final place; security_bprm_check
//     runs once per interpreter of a #! script and before the point of
//     no return. An exec that fails is not an event.
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
//     is not used: it also runs for the old mm at every execve. The exit
//     status is task->exit_code, which do_exit stores just before it
//     calls taskstats_exit (the fallback reads do_exit's argument): the
//     wait(2) status, split into ExitCode and ExitSignal.
package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oslinux "github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Hooked kernel functions: one per event kind, five for file.write (one
// per system call family) and two for file.delete.
const (
	FuncFileCreate   = "vfs_open"
	FuncFileWrite    = "vfs_write"
	FuncFileWritev   = "vfs_writev" // optional: absent where inlined
	FuncSendfile     = "do_sendfile"
	FuncSplice       = "do_splice"
	FuncCopyRange    = "vfs_copy_file_range"
	FuncIOWrite      = "io_write"
	FuncFileRename   = "security_path_rename"
	FuncFileUnlink   = "security_path_unlink"
	FuncFileRmdir    = "security_path_rmdir"
	FuncProcessExec  = "proc_exec_connector"
	FuncProcessStart = "wake_up_new_task"
	FuncProcessExit  = "taskstats_exit"
	// FuncProcessExitFallback is hooked for process.exit when the kernel
	// has no FuncProcessExit (built without CONFIG_TASKSTATS).
	FuncProcessExitFallback = "do_exit"
)

// Flags of open(2) (include/uapi/asm-generic/fcntl.h) and of struct
// file's f_mode (include/linux/fs.h).
const (
	oCreat       = 0o100
	fmodeCreated = 0x100000
)

// System call families of file.write and file.delete events
// (collector.Event.Syscall).
const (
	SyscallWrite     = "write"           // write(2), pwrite64(2)
	SyscallWritev    = "writev"          // writev(2), pwritev(2), pwritev2(2)
	SyscallSendfile  = "sendfile"        // sendfile(2)
	SyscallSplice    = "splice"          // splice(2), io_uring splice
	SyscallCopyRange = "copy_file_range" // copy_file_range(2)
	SyscallIOUring   = "io_uring"        // io_uring WRITE, WRITEV, WRITE_FIXED
	SyscallUnlink    = "unlink"          // unlink(2), unlinkat(2)
	SyscallRmdir     = "rmdir"           // rmdir(2), unlinkat(2) with AT_REMOVEDIR
)

// uioMaxIOV is UIO_MAXIOV: vfs_writev refuses more iovecs, so more is
// bad data.
const uioMaxIOV = 1024

// Options bound what the probes read from the guest.
type Options struct {
	// ArgsMax and ArgsMaxBytes bound the argv of process.exec events
	// (count, bytes read); 0 takes oslinux.DefaultArgsMax and
	// DefaultArgsMaxBytes.
	ArgsMax, ArgsMaxBytes int
}

// Guest is a Linux guest's OS layer as the collector sees it. It
// implements collector.GuestOS.
type Guest struct {
	os   *oslinux.OS
	opts Options
}

var _ collector.GuestOS = (*Guest)(nil)

// New returns the collector's view of the kernel o found, with the default
// Options.
func New(o *oslinux.OS) *Guest { return NewWith(o, Options{}) }

// NewWith is New with options.
func NewWith(o *oslinux.OS, opts Options) *Guest { return &Guest{os: o, opts: opts} }

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
// file.write (vfs_write, vfs_writev when the kernel has it, do_sendfile,
// do_splice, vfs_copy_file_range), file.rename, file.delete (unlink and
// rmdir), process.start, process.exec and process.exit. Other kinds (page
// faults, page-in/out, reinjections) come from the hook engine, not from
// probes, and are ignored here. The probes of the kinds this package
// added later (sendfile and the other write families, rename, delete,
// exec) are optional: a kernel without the function (built without
// CONFIG_SECURITY_PATH or CONFIG_PROC_EVENTS, or with it inlined) still
// gets the others.
func (g *Guest) Probes(enabled []collector.Kind) ([]collector.Probe, error) {
	return collector.SelectProbes(enabled, []collector.ProbeSpec{
		{Kind: collector.KindFileCreate, Func: FuncFileCreate, Decode: g.decodeCreate},
		{Kind: collector.KindFileWrite, Func: FuncFileWrite, Decode: g.decodeWrite},
		{Kind: collector.KindFileWrite, Func: FuncFileWritev, Decode: g.decodeWritev, Optional: true},
		{Kind: collector.KindFileWrite, Func: FuncSendfile, Decode: g.decodeSendfile, Optional: true},
		{Kind: collector.KindFileWrite, Func: FuncSplice, Decode: g.decodeSpliceFamily(SyscallSplice), Optional: true},
		{Kind: collector.KindFileWrite, Func: FuncCopyRange, Decode: g.decodeSpliceFamily(SyscallCopyRange), Optional: true},
		{Kind: collector.KindFileWrite, Func: FuncIOWrite, Decode: g.decodeIOWrite, Optional: true},
		{Kind: collector.KindFileRename, Func: FuncFileRename, Decode: g.decodeRename, Optional: true},
		{Kind: collector.KindFileDelete, Func: FuncFileUnlink, Decode: g.decodeDelete(SyscallUnlink), Optional: true},
		{Kind: collector.KindFileDelete, Func: FuncFileRmdir, Decode: g.decodeDelete(SyscallRmdir), Optional: true},
		{Kind: collector.KindProcessStart, Func: FuncProcessStart, Decode: g.decodeStart},
		{Kind: collector.KindProcessExec, Func: FuncProcessExec, Decode: g.decodeExec, Optional: true},
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

// process fills an event's process from a task. The name is the
// process's (its group leader's comm): a thread may have a name of its
// own (io_uring's iou-wrk-* workers, which also write and can be the last
// thread to exit).
func (g *Guest) process(t *oslinux.Task, p *collector.Process) error {
	img, err := g.os.ImagePath(t)
	if err != nil {
		return fmt.Errorf("image of pid %d: %w", t.TGID, err)
	}
	name := t.Comm
	if !t.IsGroupLeader() && t.GroupLeader != 0 {
		if name, err = g.os.Comm(t.GroupLeader); err != nil {
			return fmt.Errorf("name of pid %d: %w", t.TGID, err)
		}
	}
	*p = collector.Process{PID: t.TGID, PPID: t.PPID, Name: name, Image: img}
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

// decodeCreate decodes vfs_open(const struct path *path, struct file
// *file): an open with O_CREAT in file->f_flags is a file.create, new when
// lookup_open set FMODE_CREATED in f_mode.
func (g *Guest) decodeCreate(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	flags, mode, err := g.os.FileOpenFlags(introspect.Va(regs.RSI))
	if err != nil {
		return err
	}
	if flags&oCreat == 0 {
		return skip("open without O_CREAT")
	}
	p, err := g.os.PathAt(introspect.Va(regs.RDI))
	if err != nil {
		return fmt.Errorf("path: %w", err)
	}
	if _, err := g.current(h, ev); err != nil {
		return err
	}
	created := mode&fmodeCreated != 0
	ev.Path, ev.Created = p, &created
	return nil
}

// writeTo fills a file.write event for a write of n bytes to file by the
// current task, and skips writes to anything but a regular file.
func (g *Guest) writeTo(h *hook.Hit, ev *collector.Event, file introspect.Va, family string, n uint64) error {
	reg, err := g.os.IsRegular(file)
	if err != nil {
		return err
	}
	if !reg {
		return skip("%s to a non-regular file", family)
	}
	p, err := g.os.FilePath(file)
	if err != nil {
		return err
	}
	if _, err := g.current(h, ev); err != nil {
		return err
	}
	ev.Path, ev.Syscall, ev.Bytes = p, family, n
	return nil
}

// decodeWrite decodes vfs_write(file, buf, count, pos).
func (g *Guest) decodeWrite(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	return g.writeTo(h, ev, introspect.Va(h.Ev.Regs.RDI), SyscallWrite, h.Ev.Regs.RDX)
}

// decodeWritev decodes vfs_writev(file, vec, vlen, pos, flags): the byte
// count is the sum of the iovec lengths, read from the caller's memory
// (at most UIO_MAXIOV of them, as the kernel allows).
func (g *Guest) decodeWritev(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	n, err := g.iovecBytes(regs, introspect.Va(regs.RSI), regs.RDX)
	if err != nil {
		return err
	}
	return g.writeTo(h, ev, introspect.Va(regs.RDI), SyscallWritev, n)
}

// iovecBytes sums the lengths of vlen struct iovec at vec in user memory.
func (g *Guest) iovecBytes(regs *amd64.Registers, vec introspect.Va, vlen uint64) (uint64, error) {
	if vlen > uioMaxIOV {
		return 0, fmt.Errorf("writev of %d iovecs (max %d): %w", vlen, uioMaxIOV, oslinux.ErrBadValue)
	}
	if vlen == 0 {
		return 0, nil
	}
	if vec == 0 {
		return 0, fmt.Errorf("iovec array at %v: %w", vec, oslinux.ErrBadPointer)
	}
	var buf [16 * uioMaxIOV]byte
	b := buf[:16*vlen]
	if err := g.os.ReadUser(regs, vec, b); err != nil {
		return 0, fmt.Errorf("iovec array: %w", err)
	}
	return SumIovecs(b), nil
}

// SumIovecs sums the iov_len of the struct iovec (base, len: 16 bytes)
// in b, saturating instead of wrapping.
func SumIovecs(b []byte) uint64 {
	var n uint64
	for ; len(b) >= 16; b = b[16:] {
		l := binary.LittleEndian.Uint64(b[8:16])
		if n+l < n {
			return math.MaxUint64
		}
		n += l
	}
	return n
}

// decodeSendfile decodes do_sendfile(out_fd, in_fd, ppos, count, max):
// the target is a descriptor of the current task. do_sendfile is chosen
// over do_splice_direct, where the data meets the file, because
// copy_file_range's fallback (generic_copy_file_range) and overlayfs
// copy-up call do_splice_direct too.
func (g *Guest) decodeSendfile(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	task, err := g.os.CurrentTaskAddr(regs)
	if err != nil {
		return fmt.Errorf("current task: %w", err)
	}
	file, err := g.os.FileOfFD(task, int(int32(regs.RDI)))
	switch {
	case errors.Is(err, oslinux.ErrBadValue):
		return skip("sendfile to bad fd %d", int32(regs.RDI))
	case err != nil:
		return err
	case file == 0:
		return skip("sendfile to closed fd %d", int32(regs.RDI))
	}
	return g.writeTo(h, ev, file, SyscallSendfile, regs.RCX)
}

// decodeSpliceFamily decodes do_splice(in, off_in, out, off_out, len,
// flags) and vfs_copy_file_range(in, pos_in, out, pos_out, len, flags):
// the same arguments in the same registers.
func (g *Guest) decodeSpliceFamily(family string) func(*hook.Hit, *collector.Event) error {
	return func(h *hook.Hit, ev *collector.Event) error {
		g.os.Flush()
		return g.writeTo(h, ev, introspect.Va(h.Ev.Regs.RDX), family, h.Ev.Regs.R8)
	}
}

// io_uring constants (include/uapi/linux/io_uring.h, io_uring/io_uring.h
// and include/uapi/asm-generic/fcntl.h).
const (
	ioringOpWritev     = 2
	ioringOpWriteFixed = 5
	ioringOpWrite      = 23
	ioURingFNonblock   = 0x80000000 // IO_URING_F_NONBLOCK (INT_MIN)
	oDirect            = 0o40000
)

// decodeIOWrite decodes io_write(struct io_kiocb *req, unsigned int
// issue_flags), which runs each io_uring WRITE, WRITEV and WRITE_FIXED
// request. A buffered write to a regular file is first tried with
// IO_URING_F_NONBLOCK, which io_write answers by punting it to an io-wq
// worker without writing, and then runs again there: that first attempt
// is skipped, so one request is one event. (O_DIRECT writes run inline
// and are counted at their first attempt; one that must wait is retried
// and counted twice.) The event's process is the request's: io-wq
// workers are threads of it.
func (g *Guest) decodeIOWrite(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	req, err := g.os.IORequestOf(introspect.Va(regs.RDI))
	if err != nil {
		return err
	}
	if req.Opcode != ioringOpWrite && req.Opcode != ioringOpWritev && req.Opcode != ioringOpWriteFixed {
		return skip("io_uring opcode %d", req.Opcode)
	}
	if uint32(regs.RSI)&ioURingFNonblock != 0 {
		flags, _, err := g.os.FileOpenFlags(req.File)
		if err != nil {
			return err
		}
		if flags&oDirect == 0 {
			return skip("non-blocking attempt of a buffered io_uring write (retried by io-wq)")
		}
	}
	n := uint64(req.Len)
	if req.Opcode == ioringOpWritev {
		if n, err = g.iovecBytes(regs, introspect.Va(req.Addr), uint64(req.Len)); err != nil {
			return err
		}
	}
	return g.writeTo(h, ev, req.File, SyscallIOUring, n)
}

// decodeRename decodes security_path_rename(old_dir, old_dentry, new_dir,
// new_dentry, flags).
func (g *Guest) decodeRename(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	regs := &h.Ev.Regs
	from, err := g.os.ChildPath(introspect.Va(regs.RDI), introspect.Va(regs.RSI))
	if err != nil {
		return fmt.Errorf("rename source: %w", err)
	}
	to, err := g.os.ChildPath(introspect.Va(regs.RDX), introspect.Va(regs.RCX))
	if err != nil {
		return fmt.Errorf("rename target: %w", err)
	}
	if _, err := g.current(h, ev); err != nil {
		return err
	}
	ev.OldPath, ev.Path = from, to
	return nil
}

// decodeDelete decodes security_path_unlink(dir, dentry) and
// security_path_rmdir(dir, dentry).
func (g *Guest) decodeDelete(family string) func(*hook.Hit, *collector.Event) error {
	return func(h *hook.Hit, ev *collector.Event) error {
		g.os.Flush()
		p, err := g.os.ChildPath(introspect.Va(h.Ev.Regs.RDI), introspect.Va(h.Ev.Regs.RSI))
		if err != nil {
			return err
		}
		if _, err := g.current(h, ev); err != nil {
			return err
		}
		ev.Path, ev.Syscall = p, family
		return nil
	}
}

// decodeExec decodes proc_exec_connector(task), called by exec_binprm
// once the new program is in place: the task has its new comm, mm and
// executable, and the new mm's argument area holds argv.
func (g *Guest) decodeExec(h *hook.Hit, ev *collector.Event) error {
	g.os.Flush()
	t, err := g.os.Task(introspect.Va(h.Ev.Regs.RDI))
	if err != nil {
		return fmt.Errorf("exec'ing task: %w", err)
	}
	if err := g.process(&t, &ev.Process); err != nil {
		return err
	}
	args, cut, err := g.os.Args(&t, g.opts.ArgsMax, g.opts.ArgsMaxBytes)
	if err != nil {
		return fmt.Errorf("argv of pid %d: %w", t.TGID, err)
	}
	ev.Args, ev.ArgsTruncated = args, cut
	ev.Path = ev.Process.Image
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
	code, err := g.os.ExitCode(t.Addr)
	if err != nil {
		return err
	}
	setExit(ev, code)
	return g.process(&t, &ev.Process)
}

// setExit fills the exit status of ev from a wait(2) status word: the
// low 7 bits are the killing signal, else bits 8-15 the exit code.
func setExit(ev *collector.Event, status uint32) {
	if sig := int32(status & 0x7f); sig != 0 {
		ev.ExitSignal = sig
		return
	}
	c := int32(status>>8) & 0xff
	ev.ExitCode = &c
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
	setExit(ev, uint32(h.Ev.Regs.RDI))
	return g.process(&t, &ev.Process)
}
