package linux_test

import (
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux/linuxtest"
)

func TestProcesses(t *testing.T) {
	w := newWorld(t, slide)
	g := w.g
	idle := g.InitTask()
	g.LinkProcesses(w.initTask, w.shell)
	o := newOS(t, w)
	ps, err := o.Processes(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Addr != w.initTask || ps[0].PID != 1 || ps[1].Addr != w.shell || ps[1].PPID != 1 {
		t.Fatalf("processes %+v", ps)
	}
	if it, err := o.Task(idle); err != nil || it.PID != 0 || it.Comm != "swapper/0" || it.Parent != idle {
		t.Errorf("init_task %+v, %v", it, err)
	}
	if ps, err := o.Processes(1); !errors.Is(err, linux.ErrTooLong) || len(ps) != 1 {
		t.Errorf("bounded walk: %d processes, %v", len(ps), err)
	}

	// An empty list: init_task alone.
	g.LinkProcesses()
	if ps, err := o.Processes(0); err != nil || len(ps) != 0 {
		t.Errorf("empty list: %+v, %v", ps, err)
	}
}

func TestProcessesForged(t *testing.T) {
	cases := []struct {
		name  string
		forge func(w *world)
		want  error
	}{
		// shell.next points back at init: a ring that never returns to
		// init_task.
		{"loop", func(w *world) {
			w.g.PutU64(w.shell+linuxtest.TaskTasks, uint64(w.initTask+linuxtest.TaskTasks))
		}, linux.ErrLoop},
		{"null next", func(w *world) { w.g.PutU64(w.shell+linuxtest.TaskTasks, 0) }, linux.ErrBadPointer},
		{"user next", func(w *world) { w.g.PutU64(w.initTask+linuxtest.TaskTasks, 0x7fff0000) }, linux.ErrBadPointer},
		{"bad task", func(w *world) { w.g.PutU32(w.shell+linuxtest.TaskPID, 0xffffffff) }, linux.ErrBadValue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, slide)
			w.g.InitTask()
			w.g.LinkProcesses(w.initTask, w.shell)
			c.forge(w)
			o := newOS(t, w)
			ps, err := o.Processes(0)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if len(ps) > 2 {
				t.Errorf("%d processes from a forged list of 2", len(ps))
			}
		})
	}
}

// TestProcessesLongRing: a ring far longer than the bound stops at the bound.
func TestProcessesLongRing(t *testing.T) {
	w := newWorld(t, slide)
	w.g.InitTask()
	tasks := make([]introspect.Va, 300)
	for i := range tasks {
		tasks[i] = w.g.NewTask(linuxtest.Task{PID: uint32(100 + i), TGID: uint32(100 + i), Comm: "p"})
	}
	w.g.LinkProcesses(tasks...)
	o := newOS(t, w)
	if ps, err := o.Processes(0); err != nil || len(ps) != 300 {
		t.Fatalf("%d processes, %v", len(ps), err)
	}
	if ps, err := o.Processes(100); !errors.Is(err, linux.ErrTooLong) || len(ps) != 100 {
		t.Fatalf("bounded: %d processes, %v", len(ps), err)
	}
}

// TestVerify: the banner read at New is checked again; a reboot that moves
// the kernel (here: the banner overwritten, then the kernel's page tables
// wiped) is reported as ErrKernelChanged.
func TestVerify(t *testing.T) {
	w := newWorld(t, slide)
	o := newOS(t, w)
	if err := o.Verify(); err != nil {
		t.Fatal(err)
	}
	banner := introspect.Va(linuxtest.Symbols["linux_banner"] + slide)
	w.g.PutBytes(banner, []byte("Linux version 6.1.0-99-cloud-amd64 (synthetic) #2"))
	if err := o.Verify(); !errors.Is(err, linux.ErrKernelChanged) {
		t.Fatalf("overwritten banner: %v", err)
	}
	w.g.PutBytes(banner, []byte(linuxtest.Banner+"\n\x00"))
	if err := o.Verify(); err != nil {
		t.Fatalf("banner restored: %v", err)
	}
	clear(w.g.RAM[w.g.KernelRoot : w.g.KernelRoot+introspect.PageSize])
	if err := o.Verify(); !errors.Is(err, linux.ErrKernelChanged) {
		t.Fatalf("page tables wiped: %v", err)
	}
}
