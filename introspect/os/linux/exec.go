package linux

import (
	"bytes"
	"fmt"
	"path"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

// Default bounds of Args.
const (
	// DefaultArgsMax bounds the number of arguments Args returns.
	DefaultArgsMax = 32
	// DefaultArgsMaxBytes bounds the bytes of the argument area Args reads.
	DefaultArgsMaxBytes = 4096
	// ArgsMaxBytesLimit is the largest byte bound Args accepts, whatever
	// the caller asks: MAX_ARG_STRLEN, one page run of strings.
	ArgsMaxBytesLimit = 128 << 10
)

// PathAt returns the full path of the struct path (vfsmount, dentry) at p.
func (o *OS) PathAt(p introspect.Va) (string, error) {
	if !o.isKernelPtr(uint64(p)) {
		return "", fmt.Errorf("path %v: %w", p, ErrBadPointer)
	}
	mnt, err := o.ptr(p+introspect.Va(o.off.pathMnt), "path mnt")
	if err != nil {
		return "", err
	}
	d, err := o.ptr(p+introspect.Va(o.off.pathDentry), "path dentry")
	if err != nil {
		return "", err
	}
	return o.DentryPath(mnt, d)
}

// ChildPath returns the path of dentry d, named in the directory whose
// struct path is at dir: the security_path_* hooks pass a directory and a
// dentry that may not be attached yet (the target of a rename), so the
// dentry's own name is joined to the directory's path rather than walked.
func (o *OS) ChildPath(dir, d introspect.Va) (string, error) {
	p, err := o.PathAt(dir)
	if err != nil {
		return "", fmt.Errorf("directory: %w", err)
	}
	if !o.isKernelPtr(uint64(d)) {
		return "", fmt.Errorf("dentry %v: %w", d, ErrBadPointer)
	}
	name, err := o.dentryName(d)
	if err != nil {
		return "", err
	}
	if len(p)+1+len(name) >= PathMax {
		return "", fmt.Errorf("path longer than %d bytes: %w", PathMax, ErrTooLong)
	}
	return path.Join(p, string(name)), nil
}

// FileOpenFlags returns f_flags (the open(2) flags) and f_mode (FMODE_*)
// of a struct file.
func (o *OS) FileOpenFlags(file introspect.Va) (flags, mode uint32, err error) {
	if !o.off.hasFileFlags {
		return 0, 0, fmt.Errorf("file.f_flags/f_mode not in profile")
	}
	if !o.isKernelPtr(uint64(file)) {
		return 0, 0, fmt.Errorf("file %v: %w", file, ErrBadPointer)
	}
	if flags, err = o.mem.ReadU32(o.kroot, file+introspect.Va(o.off.fileFlags)); err != nil {
		return 0, 0, fmt.Errorf("file %v f_flags: %w", file, err)
	}
	if mode, err = o.mem.ReadU32(o.kroot, file+introspect.Va(o.off.fileMode)); err != nil {
		return 0, 0, fmt.Errorf("file %v f_mode: %w", file, err)
	}
	return flags, mode, nil
}

// ExitCode returns task_struct.exit_code, the wait(2) status do_exit
// stores before it calls taskstats_exit.
func (o *OS) ExitCode(task introspect.Va) (uint32, error) {
	if !o.off.hasExitCode {
		return 0, fmt.Errorf("task_struct.exit_code not in profile")
	}
	if !o.isKernelPtr(uint64(task)) {
		return 0, fmt.Errorf("task %v: %w", task, ErrBadPointer)
	}
	v, err := o.mem.ReadU32(o.kroot, task+introspect.Va(o.off.taskExitCode))
	if err != nil {
		return 0, fmt.Errorf("task %v exit_code: %w", task, err)
	}
	return v, nil
}

// Args returns the argument vector of the task's program, read from its
// mm's argument area (mm->arg_start..arg_end, which the kernel fills at
// exec), at most maxCount strings from at most maxBytes bytes (values
// <= 0 take the defaults; maxBytes is capped at ArgsMaxBytesLimit).
// truncated reports that either bound cut the vector short.
func (o *OS) Args(t *Task, maxCount, maxBytes int) (args []string, truncated bool, err error) {
	if !o.off.hasArgs {
		return nil, false, fmt.Errorf("mm_struct.arg_start/arg_end not in profile")
	}
	if t.MM == 0 {
		return nil, false, fmt.Errorf("task %d is a kernel thread: %w", t.PID, ErrBadPointer)
	}
	if maxCount <= 0 {
		maxCount = DefaultArgsMax
	}
	if maxBytes <= 0 {
		maxBytes = DefaultArgsMaxBytes
	}
	maxBytes = min(maxBytes, ArgsMaxBytesLimit)
	start, err := o.mem.ReadU64(o.kroot, t.MM+introspect.Va(o.off.mmArgStart))
	if err != nil {
		return nil, false, fmt.Errorf("mm %v arg_start: %w", t.MM, err)
	}
	end, err := o.mem.ReadU64(o.kroot, t.MM+introspect.Va(o.off.mmArgEnd))
	if err != nil {
		return nil, false, fmt.Errorf("mm %v arg_end: %w", t.MM, err)
	}
	if start == 0 || end < start || o.isKernelPtr(start) || o.isKernelPtr(end-1) {
		return nil, false, fmt.Errorf("mm %v argument area %#x-%#x: %w", t.MM, start, end, ErrBadValue)
	}
	n := end - start
	if n > uint64(maxBytes) {
		n, truncated = uint64(maxBytes), true
	}
	root, err := o.TaskRoot(t)
	if err != nil {
		return nil, false, err
	}
	buf := make([]byte, n)
	if err := o.mem.Read(root, introspect.Va(start), buf); err != nil {
		return nil, false, fmt.Errorf("arguments of task %d at %#x: %w", t.PID, start, err)
	}
	args, cut := SplitArgs(buf, maxCount)
	return args, truncated || cut, nil
}

// SplitArgs splits a NUL-separated argument area into at most maxCount
// strings. A last string without its NUL (the area was cut) is kept;
// truncated reports that strings were left out or the last one cut.
func SplitArgs(b []byte, maxCount int) (args []string, truncated bool) {
	for len(b) > 0 {
		if len(args) == maxCount {
			return args, true
		}
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return append(args, string(b)), true
		}
		args = append(args, string(b[:i]))
		b = b[i+1:]
	}
	return args, false
}

