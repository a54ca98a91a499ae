package sim_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// printer reads the first argument (MS x64: RCX) of each hit as a pointer
// to a NUL-terminated string.
type printer struct{ mem *paging.Memory }

func (p printer) HandleHit(h *hook.Hit) error {
	s, err := p.mem.ReadCString(introspect.Pa(h.Ev.Regs.TranslationRoot()), introspect.Va(h.Ev.Regs.RCX), 64)
	if err != nil {
		return err // a page fault here makes the engine inject #PF and retry
	}
	fmt.Printf("%s(%q) on vCPU %d\n", h.Hook.Tag, s, h.Ev.VCPU)
	return nil
}

func (printer) Notice(n hook.Notice) { fmt.Println("notice:", n.Kind) }

// Example lays out a guest (page tables, a code page, a data page), scripts
// calls on two vCPUs, and runs the view engine on it.
func Example() {
	const (
		fn   = introspect.Va(0xffff_f800_0010_0040) // a kernel function
		data = introspect.Va(0xffff_f800_0020_0000) // its argument
	)
	m := sim.New(sim.Config{Frames: 256, VCPUs: 2, Seed: 1})

	// Page tables: one address space, a code page and a data page.
	as, _ := m.NewAddressSpace(paging.Level4)
	as.MapNew(fn.PageBase(), 1, 0)
	as.MapNew(data, 1, paging.PTENX)
	as.Write(fn, []byte{0x48, 0x89, 0x5c}) // the function's first bytes
	as.Write(data, []byte("C:\\file.txt\x00"))
	for v := range 2 {
		m.SetRegisters(introspect.VCPU(v), &amd64.Registers{CR3: uint64(as.Root)})
	}

	// Scripts: each vCPU calls fn with RCX = &data; vCPU 1 first pages the
	// argument out, so the handler's read faults and the engine injects #PF.
	arg := func(r *amd64.Registers) { r.RCX = uint64(data) }
	m.Script(0, sim.Call(fn, arg))
	m.Script(1, sim.PageOut(data, 1), sim.Call(fn, arg))

	mem := paging.NewMemory(m, paging.Level4)
	e, err := hook.NewViews(m, hook.ViewsOptions{Cache: mem.Cache})
	if err != nil {
		panic(err)
	}
	m.Pause()
	e.Add(hook.Hook{Addr: fn, Root: as.Root, Global: true, Tag: "NtCreateFile"})
	m.Resume()

	err = e.Run(context.Background(), printer{mem})
	fmt.Println("idle:", errors.Is(err, sim.ErrIdle))
	fmt.Println("close:", e.Close(), "pristine:", m.Pristine())
	calls := 0
	for _, o := range m.Observations() {
		if o.Kind == sim.ObsCall {
			calls++
		}
	}
	fmt.Println("calls completed:", calls)
	// Unordered output:
	// NtCreateFile("C:\\file.txt") on vCPU 0
	// notice: pagefault_injected
	// NtCreateFile("C:\\file.txt") on vCPU 1
	// idle: true
	// close: <nil> pristine: <nil>
	// calls completed: 2
}
