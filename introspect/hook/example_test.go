package hook_test

import (
	"context"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// gdbstub stands in for a hypervisor with breakpoints of its own (QEMU's
// gdbstub): it replays breakpoint stops, then ends the run.
type gdbstub struct {
	bps    map[introspect.Va]bool
	stops  []driver.Event
	cancel context.CancelFunc
}

func (g *gdbstub) InsertBreakpoint(va introspect.Va) error { g.bps[va] = true; return nil }
func (g *gdbstub) RemoveBreakpoint(va introspect.Va) error { delete(g.bps, va); return nil }
func (g *gdbstub) EnableMonitor(driver.Monitor) error      { return nil }
func (g *gdbstub) DisableMonitor(driver.Monitor) error     { return nil }
func (g *gdbstub) Respond(*driver.Event, driver.Response) error {
	return nil
}

func (g *gdbstub) WaitEvent(ctx context.Context) (*driver.Event, error) {
	if len(g.stops) == 0 {
		g.cancel() // the example is over
		return nil, ctx.Err()
	}
	ev := &g.stops[0]
	g.stops = g.stops[1:]
	return ev, nil
}

// stop is vCPU v halted at rip under the address space with root cr3.
func stop(v introspect.VCPU, rip introspect.Va, cr3 uint64) driver.Event {
	ev := driver.Event{VCPU: v, Reason: driver.ReasonBreakpoint}
	ev.Regs.RIP, ev.Regs.CR3 = uint64(rip), cr3
	return ev
}

// tagPrinter is a Handler printing hits and notices.
type tagPrinter struct{}

func (tagPrinter) HandleHit(h *hook.Hit) error {
	fmt.Printf("hit %s on vCPU %d\n", h.Hook.Tag, h.Ev.VCPU)
	return nil
}

func (tagPrinter) Notice(n hook.Notice) { fmt.Printf("notice %s at %v\n", n.Kind, n.Addr) }

// ExampleNative hooks a kernel function in every address space and a user
// function in one process only, runs the Native engine until the
// hypervisor has no more stops, and removes the hooks. The example of
// package driver/sim runs the Views engine, on a model with altp2m views.
func ExampleNative() {
	const (
		kernelFn = introspect.Va(0xffff_ffff_8100_1000)
		userFn   = introspect.Va(0x0040_1000)
		proc     = 0x7000 // the process's page-table root (CR3)
		other    = 0x9000 // another process's
	)
	ctx, cancel := context.WithCancel(context.Background())
	hv := &gdbstub{bps: map[introspect.Va]bool{}, cancel: cancel, stops: []driver.Event{
		stop(0, kernelFn, other), // global: fires under any CR3
		stop(1, userFn, other),   // same address, another process: filtered
		stop(1, userFn, proc),
		stop(0, 0x1234, proc), // no hook: a breakpoint removed while its stop was on the way
	}}
	e := hook.NewNative(hv)
	e.Add(hook.Hook{Addr: kernelFn, Global: true, Tag: "vfs_write"})
	e.Add(hook.Hook{Addr: userFn, Root: proc, Tag: "main"})
	fmt.Println("breakpoints:", len(hv.bps))

	if err := e.Run(ctx, tagPrinter{}); err != nil {
		fmt.Println("run:", err)
	}
	fmt.Println("close:", e.Close(), "breakpoints left:", len(hv.bps))
	// Output:
	// breakpoints: 2
	// hit vfs_write on vCPU 0
	// hit main on vCPU 1
	// notice stale_breakpoint at 0x0000000000001234
	// close: <nil> breakpoints left: 0
}
