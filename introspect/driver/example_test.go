package driver_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// Example asks a backend (here the software model, driver/sim) for its
// capabilities, reads physical memory, and runs the event protocol the
// Views hook engine is built on: a view without execute rights on a code
// frame stops the vCPU that calls into it, and the response steps it once
// in the default view.
func Example() {
	const fn = introspect.Va(0xffff_f800_0010_0000) // a kernel function
	m := sim.New(sim.Config{Frames: 64, Seed: 1})
	as, _ := m.NewAddressSpace(paging.Level4)
	code, _ := as.MapNew(fn, 1, 0)
	as.Write(fn, []byte{0x55}) // push rbp
	m.SetRegisters(0, &amd64.Registers{CR3: uint64(as.Root)})
	m.Script(0, sim.Call(fn, nil))

	// Callers hold a driver.Driver and ask for more by type assertion.
	var d driver.Driver = m
	fmt.Println("vCPUs:", d.VCPUs())
	fmt.Println("native breakpoints:", driver.Has[driver.Breakpointer](d))
	fmt.Println("views:", driver.Has[driver.Views](d), "events:", driver.Has[driver.EventSource](d))

	b := make([]byte, 1)
	if err := d.ReadPhysical(introspect.Pa(uint64(code)<<12), b); err != nil {
		panic(err)
	}
	fmt.Printf("code byte: %#x\n", b[0])
	err := d.ReadPhysical(1<<40, b)
	fmt.Println("beyond RAM:", errors.Is(err, driver.ErrOutOfRange))

	views, events := d.(driver.Views), d.(driver.EventSource)
	v, _ := views.CreateView(introspect.AccessRWX)
	views.SetAccess(v, code, introspect.AccessRW)
	events.EnableMonitor(driver.MonitorMemoryAccess)
	views.SwitchView(v)

	ctx := context.Background()
	ev, err := events.WaitEvent(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%v on vCPU %d: %v at %v in view %d, code frame: %v\n", ev.Reason, ev.VCPU,
		ev.Access, introspect.Va(ev.Regs.RIP), ev.View, introspect.Gfn(ev.GPA>>12) == code)
	// Execute the one instruction in the default view, then come back.
	events.Respond(ev, driver.Response{FastSingleStep: true, SetView: true, View: introspect.DefaultView})
	_, err = events.WaitEvent(ctx)
	obs := m.Observations()
	fmt.Println("guest done:", errors.Is(err, sim.ErrIdle), "call completed:", len(obs) == 1 && obs[0].Kind == sim.ObsCall)

	// Leave the guest as it was found.
	events.DisableMonitor(driver.MonitorMemoryAccess)
	views.SwitchView(introspect.DefaultView)
	views.DestroyView(v)
	fmt.Println("close:", d.Close(), "pristine:", m.Pristine())
	// Output:
	// vCPUs: 1
	// native breakpoints: false
	// views: true events: true
	// code byte: 0x55
	// beyond RAM: true
	// memory-access on vCPU 0: --x at 0xfffff80000100000 in view 1, code frame: true
	// guest done: true call completed: true
	// close: <nil> pristine: <nil>
}
