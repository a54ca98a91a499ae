// Package amd64 describes the architectural state of an x86-64 vCPU as an
// introspector sees it: general-purpose and control registers, the MSRs
// that an OS layer needs (GS bases, EFER, LSTAR), and helpers to read them.
package amd64

// Registers is the state of one vCPU at a stop.
//
// Drivers fill what their hypervisor exposes; a field a driver cannot read is
// left zero and the driver documents it.
type Registers struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RBP, RSP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64

	CS, SS, DS, ES, FS, GS Segment

	FSBase       uint64
	GSBase       uint64
	KernelGSBase uint64 // MSR_KERNEL_GS_BASE: the value SWAPGS exchanges with GSBase

	CR0, CR2, CR3, CR4 uint64
	EFER               uint64
	LSTAR              uint64 // MSR_LSTAR: the 64-bit SYSCALL entry point
	SysenterEIP        uint64
}

// Segment is a segment register's selector and the parts of its hidden
// descriptor cache that introspection uses.
type Segment struct {
	Selector uint16
	Base     uint64
	Limit    uint32
	Attr     uint32 // access rights as VMX stores them; 0 when unknown
}

// Control register and MSR bits used by the library.
const (
	CR0PG    = 1 << 31 // paging enabled
	CR0WP    = 1 << 16 // write protect in supervisor mode
	CR4PAE   = 1 << 5  // physical address extension
	CR4LA57  = 1 << 12 // 5-level paging
	CR4PCIDE = 1 << 17 // process-context identifiers in CR3's low 12 bits
	EFERLME  = 1 << 8  // long mode enable
	EFERLMA  = 1 << 10 // long mode active
	RFLAGSTF = 1 << 8  // trap flag
	RFLAGSIF = 1 << 9  // interrupt enable
)

// CPL returns the current privilege level, taken from the RPL bits of CS
// (equal to CPL in long mode).
func (r *Registers) CPL() int { return int(r.CS.Selector & 3) }

// LongMode reports whether the vCPU runs in IA-32e mode.
func (r *Registers) LongMode() bool { return r.EFER&EFERLMA != 0 }

// FiveLevel reports whether 5-level paging (LA57) is enabled.
func (r *Registers) FiveLevel() bool { return r.CR4&CR4LA57 != 0 }

// TranslationRoot returns the physical address of the top-level page table
// with the PCID and flag bits of CR3 cleared.
func (r *Registers) TranslationRoot() uint64 { return CR3Root(r.CR3) }

// CR3Root clears the PCID (bits 0-11), and the no-flush and LAM bits (63-61)
// of a CR3 value, leaving the address of the top-level table.
func CR3Root(cr3 uint64) uint64 { return cr3 & 0x000f_ffff_ffff_f000 }

// SysVArg returns the i-th integer argument (from 0) passed in a register
// under the System V AMD64 calling convention, which Linux uses. The second
// result is false for i >= 6: the argument is then on the stack.
func (r *Registers) SysVArg(i int) (uint64, bool) {
	switch i {
	case 0:
		return r.RDI, true
	case 1:
		return r.RSI, true
	case 2:
		return r.RDX, true
	case 3:
		return r.RCX, true
	case 4:
		return r.R8, true
	case 5:
		return r.R9, true
	}
	return 0, false
}

// MSx64Arg returns the i-th integer argument (from 0) passed in a register
// under the Microsoft x64 calling convention, which Windows uses. The second
// result is false for i >= 4: the argument is then on the stack at
// RSP + 8*(i+1) on function entry (past the return address and home space).
func (r *Registers) MSx64Arg(i int) (uint64, bool) {
	switch i {
	case 0:
		return r.RCX, true
	case 1:
		return r.RDX, true
	case 2:
		return r.R8, true
	case 3:
		return r.R9, true
	}
	return 0, false
}
