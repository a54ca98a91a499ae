package sim

import (
	"encoding/binary"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// AddressSpace builds and edits one set of guest page tables directly in
// guest memory (as the guest's OS would at boot, without events).
type AddressSpace struct {
	m *Machine
	// Root is the physical address of the top-level table (the CR3 value).
	Root introspect.Pa
	// Mode is 4- or 5-level paging.
	Mode paging.Mode
}

// NewAddressSpace allocates an empty top-level table.
func (m *Machine) NewAddressSpace(mode paging.Mode) (*AddressSpace, error) {
	if mode != paging.Level4 && mode != paging.Level5 {
		return nil, fmt.Errorf("sim: paging mode %d", mode)
	}
	g, err := m.AllocGuestFrame()
	if err != nil {
		return nil, err
	}
	return &AddressSpace{m: m, Root: g.Pa(), Mode: mode}, nil
}

// Clone returns an address space with a new top-level table that shares
// every top-level entry of as (so kernel mappings are shared, as between
// processes). Later Map calls in either space under an existing shared entry
// are seen by both.
func (as *AddressSpace) Clone() (*AddressSpace, error) {
	g, err := as.m.AllocGuestFrame()
	if err != nil {
		return nil, err
	}
	as.m.mu.Lock()
	copy(as.m.frame(g), as.m.frame(as.Root.Gfn()))
	as.m.mu.Unlock()
	return &AddressSpace{m: as.m, Root: g.Pa(), Mode: as.Mode}, nil
}

// Table flags used for intermediate entries: present and writable.
const tableFlags = paging.PTEPresent | paging.PTEWrite

// entry returns the guest-physical address of the entry mapping va at
// level stop, creating missing intermediate tables when create is set.
// The caller holds m.mu.
func (as *AddressSpace) entry(va introspect.Va, stop paging.Level, create bool) (introspect.Pa, error) {
	if !paging.Canonical(va, as.Mode) {
		return 0, fmt.Errorf("sim: %v is not canonical", va)
	}
	table := introspect.Pa(uint64(as.Root) & paging.AddrMask)
	for level := paging.Level(as.Mode); ; level-- {
		idx := (uint64(va) >> (12 + 9*uint(level-1))) & 0x1ff
		epa := table + introspect.Pa(idx*8)
		if level == stop {
			return epa, nil
		}
		fr := as.m.frame(epa.Gfn())
		if fr == nil {
			return 0, fmt.Errorf("sim: table %v outside memory", epa)
		}
		e := binary.LittleEndian.Uint64(fr[epa.Offset():])
		if e&paging.PTELarge != 0 && level <= 3 {
			return 0, fmt.Errorf("sim: %v is inside a large page at %v", va, level)
		}
		if e&paging.AddrMask == 0 {
			if !create {
				return 0, fmt.Errorf("sim: %v not mapped at %v", va, level)
			}
			g, err := as.m.allocGuest()
			if err != nil {
				return 0, err
			}
			e = uint64(g.Pa()) | tableFlags
			binary.LittleEndian.PutUint64(fr[epa.Offset():], e)
		}
		table = introspect.Pa(e & paging.AddrMask)
	}
}

func (as *AddressSpace) put(va introspect.Va, stop paging.Level, val uint64) error {
	as.m.mu.Lock()
	defer as.m.mu.Unlock()
	epa, err := as.entry(va, stop, true)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(as.m.frame(epa.Gfn())[epa.Offset():], val)
	return nil
}

// Map maps the 4 KiB page at va to frame gfn. flags adds entry bits
// (paging.PTEWrite, PTEUser, PTENX, PTEAccessed...); Present is implied.
func (as *AddressSpace) Map(va introspect.Va, gfn introspect.Gfn, flags uint64) error {
	return as.put(va, 1, uint64(gfn.Pa())|flags|paging.PTEPresent)
}

// Map2M maps the 2 MiB page at va (2 MiB aligned) to the 512 frames from
// gfn (512-aligned).
func (as *AddressSpace) Map2M(va introspect.Va, gfn introspect.Gfn, flags uint64) error {
	if uint64(va)%paging.Size2M != 0 || uint64(gfn)%512 != 0 {
		return fmt.Errorf("sim: Map2M %v -> %v: misaligned", va, gfn)
	}
	return as.put(va, 2, uint64(gfn.Pa())|flags|paging.PTEPresent|paging.PTELarge)
}

// MapNew maps n consecutive pages from va to fresh zeroed guest frames and
// returns the first frame.
func (as *AddressSpace) MapNew(va introspect.Va, n int, flags uint64) (introspect.Gfn, error) {
	var first introspect.Gfn
	for i := 0; i < n; i++ {
		g, err := as.m.AllocGuestFrame()
		if err != nil {
			return 0, err
		}
		if i == 0 {
			first = g
		}
		if err := as.Map(va+introspect.Va(i*introspect.PageSize), g, flags); err != nil {
			return 0, err
		}
	}
	return first, nil
}

// Entry returns the address and value of the entry that maps va at level.
func (as *AddressSpace) Entry(va introspect.Va, level paging.Level) (introspect.Pa, uint64, error) {
	as.m.mu.Lock()
	defer as.m.mu.Unlock()
	epa, err := as.entry(va, level, false)
	if err != nil {
		return 0, 0, err
	}
	return epa, binary.LittleEndian.Uint64(as.m.frame(epa.Gfn())[epa.Offset():]), nil
}

// Translate returns the guest-physical address of va (default view).
func (as *AddressSpace) Translate(va introspect.Va) (introspect.Pa, error) {
	return paging.Translate(peeker{as.m}, as.Root, va, as.Mode)
}

// Write fills guest virtual memory at va (default view, no events).
func (as *AddressSpace) Write(va introspect.Va, p []byte) error {
	for len(p) > 0 {
		pa, err := as.Translate(va)
		if err != nil {
			return err
		}
		n := min(len(p), introspect.PageSize-int(va.Offset()))
		if err := as.m.Poke(pa, p[:n]); err != nil {
			return err
		}
		p, va = p[n:], va+introspect.Va(n)
	}
	return nil
}

// Read reads guest virtual memory at va (default view, no events).
func (as *AddressSpace) Read(va introspect.Va, p []byte) error {
	for len(p) > 0 {
		pa, err := as.Translate(va)
		if err != nil {
			return err
		}
		n := min(len(p), introspect.PageSize-int(va.Offset()))
		if err := as.m.Peek(pa, p[:n]); err != nil {
			return err
		}
		p, va = p[n:], va+introspect.Va(n)
	}
	return nil
}

// peeker reads physical memory without counting driver calls.
type peeker struct{ m *Machine }

func (p peeker) ReadPhysical(pa introspect.Pa, b []byte) error { return p.m.Peek(pa, b) }
