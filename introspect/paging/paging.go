// Package paging translates AMD64 guest virtual addresses to guest physical
// addresses by walking the guest's own page tables in guest physical memory,
// and reads guest virtual memory through those translations.
//
// It supports 4-level and 5-level (LA57) paging, 1 GiB and 2 MiB pages, and
// caches translations until the caller flushes them: a cached translation can
// go stale whenever the guest edits its page tables, so an event loop flushes
// at every event.
package paging

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// Mode is the paging mode of an address space.
type Mode uint8

// Paging modes.
const (
	Level4 Mode = 4
	Level5 Mode = 5
)

// Page table entry bits.
const (
	PTEPresent  = 1 << 0
	PTEWrite    = 1 << 1
	PTEUser     = 1 << 2
	PTEAccessed = 1 << 5
	PTEDirty    = 1 << 6
	PTELarge    = 1 << 7 // PS: the entry maps a 2 MiB (PDE) or 1 GiB (PDPTE) page
	PTENX       = 1 << 63

	// AddrMask selects the physical address bits 12-51 of an entry.
	AddrMask = 0x000f_ffff_ffff_f000
	// addrMask2M and addrMask1G also clear the PAT bit (bit 12) and the
	// reserved bits below the large frame's alignment.
	addrMask2M = 0x000f_ffff_ffe0_0000
	addrMask1G = 0x000f_ffff_c000_0000
)

// Page sizes.
const (
	Size4K = 1 << 12
	Size2M = 1 << 21
	Size1G = 1 << 30
)

// Level numbers a table in a walk: 5 is the PML5, 4 the PML4, 3 the PDPT,
// 2 the page directory, 1 the page table.
type Level uint8

func (l Level) String() string {
	switch l {
	case 5:
		return "PML5"
	case 4:
		return "PML4"
	case 3:
		return "PDPT"
	case 2:
		return "PD"
	case 1:
		return "PT"
	}
	return fmt.Sprintf("level%d", uint8(l))
}

// ErrNotPresent is wrapped by a TranslationError when an entry of the walk
// is not present: the guest would take a page fault on that address.
var ErrNotPresent = errors.New("page not present")

// ErrNonCanonical is wrapped by a TranslationError for a non-canonical address.
var ErrNonCanonical = errors.New("non-canonical address")

// TranslationError tells where a walk stopped.
type TranslationError struct {
	VA    introspect.Va
	Root  introspect.Pa
	Level Level  // the table whose entry stopped the walk
	Entry uint64 // that entry's value, when it could be read
	Err   error  // ErrNotPresent, ErrNonCanonical, or the physical read error
}

func (e *TranslationError) Error() string {
	return fmt.Sprintf("translate %v (root %v): %v entry %#x: %v", e.VA, e.Root, e.Level, e.Entry, e.Err)
}

func (e *TranslationError) Unwrap() error { return e.Err }

// PageFault returns the virtual address whose translation failed because a
// page is not present, and true; or false when err is not such a failure.
// An event loop injects #PF for that address so that the guest pages it in.
func PageFault(err error) (introspect.Va, bool) {
	var te *TranslationError
	if errors.As(err, &te) && errors.Is(te.Err, ErrNotPresent) {
		return te.VA, true
	}
	return 0, false
}

// Step is one entry visited by a walk.
type Step struct {
	Level   Level
	EntryPA introspect.Pa // where the entry lives in guest physical memory
	Entry   uint64
}

// Walk is the result of a complete or partial translation.
type Walk struct {
	Steps    [5]Step
	N        int           // number of valid Steps
	PA       introspect.Pa // the translation, when Err is nil
	PageSize uint64        // Size4K, Size2M or Size1G, when Err is nil
}

// Canonical reports whether va is canonical in mode.
func Canonical(va introspect.Va, mode Mode) bool {
	bits := uint(48)
	if mode == Level5 {
		bits = 57
	}
	top := int64(va) >> (bits - 1)
	return top == 0 || top == -1
}

// WalkVA walks the tables under root for va, recording every entry it reads.
// On failure the partial walk is returned with a *TranslationError.
func WalkVA(mem driver.PhysReader, root introspect.Pa, va introspect.Va, mode Mode) (Walk, error) {
	var w Walk
	if !Canonical(va, mode) {
		return w, &TranslationError{VA: va, Root: root, Level: Level(mode), Err: ErrNonCanonical}
	}
	table := introspect.Pa(uint64(root) & AddrMask)
	buf := getScratch()
	defer putScratch(buf)
	for level := Level(mode); level >= 1; level-- {
		shift := 12 + 9*uint(level-1)
		idx := (uint64(va) >> shift) & 0x1ff
		epa := table + introspect.Pa(idx*8)
		if err := mem.ReadPhysical(epa, buf[:]); err != nil {
			return w, &TranslationError{VA: va, Root: root, Level: level, Err: fmt.Errorf("read entry at %v: %w", epa, err)}
		}
		e := binary.LittleEndian.Uint64(buf[:])
		w.Steps[w.N] = Step{Level: level, EntryPA: epa, Entry: e}
		w.N++
		if e&PTEPresent == 0 {
			return w, &TranslationError{VA: va, Root: root, Level: level, Entry: e, Err: ErrNotPresent}
		}
		switch {
		case level == 3 && e&PTELarge != 0:
			w.PA = introspect.Pa(e&addrMask1G | uint64(va)&(Size1G-1))
			w.PageSize = Size1G
			return w, nil
		case level == 2 && e&PTELarge != 0:
			w.PA = introspect.Pa(e&addrMask2M | uint64(va)&(Size2M-1))
			w.PageSize = Size2M
			return w, nil
		case level == 1:
			w.PA = introspect.Pa(e&AddrMask | uint64(va)&(Size4K-1))
			w.PageSize = Size4K
			return w, nil
		}
		table = introspect.Pa(e & AddrMask)
	}
	panic("unreachable")
}

// Translate returns the physical address of va under root.
func Translate(mem driver.PhysReader, root introspect.Pa, va introspect.Va, mode Mode) (introspect.Pa, error) {
	w, err := WalkVA(mem, root, va, mode)
	if err != nil {
		return 0, err
	}
	return w.PA, nil
}