// ReadUser fills p from user memory of the address space of the vCPU with
// registers regs; kernel addresses are refused, as in UserString.
func (o *OS) ReadUser(regs *amd64.Registers, va introspect.Va, p []byte) error {
	if va == 0 || o.isKernelPtr(uint64(va)) || o.isKernelPtr(uint64(va)+uint64(len(p))-1) {
		return fmt.Errorf("user buffer at %v: %w", va, ErrBadPointer)
	}
	if err := o.mem.Read(UserRoot(regs), va, p); err != nil {
		return fmt.Errorf("user buffer at %v: %w", va, err)
	}
	return nil
}

// IORequest is what an io_uring read/write request (struct io_kiocb, with
// its struct io_rw command data at the start) says about the I/O.
type IORequest struct {
	File   introspect.Va // io_kiocb.file
	Opcode uint8         // io_kiocb.opcode (IORING_OP_*)
	Addr   uint64        // io_rw.addr: the buffer, or the iovec array
	Len    uint32        // io_rw.len: bytes, or the number of iovecs
}

// IORequestOf reads an io_uring request.
func (o *OS) IORequestOf(req introspect.Va) (IORequest, error) {
	var r IORequest
	if !o.off.hasIOUring {
		return r, fmt.Errorf("io_kiocb/io_rw not in profile")
	}
	if !o.isKernelPtr(uint64(req)) {
		return r, fmt.Errorf("io_kiocb %v: %w", req, ErrBadPointer)
	}
	f, err := o.ptr(req+introspect.Va(o.off.ioReqFile), "io_kiocb file")
	if err != nil {
		return r, err
	}
	op, err := o.mem.ReadU8(o.kroot, req+introspect.Va(o.off.ioReqOpcode))
	if err != nil {
		return r, fmt.Errorf("io_kiocb %v opcode: %w", req, err)
	}
	addr, err := o.mem.ReadU64(o.kroot, req+introspect.Va(o.off.ioRwAddr))
	if err != nil {
		return r, fmt.Errorf("io_rw %v addr: %w", req, err)
	}
	n, err := o.mem.ReadU32(o.kroot, req+introspect.Va(o.off.ioRwLen))
	if err != nil {
		return r, fmt.Errorf("io_rw %v len: %w", req, err)
	}
	return IORequest{File: f, Opcode: op, Addr: addr, Len: n}, nil
}
