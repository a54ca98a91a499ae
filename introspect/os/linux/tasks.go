package linux

import (
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
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
	link := head + introspect.Va(o.off.taskTasks)
	seen := make(map[introspect.Va]struct{})
	var out []Task
	for cur := link; ; {
		next, err := o.ptr(cur, "task tasks.next")
		if err != nil {
			return out, fmt.Errorf("process list after %d: %w", len(out), err)
		}
		if next == link {
			return out, nil
		}
		if len(out) >= max {
			return out, fmt.Errorf("process list longer than %d: %w", max, ErrTooLong)
		}
		if _, dup := seen[next]; dup {
			return out, fmt.Errorf("process list entry %v seen twice: %w", next, ErrLoop)
		}
		seen[next] = struct{}{}
		t, err := o.Task(next - introspect.Va(o.off.taskTasks))
		if err != nil {
			return out, fmt.Errorf("process list entry %d: %w", len(out), err)
		}
		out = append(out, t)
		cur = next
	}
}
