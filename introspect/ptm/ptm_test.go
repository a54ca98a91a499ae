package ptm

import (
	"encoding/binary"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

const (
	va1 = introspect.Va(0xffff_f800_0000_1000)
	va2 = introspect.Va(0xffff_f800_0000_2000) // same page table as va1
	vaL = introspect.Va(0xffff_f800_0040_0000) // 2 MiB page
)

type fixture struct {
	m    *sim.Machine
	as   *sim.AddressSpace
	view introspect.View
	mon  *Monitor
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	m := sim.New(sim.Config{Frames: 2048})
	as, err := m.NewAddressSpace(paging.Level4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.MapNew(va1, 2, 0); err != nil {
		t.Fatal(err)
	}
	big, err := m.AllocGuestFrames(512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Map2M(vaL, big, 0); err != nil {
		t.Fatal(err)
	}
	v, err := m.CreateView(introspect.AccessRWX)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, as: as, view: v, mon: New(m, paging.Level4)}
}

// set stores an entry as the guest would, then tells the monitor.
func (f *fixture) set(t *testing.T, va introspect.Va, level paging.Level, val func(uint64) uint64) []Event {
	t.Helper()
	pa, old, err := f.as.Entry(va, level)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], val(old))
	f.m.Poke(pa, b[:])
	if !f.mon.MarkDirty(pa+3, f.view, 1) {
		t.Fatalf("entry %v of %v not watched", pa, va)
	}
	evs, err := f.mon.ProcessDirty(1)
	if err != nil {
		t.Fatal(err)
	}
	return append([]Event(nil), evs...)
}

func (f *fixture) access(t *testing.T, va introspect.Va, level paging.Level) introspect.Access {
	t.Helper()
	pa, _, err := f.as.Entry(va, level)
	if err != nil {
		t.Fatal(err)
	}
	_, a := f.m.Mapping(f.view, pa.Gfn())
	return a
}

func TestMonitorProtectsWalkAndRefcounts(t *testing.T) {
	f := newFixture(t)
	if err := f.mon.Monitor(va1+0x10, f.as.Root, f.view, "a"); err != nil {
		t.Fatal(err)
	}
	if err := f.mon.Monitor(va2, f.as.Root, f.view, "b"); err != nil {
		t.Fatal(err)
	}
	for level := paging.Level(4); level >= 1; level-- {
		if a := f.access(t, va1, level); a != introspect.AccessRX {
			t.Errorf("table of level %v: %v", level, a)
		}
	}
	if f.mon.MarkDirty(f.as.Root+8*3, f.view, 0) {
		t.Error("an entry nobody watches was marked dirty")
	}
	if err := f.mon.Unmonitor(va2, f.as.Root, f.view, "b"); err != nil {
		t.Fatal(err)
	}
	if a := f.access(t, va1, 1); a != introspect.AccessRX {
		t.Errorf("shared table unprotected while still watched: %v", a)
	}
	if err := f.mon.Unmonitor(va1, f.as.Root, f.view, "a"); err != nil {
		t.Fatal(err)
	}
	for level := paging.Level(4); level >= 1; level-- {
		if a := f.access(t, va1, level); a != introspect.AccessRWX {
			t.Errorf("table of level %v after unmonitor: %v", level, a)
		}
	}
	if f.mon.Pending() != 0 || f.mon.Len() != 0 {
		t.Fatalf("pending %d, len %d", f.mon.Pending(), f.mon.Len())
	}
}

func TestPageOutInMoveAndAccessedBits(t *testing.T) {
	f := newFixture(t)
	f.mon.Monitor(va1, f.as.Root, f.view, "a")
	pa, _ := f.as.Translate(va1)
	gfn := pa.Gfn()

	if evs := f.set(t, va1, 1, func(e uint64) uint64 { return e | paging.PTEAccessed | paging.PTEDirty }); len(evs) != 0 {
		t.Fatalf("A/D update gave %v", evs)
	}
	evs := f.set(t, va1, 1, func(e uint64) uint64 { return e &^ paging.PTEPresent })
	if len(evs) != 1 || evs[0].Kind != PageOut || evs[0].Gfn != gfn || evs[0].Tags[0] != "a" || evs[0].VA != va1 {
		t.Fatalf("page-out gave %+v", evs)
	}
	evs = f.set(t, va1, 1, func(e uint64) uint64 { return e | paging.PTEPresent })
	if len(evs) != 1 || evs[0].Kind != PageIn || evs[0].Gfn != gfn || evs[0].PageSize != paging.Size4K {
		t.Fatalf("page-in gave %+v", evs)
	}
	evs = f.set(t, va1, 1, func(e uint64) uint64 { return e&^paging.AddrMask | uint64(introspect.Gfn(77).Pa()) })
	if len(evs) != 2 || evs[0].Kind != PageOut || evs[0].Gfn != gfn || evs[1].Kind != PageIn || evs[1].Gfn != 77 {
		t.Fatalf("frame change gave %+v", evs)
	}
	if g, ok := f.mon.Present(va1, f.as.Root, f.view); !ok || g != 77 {
		t.Fatalf("present %v %v", g, ok)
	}
}

