package bpm

import (
	"bytes"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

const (
	code  = introspect.Va(0xffff_f800_0000_0000)
	codeB = code + 0x1000
)

type fixture struct {
	m     *sim.Machine
	as    *sim.AddressSpace
	other *sim.AddressSpace
	view  introspect.View
	bpm   *Manager
	ram   []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	m := sim.New(sim.Config{Frames: 64})
	as, err := m.NewAddressSpace(paging.Level4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.MapNew(code, 2, 0); err != nil {
		t.Fatal(err)
	}
	page := bytes.Repeat([]byte{0x90}, introspect.PageSize)
	as.Write(code, page)
	as.Write(codeB, page)
	other, _ := as.Clone()
	v, err := m.CreateView(introspect.AccessRWX)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, as: as, other: other, view: v, bpm: New(m, paging.Level4), ram: m.GuestRAM()}
}

func (f *fixture) key(va introspect.Va) Key { return Key{VA: va, Root: f.as.Root, View: f.view} }

// seen returns the byte at va as the guest would execute it in the view,
// and the frame's access there.
func (f *fixture) seen(t *testing.T, va introspect.Va) (byte, introspect.Access) {
	t.Helper()
	pa, err := f.as.Translate(va)
	if err != nil {
		t.Fatal(err)
	}
	to, a := f.m.Mapping(f.view, pa.Gfn())
	var b [1]byte
	f.m.Peek(to.Pa()+introspect.Pa(pa.Offset()), b[:])
	return b[0], a
}

func (f *fixture) pristine(t *testing.T) {
	t.Helper()
	if !bytes.Equal(f.ram, f.m.GuestRAM()) {
		t.Error("guest RAM changed")
	}
	for _, va := range []introspect.Va{code, codeB} {
		pa, _ := f.as.Translate(va)
		if to, a := f.m.Mapping(f.view, pa.Gfn()); to != pa.Gfn() || a != introspect.AccessRWX {
			t.Errorf("%v: mapped to %v with %v", va, to, a)
		}
	}
	if f.m.DestroyView(f.view) != nil {
		t.Fatal("destroy view")
	}
	if err := f.m.Pristine(); err != nil {
		t.Error(err)
	}
}

func TestArmRefcountRestore(t *testing.T) {
	f := newFixture(t)
	b1, err := f.bpm.Insert(f.key(code+0x10), false, "one")
	if err != nil || !b1.Armed {
		t.Fatalf("insert: %v %+v", err, b1)
	}
	f.bpm.Insert(f.key(code+0x20), true, "two")
	f.bpm.Insert(f.key(code+0x20), true, "two-again")
	if f.bpm.Shadows() != 1 {
		t.Fatalf("%d shadows for one page", f.bpm.Shadows())
	}
	for _, va := range []introspect.Va{code + 0x10, code + 0x20} {
		if b, a := f.seen(t, va); b != INT3 || a != introspect.AccessX {
			t.Fatalf("%v: byte %#x access %v", va, b, a)
		}
	}
	if b, _ := f.seen(t, code+0x11); b != 0x90 {
		t.Fatalf("neighbour byte %#x", b)
	}
	if !bytes.Equal(f.ram, f.m.GuestRAM()) {
		t.Fatal("guest RAM written")
	}
	// Lookup: exact root, global from any root, non-global not from others.
	if b := f.bpm.Lookup(code+0x10, f.as.Root, f.view); b != b1 {
		t.Fatal("exact lookup")
	}
	if b := f.bpm.Lookup(code+0x10, f.other.Root, f.view); b != nil {
		t.Fatal("non-global breakpoint matched another address space")
	}
	if b := f.bpm.Lookup(code+0x20, f.other.Root, f.view); b == nil || len(b.Tags()) != 2 {
		t.Fatalf("global lookup: %+v", b)
	}
	f.bpm.Remove(f.key(code+0x20), "two")
	if b, _ := f.seen(t, code+0x20); b != INT3 {
		t.Fatal("second reference removed the byte")
	}
	f.bpm.Remove(f.key(code+0x20), "two-again")
	if b, a := f.seen(t, code+0x20); b != 0x90 || a != introspect.AccessX {
		t.Fatalf("after last reference at one address: %#x %v", b, a)
	}
	if err := f.bpm.Remove(f.key(code+0x10), "one"); err != nil {
		t.Fatal(err)
	}
	if f.bpm.Len() != 0 || f.bpm.Pending() != 0 {
		t.Fatal("state left")
	}
	f.pristine(t)
}

func TestPendingPageInOut(t *testing.T) {
	f := newFixture(t)
	pte, v, _ := f.as.Entry(codeB, 1)
	put := func(val uint64) {
		var b [8]byte
		for i := range b {
			b[i] = byte(val >> (8 * i))
		}
		f.m.Poke(pte, b[:])
	}
	put(v &^ paging.PTEPresent)
	f.ram = f.m.GuestRAM()
	b, err := f.bpm.Insert(f.key(codeB+5), true, "p")
	if err != nil || b.Armed {
		t.Fatalf("insert on an absent page: %v %+v", err, b)
	}
	put(v)
	pa, _ := f.as.Translate(codeB)
	if err := f.bpm.PageIn(codeB, f.as.Root, f.view, pa.Gfn()); err != nil {
		t.Fatal(err)
	}
	if x, _ := f.seen(t, codeB+5); !b.Armed || x != INT3 {
		t.Fatal("not armed on page-in")
	}
	f.bpm.PageOut(codeB, f.as.Root, f.view)
	if b.Armed || f.bpm.Shadows() != 0 {
		t.Fatal("armed after page-out")
	}
	if to, a := f.m.Mapping(f.view, pa.Gfn()); to != pa.Gfn() || a != introspect.AccessRWX {
		t.Fatalf("old frame still mapped %v %v", to, a)
	}
	// In again, on another frame.
	ng, _ := f.m.AllocGuestFrame()
	page := make([]byte, introspect.PageSize)
	f.m.Peek(pa, page)
	f.m.Poke(ng.Pa(), page)
	put(v&^paging.AddrMask | uint64(ng.Pa()))
	f.bpm.PageIn(codeB, f.as.Root, f.view, ng)
	if x, _ := f.seen(t, codeB+5); !b.Armed || b.Gfn != ng || x != INT3 {
		t.Fatal("not armed on the new frame")
	}
	put(v &^ paging.PTEPresent)
	f.ram = f.m.GuestRAM()
	if err := f.bpm.Close(); err != nil {
		t.Fatal(err)
	}
	f.pristine(t)
}

func TestResync(t *testing.T) {
	f := newFixture(t)
	f.bpm.Insert(f.key(code+0x10), true, "r")
	pa, _ := f.as.Translate(code)
	f.m.Poke(pa+0x11, []byte{0xab}) // the guest rewrites its code
	f.m.Poke(pa+0x10, []byte{0x55}) // even under the breakpoint
	if b, _ := f.seen(t, code+0x11); b != 0x90 {
		t.Fatal("shadow changed by itself")
	}
	if err := f.bpm.Resync(f.view, pa.Gfn()); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.seen(t, code+0x11); b != 0xab {
		t.Fatal("shadow not resynced")
	}
	if b, _ := f.seen(t, code+0x10); b != INT3 {
		t.Fatal("breakpoint lost by resync")
	}
	f.ram = f.m.GuestRAM()
	f.bpm.Close()
	f.pristine(t)
}

// TestInsertFailures fails each driver call a first arming makes and
// checks that nothing is left, after Close where the undo itself failed.
func TestInsertFailures(t *testing.T) {
	for _, name := range []string{"ReadPhysical", "WritePhysical", "GetAccess", "SetAccess", "ChangeGFN", "AllocateFrame", "FreeFrame"} {
		for nth := 1; nth <= 4; nth++ {
			f := newFixture(t)
			f.m.Fail(name, nth)
			f.bpm.Insert(f.key(code+0x10), true, "a")
			f.bpm.Insert(f.key(code+0x30), true, "b")
			if err := f.bpm.Close(); err != nil {
				if err := f.bpm.Close(); err != nil {
					t.Errorf("%s #%d: close twice: %v", name, nth, err)
				}
			}
			if f.bpm.Pending() != 0 {
				t.Errorf("%s #%d: %d pending", name, nth, f.bpm.Pending())
			}
			t.Run(name, f.pristine)
		}
	}
}
