package sim

import (
	"context"
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

const fn = introspect.Va(0xffff_f800_0000_0100)

// guest returns a machine with one code page at fn's page, every entry
// already Accessed so that walks do not write.
func guest(t *testing.T, vcpus int) (*Machine, *AddressSpace, introspect.Gfn) {
	t.Helper()
	m := New(Config{Frames: 64, VCPUs: vcpus, Seed: 1})
	as, err := m.NewAddressSpace(paging.Level4)
	if err != nil {
		t.Fatal(err)
	}
	g, err := as.MapNew(fn.PageBase(), 1, paging.PTEAccessed)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Write(fn, []byte{0x55, 0x48}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < vcpus; i++ {
		if err := m.SetRegisters(introspect.VCPU(i), &amd64.Registers{CR3: uint64(as.Root)}); err != nil {
			t.Fatal(err)
		}
	}
	return m, as, g
}

func count(obs []Observation, k ObsKind) int {
	n := 0
	for _, o := range obs {
		if o.Kind == k {
			n++
		}
	}
	return n
}

func TestCallCompletesAndIdle(t *testing.T) {
	m, _, _ := guest(t, 1)
	m.Script(0, Call(fn, func(r *amd64.Registers) { r.RCX = 7 }), Read(fn, 2))
	if _, err := m.WaitEvent(context.Background()); !errors.Is(err, ErrIdle) {
		t.Fatalf("WaitEvent = %v, want ErrIdle", err)
	}
	obs := m.Observations()
	if count(obs, ObsCall) != 1 || count(obs, ObsRead) != 1 || obs[1].Mismatch {
		t.Fatalf("observations %v", obs)
	}
	r, _ := m.Registers(0)
	if r.RCX != 7 {
		t.Fatalf("RCX = %d", r.RCX)
	}
}

// TestHiddenBreakpointSemantics exercises what the view engine relies on:
// an execute-only remap to a shadow with INT3, a read violation answered by
// a fast single-step in the default view, and an INT3 event.
func TestHiddenBreakpointSemantics(t *testing.T) {
	m, _, g := guest(t, 1)
	v, err := m.CreateView(introspect.AccessRWX)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := m.AllocateFrame()
	page := make([]byte, introspect.PageSize)
	m.ReadPhysical(g.Pa(), page)
	page[fn.Offset()] = 0xcc
	m.WritePhysical(s.Pa(), page)
	m.SetAccess(v, s, introspect.AccessX)
	if err := m.ChangeGFN(v, g, s); err != nil {
		t.Fatal(err)
	}
	if to, a := m.Mapping(v, g); to != s || a != introspect.AccessX {
		t.Fatalf("mapping %v %v", to, a)
	}
	m.SwitchView(v)
	for _, mon := range []driver.Monitor{driver.MonitorBreakpoint, driver.MonitorSingleStep, driver.MonitorMemoryAccess} {
		m.EnableMonitor(mon)
	}
	m.Script(0, Read(fn, 1), Call(fn, nil))
	ctx := context.Background()

	ev, err := m.WaitEvent(ctx)
	if err != nil || ev.Reason != driver.ReasonMemoryAccess || ev.Access != introspect.AccessR || ev.GPA != g.Pa()+introspect.Pa(fn.Offset()) {
		t.Fatalf("event %+v, %v", ev, err)
	}
	m.Respond(ev, driver.Response{FastSingleStep: true, SetView: true, View: introspect.DefaultView})
	ev, err = m.WaitEvent(ctx)
	if err != nil || ev.Reason != driver.ReasonInterrupt || ev.Regs.RIP != uint64(fn) || ev.View != v {
		t.Fatalf("event %+v, %v", ev, err)
	}
	m.Respond(ev, driver.Response{FastSingleStep: true, SetView: true, View: introspect.DefaultView})
	if _, err := m.WaitEvent(ctx); !errors.Is(err, ErrIdle) {
		t.Fatal(err)
	}
	obs := m.Observations()
	if len(obs) != 2 || obs[0].Kind != ObsRead || obs[0].Data[0] != 0x55 || obs[0].Mismatch || obs[1].Kind != ObsCall {
		t.Fatalf("observations %v", obs)
	}
	if m.View(0) != v {
		t.Fatalf("vCPU in view %d after fast single-step", m.View(0))
	}
	if err := m.FreeFrame(s); err == nil {
		t.Fatal("freed a frame still mapped")
	}
	m.ChangeGFN(v, g, g)
	m.DestroyView(v)
	m.FreeFrame(s)
	for _, mon := range []driver.Monitor{driver.MonitorBreakpoint, driver.MonitorSingleStep, driver.MonitorMemoryAccess} {
		m.DisableMonitor(mon)
	}
	if err := m.Pristine(); err != nil {
		t.Fatal(err)
	}
}

func TestPageOutInAndAccessedBit(t *testing.T) {
	m, as, g := guest(t, 1)
	ptPA, pte, err := as.Entry(fn, 1)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := m.CreateView(introspect.AccessRWX)
	m.SetAccess(v, ptPA.Gfn(), introspect.AccessRX)
	m.SwitchView(v)
	m.EnableMonitor(driver.MonitorMemoryAccess)
	m.EnableMonitor(driver.MonitorSingleStep)
	m.Script(0, PageOut(fn, 1), Call(fn, nil))
	ctx := context.Background()

	// The PTE store traps.
	ev, err := m.WaitEvent(ctx)
	if err != nil || ev.Access != introspect.AccessW || ev.GPA != ptPA {
		t.Fatalf("event %+v, %v", ev, err)
	}
	m.Respond(ev, driver.Response{ToggleSingleStep: true, SetView: true, View: 0})
	ev, _ = m.WaitEvent(ctx)
	if ev.Reason != driver.ReasonSingleStep || ev.View != 0 {
		t.Fatalf("event %+v", ev)
	}
	m.Respond(ev, driver.Response{ToggleSingleStep: true, SetView: true, View: v})
	// The call faults; the guest pages in (a PTE store that traps, with A
	// clear), then the retried call's walk sets A: another trap.
	ev, _ = m.WaitEvent(ctx)
	if ev.Access != introspect.AccessW || ev.GPA != ptPA {
		t.Fatalf("event %+v", ev)
	}
	m.Respond(ev, driver.Response{ToggleSingleStep: true, SetView: true, View: 0})
	ev, _ = m.WaitEvent(ctx)
	m.Respond(ev, driver.Response{ToggleSingleStep: true, SetView: true, View: v})
	ev, _ = m.WaitEvent(ctx)
	if ev.Access != introspect.AccessW || ev.GPA != ptPA || ev.Regs.RIP != uint64(fn) {
		t.Fatalf("A-bit event %+v", ev)
	}
	m.Respond(ev, driver.Response{FastSingleStep: true, SetView: true, View: 0})
	if _, err := m.WaitEvent(ctx); !errors.Is(err, ErrIdle) {
		t.Fatal(err)
	}
	var pte2 [8]byte
	m.Peek(ptPA, pte2[:])
	if uint64(pte2[0])&paging.PTEAccessed == 0 || pte&paging.AddrMask != uint64(g.Pa()) {
		t.Fatalf("pte %x", pte2)
	}
	obs := m.Observations()
	kinds := []ObsKind{ObsPageOut, ObsException, ObsPageIn, ObsCall}
	if len(obs) != len(kinds) {
		t.Fatalf("observations %v", obs)
	}
	for i, k := range kinds {
		if obs[i].Kind != k {
			t.Fatalf("observation %d = %v, want %v", i, obs[i], k)
		}
	}
}

func TestFailInjection(t *testing.T) {
	m, _, _ := guest(t, 1)
	m.Fail("CreateView", 2)
	if _, err := m.CreateView(introspect.AccessRWX); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateView(introspect.AccessRWX); !errors.Is(err, ErrInjected) {
		t.Fatalf("second CreateView = %v", err)
	}
	if _, err := m.CreateView(introspect.AccessRWX); err != nil {
		t.Fatal(err)
	}
	if m.Calls("CreateView") != 3 {
		t.Fatal(m.Calls("CreateView"))
	}
}

func TestGuestInt3Unmonitored(t *testing.T) {
	m, as, _ := guest(t, 1)
	as.Write(fn+8, []byte{0xcc})
	m.Script(0, Int3(fn+8))
	m.WaitEvent(context.Background())
	obs := m.Observations()
	if len(obs) != 1 || obs[0].Vector != 3 || !obs[0].GuestCaused {
		t.Fatalf("observations %v", obs)
	}
}

func TestLargePageWalk(t *testing.T) {
	m := New(Config{Frames: 2048, Seed: 1})
	as, _ := m.NewAddressSpace(paging.Level5)
	base, err := m.AllocGuestFrames(512, 512)
	if err != nil {
		t.Fatal(err)
	}
	va := introspect.Va(0xffff_ff80_0020_0000)
	if err := as.Map2M(va, base, 0); err != nil {
		t.Fatal(err)
	}
	as.Write(va+0x3005, []byte{0x90})
	m.SetRegisters(0, &amd64.Registers{CR3: uint64(as.Root), CR4: amd64.CR4PAE | amd64.CR4LA57})
	m.Script(0, Call(va+0x3005, nil), PageOut(va, 2), PageIn(va, 2, false), Read(va+0x3005, 1))
	m.WaitEvent(context.Background())
	obs := m.Observations()
	if count(obs, ObsCall) != 1 || count(obs, ObsRead) != 1 || obs[len(obs)-1].Data[0] != 0x90 {
		t.Fatalf("observations %v", obs)
	}
}