func TestUpperLevelSubtree(t *testing.T) {
	f := newFixture(t)
	f.mon.Monitor(va1, f.as.Root, f.view, "a")
	f.mon.Monitor(va2, f.as.Root, f.view, "b")
	ptPA, _, _ := f.as.Entry(va1, 1)
	evs := f.set(t, va1, 2, func(e uint64) uint64 { return e &^ paging.PTEPresent })
	if len(evs) != 2 || evs[0].Kind != PageOut || evs[1].Kind != PageOut {
		t.Fatalf("PDE clear gave %+v", evs)
	}
	if _, a := f.m.Mapping(f.view, ptPA.Gfn()); a != introspect.AccessRWX {
		t.Errorf("page table out of the walk still protected: %v", a)
	}
	// The guest brings the subtree back on a new table frame.
	nt, _ := f.m.AllocGuestFrame()
	buf := make([]byte, introspect.PageSize)
	f.m.Peek(ptPA.Gfn().Pa(), buf)
	f.m.Poke(nt.Pa(), buf)
	evs = f.set(t, va1, 2, func(e uint64) uint64 { return e&^paging.AddrMask | uint64(nt.Pa()) | paging.PTEPresent })
	if len(evs) != 2 || evs[0].Kind != PageIn || evs[1].Kind != PageIn {
		t.Fatalf("PDE set gave %+v", evs)
	}
	if _, a := f.m.Mapping(f.view, nt); a != introspect.AccessRX {
		t.Errorf("new page table not protected: %v", a)
	}
	// A store to the new table is seen.
	evs = f.set(t, va2, 1, func(e uint64) uint64 { return e &^ paging.PTEPresent })
	if len(evs) != 1 || evs[0].Kind != PageOut || evs[0].VA != va2 {
		t.Fatalf("PTE in new table gave %+v", evs)
	}
}

func TestLargePage(t *testing.T) {
	f := newFixture(t)
	va := vaL + 0x5123
	f.mon.Monitor(va, f.as.Root, f.view, "l")
	pa, _ := f.as.Translate(va)
	if g, ok := f.mon.Present(va, f.as.Root, f.view); !ok || g != pa.Gfn() {
		t.Fatalf("present %v %v, want %v", g, ok, pa.Gfn())
	}
	evs := f.set(t, vaL, 2, func(e uint64) uint64 { return e &^ paging.PTEPresent })
	if len(evs) != 1 || evs[0].Kind != PageOut || evs[0].PageSize != paging.Size2M || evs[0].VA != va.PageBase() {
		t.Fatalf("large page-out gave %+v", evs)
	}
	evs = f.set(t, vaL, 2, func(e uint64) uint64 { return e | paging.PTEPresent })
	if len(evs) != 1 || evs[0].Kind != PageIn || evs[0].Gfn != pa.Gfn() {
		t.Fatalf("large page-in gave %+v", evs)
	}
}

func TestFailuresLeaveNoProtection(t *testing.T) {
	for _, name := range []string{"ReadPhysical", "GetAccess", "SetAccess"} {
		for nth := 1; nth <= 5; nth++ {
			f := newFixture(t)
			f.m.Fail(name, nth)
			errM := f.mon.Monitor(va1, f.as.Root, f.view, "a")
			if err := f.mon.Close(); err != nil {
				if err := f.mon.Close(); err != nil {
					t.Errorf("%s #%d: close twice: %v", name, nth, err)
				}
			}
			for level := paging.Level(4); level >= 1; level-- {
				if a := f.access(t, va1, level); a != introspect.AccessRWX {
					t.Errorf("%s #%d (monitor: %v): level %v left %v", name, nth, errM, level, a)
				}
			}
		}
	}
}
