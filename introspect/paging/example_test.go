package paging_test

import (
	"encoding/binary"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// ram is guest physical memory as a byte slice: a driver.PhysReader is
// all that paging needs from a backend.
type ram []byte

func (r ram) ReadPhysical(pa introspect.Pa, p []byte) error {
	if uint64(pa)+uint64(len(p)) > uint64(len(r)) {
		return fmt.Errorf("read %v: %w", pa, driver.ErrOutOfRange)
	}
	copy(p, r[pa:])
	return nil
}

// set writes entry idx of the table at physical address table.
func (r ram) set(table, idx, entry uint64) {
	binary.LittleEndian.PutUint64(r[table+idx*8:], entry)
}

// Example lays out 4-level page tables by hand for one kernel page, walks
// them, reads a string through them, and then shows what a page the guest
// paged out looks like to a reader: an error that PageFault recognises,
// naming the address to inject #PF for.
func Example() {
	const (
		root, pdpt, pd, pt, page = 0x1000, 0x2000, 0x3000, 0x4000, 0x8000
		rw                       = paging.PTEPresent | paging.PTEWrite
	)
	// 0xffff800000201000: PML4 index 256, PDPT 0, PD 1, PT 1.
	va := introspect.Va(0xffff_8000_0020_1000)
	mem := make(ram, 0x10000)
	mem.set(root, 256, pdpt|rw)
	mem.set(pdpt, 0, pd|rw)
	mem.set(pd, 1, pt|rw)
	mem.set(pt, 1, page|rw|paging.PTENX)
	copy(mem[page+0x10:], "/etc/passwd\x00")

	w, err := paging.WalkVA(mem, root, va+0x10, paging.Level4)
	if err != nil {
		panic(err)
	}
	for _, s := range w.Steps[:w.N] {
		fmt.Printf("%-4v entry at %v = %#x\n", s.Level, s.EntryPA, s.Entry)
	}
	fmt.Printf("%v -> %v (%d KiB page)\n", va+0x10, w.PA, w.PageSize/1024)

	// Memory adds bounded reads and a translation cache.
	m := paging.NewMemory(mem, paging.Level4)
	s, err := m.ReadCString(root, va+0x10, 64)
	fmt.Printf("%q %v\n", s, err)

	// The guest pages the page out: it clears the present bit. Cached
	// translations go stale with the tables, so flush before reading.
	mem.set(pt, 1, page)
	m.Cache.Flush()
	_, err = m.ReadCString(root, va+0x10, 64)
	fault, ok := paging.PageFault(err)
	fmt.Println("page fault:", ok, fault)
	// Output:
	// PML4 entry at 0x1800 = 0x2003
	// PDPT entry at 0x2000 = 0x3003
	// PD   entry at 0x3008 = 0x4003
	// PT   entry at 0x4008 = 0x8000000000008003
	// 0xffff800000201010 -> 0x8010 (4 KiB page)
	// "/etc/passwd" <nil>
	// page fault: true 0xffff800000201010
}
