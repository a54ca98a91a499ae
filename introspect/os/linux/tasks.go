package linux

import (
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/internal/klist"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// MaxProcesses bounds a walk of the process list. Linux's pid_max is at
// most 4 Mi, but a list longer than this on a monitored guest is far more
// likely forged or torn than real.
const MaxProcesses = 1 << 16

// Processes walks the kernel's process list (init_task.tasks, one entry per
// thread group leader) and returns every process after the idle task, in
// list order. It reads at most max entries (MaxProcesses when max <= 0);
// a longer list gives ErrTooLong, an entry seen twice ErrLoop, and a
// pointer out of the kernel half ErrBadPointer, each with the tasks read so
// far. The list changes under a running guest, so a walk of an unpaused
// guest is a best-effort snapshot.
func (o *OS) Processes(max int) ([]Task, error) {
	if !o.off.hasTasks {
		return nil, fmt.Errorf("process list: field task_struct.tasks: %w", profile.ErrNotFound)
	}
	if max <= 0 {
		max = MaxProcesses
	}
	head, err := o.Symbol("init_task")
	if err != nil {
		return nil, fmt.Errorf("process list: %w", err)
	}
	var out []Task
	err = klist.Walk(head+introspect.Va(o.off.taskTasks), max,
		func(link introspect.Va) (introspect.Va, error) { return o.ptr(link, "task tasks.next") },
		func(link introspect.Va) error {
			t, err := o.Task(link - introspect.Va(o.off.taskTasks))
			if err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
	if err != nil {
		return out, fmt.Errorf("process list after %d: %w", len(out), err)
	}
	return out, nil
}
