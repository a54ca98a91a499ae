// Package introspect holds the vocabulary shared by the whole VMI library:
// guest address types, vCPU and view identifiers, and memory access rights.
//
// The library reads a guest from the hypervisor side. Everything a guest
// stores in its memory is untrusted input: code in this module treats every
// pointer, length and list read from the guest as possibly forged, bounds
// each walk, and returns errors rather than panicking.
package introspect

import "fmt"

// PageSize is the size of a base page on AMD64.
const PageSize = 4096

// PageShift is log2(PageSize).
const PageShift = 12

// Va is a guest virtual address.
type Va uint64

// Pa is a guest physical address.
type Pa uint64

// Gfn is a guest frame number: a guest physical address shifted right by
// PageShift.
type Gfn uint64

// Pa returns the physical address of the first byte of the frame.
func (g Gfn) Pa() Pa { return Pa(uint64(g) << PageShift) }

// Gfn returns the frame that holds the physical address.
func (p Pa) Gfn() Gfn { return Gfn(uint64(p) >> PageShift) }

// Offset returns the offset of the physical address inside its page.
func (p Pa) Offset() uint64 { return uint64(p) & (PageSize - 1) }

// Offset returns the offset of the virtual address inside its page.
func (v Va) Offset() uint64 { return uint64(v) & (PageSize - 1) }

// PageBase returns the virtual address rounded down to its page.
func (v Va) PageBase() Va { return v &^ (PageSize - 1) }

func (v Va) String() string  { return fmt.Sprintf("%#016x", uint64(v)) }
func (p Pa) String() string  { return fmt.Sprintf("%#x", uint64(p)) }
func (g Gfn) String() string { return fmt.Sprintf("gfn:%#x", uint64(g)) }

// VCPU identifies a virtual CPU of a guest, counted from zero.
type VCPU uint16

// View identifies an alternate second-level (EPT/NPT) view of guest physical
// memory, as Xen's altp2m provides. View 0 is the hypervisor's default view.
type View uint16

// DefaultView is the view the guest runs in unless an introspector switches it.
const DefaultView View = 0

// Access is a set of memory access rights in a view.
type Access uint8

// Access rights. They combine as a bit set.
const (
	AccessR Access = 1 << iota
	AccessW
	AccessX

	AccessNone Access = 0
	AccessRW          = AccessR | AccessW
	AccessRX          = AccessR | AccessX
	AccessRWX         = AccessR | AccessW | AccessX
)

// Has reports whether every right in want is in a.
func (a Access) Has(want Access) bool { return a&want == want }

func (a Access) String() string {
	b := []byte("---")
	if a&AccessR != 0 {
		b[0] = 'r'
	}
	if a&AccessW != 0 {
		b[1] = 'w'
	}
	if a&AccessX != 0 {
		b[2] = 'x'
	}
	return string(b)
}
