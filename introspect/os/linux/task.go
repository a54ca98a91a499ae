package linux

import (
	"bytes"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

// Task is the identity of a task_struct.
type Task struct {
	Addr introspect.Va // the task_struct
	PID  uint64        // task_struct.pid: the thread id
	TGID uint64        // task_struct.tgid: the process id
	// Parent is task_struct.real_parent and PPID its tgid.
	Parent      introspect.Va
	PPID        uint64
	Comm        string        // task_struct.comm
	GroupLeader introspect.Va // task_struct.group_leader
	MM          introspect.Va // task_struct.mm; 0 for kernel threads
}

// IsGroupLeader reports whether the task is its thread group's leader, i.e.
// a process rather than an additional thread.
func (t *Task) IsGroupLeader() bool { return t.PID == t.TGID }

// PerCPUBase returns the per-cpu area of the vCPU whose registers are regs.
// In kernel mode GS base holds it; in user mode SWAPGS has parked it in
// KernelGSBase. Whichever is a kernel address is taken, GS base first at
// CPL 0, so a stop inside the syscall entry before SWAPGS works too.
func PerCPUBase(regs *amd64.Registers) (introspect.Va, error) {
	first, second := regs.GSBase, regs.KernelGSBase
	if regs.CPL() != 0 {
		first, second = second, first
	}
	switch {
	case isKernelAddr(first, modeOf(regs)):
		return introspect.Va(first), nil
	case isKernelAddr(second, modeOf(regs)):
		return introspect.Va(second), nil
	}
	return 0, fmt.Errorf("GS base %#x, kernel GS base %#x: %w", regs.GSBase, regs.KernelGSBase, ErrBadPointer)
}

// CurrentTaskAddr returns the task_struct running on the vCPU whose
// registers are regs, from the per-cpu current task pointer.
func (o *OS) CurrentTaskAddr(regs *amd64.Registers) (introspect.Va, error) {
	base, err := PerCPUBase(regs)
	if err != nil {
		return 0, err
	}
	return o.ptr(base+introspect.Va(o.currentSym), "current_task")
}

// CurrentTask reads the task running on the vCPU whose registers are regs.
func (o *OS) CurrentTask(regs *amd64.Registers) (Task, error) {
	a, err := o.CurrentTaskAddr(regs)
	if err != nil {
		return Task{}, err
	}
	return o.Task(a)
}

// CurrentTasks returns the current task of every vCPU. A vCPU whose task
// cannot be read has the error in errs at its index.
func (o *OS) CurrentTasks() (tasks []Task, errs []error) {
	n := o.regs.VCPUs()
	tasks, errs = make([]Task, n), make([]error, n)
	for i := range n {
		regs, err := o.regs.Registers(introspect.VCPU(i))
		if err != nil {
			errs[i] = err
			continue
		}
		tasks[i], errs[i] = o.CurrentTask(&regs)
	}
	return tasks, errs
}

// Task reads the identity of the task_struct at addr.
func (o *OS) Task(addr introspect.Va) (Task, error) {
	t := Task{Addr: addr}
	if !o.isKernelPtr(uint64(addr)) {
		return t, fmt.Errorf("task %v: %w", addr, ErrBadPointer)
	}
	var err error
	if t.PID, t.TGID, err = o.pids(addr); err != nil {
		return t, err
	}
	if t.Comm, err = o.Comm(addr); err != nil {
		return t, err
	}
	parent, err := o.ptr(addr+introspect.Va(o.off.taskRealParent), "task real_parent")
	if err != nil {
		return t, err
	}
	t.Parent = parent
	if _, t.PPID, err = o.pids(parent); err != nil {
		return t, fmt.Errorf("parent of task %v: %w", addr, err)
	}
	if t.GroupLeader, err = o.ptr(addr+introspect.Va(o.off.taskGroupLeader), "task group_leader"); err != nil {
		return t, err
	}
	mm, err := o.mem.ReadVa(o.kroot, addr+introspect.Va(o.off.taskMM))
	if err != nil {
		return t, fmt.Errorf("task %v mm: %w", addr, err)
	}
	if mm != 0 && !o.isKernelPtr(uint64(mm)) {
		return t, fmt.Errorf("task %v mm %#x: %w", addr, uint64(mm), ErrBadPointer)
	}
	t.MM = mm
	return t, nil
}

// pids reads pid and tgid (pid_t, int32); negative values are forged.
func (o *OS) pids(task introspect.Va) (pid, tgid uint64, err error) {
	p, err := o.mem.ReadU32(o.kroot, task+introspect.Va(o.off.taskPID))
	if err != nil {
		return 0, 0, fmt.Errorf("task %v pid: %w", task, err)
	}
	g, err := o.mem.ReadU32(o.kroot, task+introspect.Va(o.off.taskTGID))
	if err != nil {
		return 0, 0, fmt.Errorf("task %v tgid: %w", task, err)
	}
	if int32(p) < 0 || int32(g) < 0 {
		return 0, 0, fmt.Errorf("task %v pid %d tgid %d: %w", task, int32(p), int32(g), ErrBadValue)
	}
	return uint64(p), uint64(g), nil
}

// Comm reads task_struct.comm (at most TaskCommLen-1 bytes).
func (o *OS) Comm(task introspect.Va) (string, error) {
	if !o.isKernelPtr(uint64(task)) {
		return "", fmt.Errorf("task %v: %w", task, ErrBadPointer)
	}
	var b [TaskCommLen]byte
	if err := o.mem.Read(o.kroot, task+introspect.Va(o.off.taskComm), b[:]); err != nil {
		return "", fmt.Errorf("task %v comm: %w", task, err)
	}
	if i := bytes.IndexByte(b[:], 0); i >= 0 {
		return string(b[:i]), nil
	}
	// The kernel always terminates comm; keep what fits.
	return string(b[:TaskCommLen-1]), nil
}

// ImagePath returns the path of the task's executable (mm->exe_file), or ""
// for a kernel thread, which has no mm.
func (o *OS) ImagePath(t *Task) (string, error) {
	if t.MM == 0 {
		return "", nil
	}
	f, err := o.mem.ReadVa(o.kroot, t.MM+introspect.Va(o.off.mmExeFile))
	if err != nil {
		return "", fmt.Errorf("mm %v exe_file: %w", t.MM, err)
	}
	if f == 0 {
		return "", nil
	}
	if !o.isKernelPtr(uint64(f)) {
		return "", fmt.Errorf("mm %v exe_file %#x: %w", t.MM, uint64(f), ErrBadPointer)
	}
	return o.FilePath(f)
}

// ThreadGroupLive returns signal_struct.live of the task: the number of
// threads of its process that have not yet started exiting. ok is false
// when the profile lacks the fields.
func (o *OS) ThreadGroupLive(task introspect.Va) (live int32, ok bool, err error) {
	if !o.off.hasSignal {
		return 0, false, nil
	}
	if !o.isKernelPtr(uint64(task)) {
		return 0, true, fmt.Errorf("task %v: %w", task, ErrBadPointer)
	}
	sig, err := o.ptr(task+introspect.Va(o.off.taskSignal), "task signal")
	if err != nil {
		return 0, true, err
	}
	v, err := o.mem.ReadU32(o.kroot, sig+introspect.Va(o.off.signalLive))
	if err != nil {
		return 0, true, fmt.Errorf("signal %v live: %w", sig, err)
	}
	return int32(v), true, nil
}

// OpenHowFlags reads open_how.flags of a struct open_how in kernel memory
// (the third argument of do_sys_openat2).
func (o *OS) OpenHowFlags(how introspect.Va) (uint64, error) {
	if !o.off.hasOpenHow {
		return 0, fmt.Errorf("open_how.flags not in profile")
	}
	if !o.isKernelPtr(uint64(how)) {
		return 0, fmt.Errorf("open_how %v: %w", how, ErrBadPointer)
	}
	v, err := o.mem.ReadU64(o.kroot, how+introspect.Va(o.off.openHowFlags))
	if err != nil {
		return 0, fmt.Errorf("open_how %v flags: %w", how, err)
	}
	return v, nil
}

// TaskRoot returns the translation root of a task's address space: the
// physical address of mm->pgd (the kernel copy under PTI, which maps user
// memory too). Use it to read user memory of a task that is not running
// on the vCPU at hand; for the current task, UserRoot(regs) is cheaper.
func (o *OS) TaskRoot(t *Task) (introspect.Pa, error) {
	if !o.off.hasPgd {
		return 0, fmt.Errorf("mm_struct.pgd not in profile")
	}
	if t.MM == 0 {
		return 0, fmt.Errorf("task %d is a kernel thread: %w", t.PID, ErrBadPointer)
	}
	pgd, err := o.ptr(t.MM+introspect.Va(o.off.mmPgd), "mm pgd")
	if err != nil {
		return 0, err
	}
	pa, err := o.mem.Translate(o.kroot, pgd)
	if err != nil {
		return 0, fmt.Errorf("mm %v pgd %v: %w", t.MM, pgd, err)
	}
	if pa.Offset() != 0 {
		return 0, fmt.Errorf("mm %v pgd %v not page aligned: %w", t.MM, pgd, ErrBadValue)
	}
	return pa, nil
}

// TaskUserString reads a NUL-terminated string of at most max bytes from
// the user memory of task t.
func (o *OS) TaskUserString(t *Task, va introspect.Va, max int) (string, error) {
	if va == 0 || o.isKernelPtr(uint64(va)) {
		return "", fmt.Errorf("user string at %v: %w", va, ErrBadPointer)
	}
	root, err := o.TaskRoot(t)
	if err != nil {
		return "", err
	}
	s, err := o.mem.ReadCString(root, va, max)
	if err != nil {
		return s, fmt.Errorf("user string of task %d at %v: %w", t.PID, va, err)
	}
	return s, nil
}
