package qemu

import (
	"encoding/binary"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/gdbstub"
)

// field ties a register of the target description to amd64.Registers.
type field struct {
	reg gdbstub.Register
	get func(*amd64.Registers) uint64
	set func(*amd64.Registers, uint64)
}

// layout is where each register we use sits in the reply to g.
type layout struct {
	fields []field
	size   int // bytes of g needed to hold every field
}

// regFields names, in QEMU's target description, every register that
// amd64.Registers holds. The segment registers give only their selector.
var regFields = []struct {
	name string
	req  bool
	ptr  func(r *amd64.Registers) *uint64
	sel  func(r *amd64.Registers) *uint16
}{
	{"rax", true, func(r *amd64.Registers) *uint64 { return &r.RAX }, nil},
	{"rbx", true, func(r *amd64.Registers) *uint64 { return &r.RBX }, nil},
	{"rcx", true, func(r *amd64.Registers) *uint64 { return &r.RCX }, nil},
	{"rdx", true, func(r *amd64.Registers) *uint64 { return &r.RDX }, nil},
	{"rsi", true, func(r *amd64.Registers) *uint64 { return &r.RSI }, nil},
	{"rdi", true, func(r *amd64.Registers) *uint64 { return &r.RDI }, nil},
	{"rbp", true, func(r *amd64.Registers) *uint64 { return &r.RBP }, nil},
	{"rsp", true, func(r *amd64.Registers) *uint64 { return &r.RSP }, nil},
	{"r8", true, func(r *amd64.Registers) *uint64 { return &r.R8 }, nil},
	{"r9", true, func(r *amd64.Registers) *uint64 { return &r.R9 }, nil},
	{"r10", true, func(r *amd64.Registers) *uint64 { return &r.R10 }, nil},
	{"r11", true, func(r *amd64.Registers) *uint64 { return &r.R11 }, nil},
	{"r12", true, func(r *amd64.Registers) *uint64 { return &r.R12 }, nil},
	{"r13", true, func(r *amd64.Registers) *uint64 { return &r.R13 }, nil},
	{"r14", true, func(r *amd64.Registers) *uint64 { return &r.R14 }, nil},
	{"r15", true, func(r *amd64.Registers) *uint64 { return &r.R15 }, nil},
	{"rip", true, func(r *amd64.Registers) *uint64 { return &r.RIP }, nil},
	{"eflags", true, func(r *amd64.Registers) *uint64 { return &r.RFLAGS }, nil},
	{"cs", true, nil, func(r *amd64.Registers) *uint16 { return &r.CS.Selector }},
	{"ss", false, nil, func(r *amd64.Registers) *uint16 { return &r.SS.Selector }},
	{"ds", false, nil, func(r *amd64.Registers) *uint16 { return &r.DS.Selector }},
	{"es", false, nil, func(r *amd64.Registers) *uint16 { return &r.ES.Selector }},
	{"fs", false, nil, func(r *amd64.Registers) *uint16 { return &r.FS.Selector }},
	{"gs", false, nil, func(r *amd64.Registers) *uint16 { return &r.GS.Selector }},
	{"fs_base", true, func(r *amd64.Registers) *uint64 { return &r.FSBase }, nil},
	{"gs_base", true, func(r *amd64.Registers) *uint64 { return &r.GSBase }, nil},
	{"k_gs_base", true, func(r *amd64.Registers) *uint64 { return &r.KernelGSBase }, nil},
	{"cr0", true, func(r *amd64.Registers) *uint64 { return &r.CR0 }, nil},
	{"cr2", true, func(r *amd64.Registers) *uint64 { return &r.CR2 }, nil},
	{"cr3", true, func(r *amd64.Registers) *uint64 { return &r.CR3 }, nil},
	{"cr4", true, func(r *amd64.Registers) *uint64 { return &r.CR4 }, nil},
	{"efer", true, func(r *amd64.Registers) *uint64 { return &r.EFER }, nil},
}

func newLayout(td *gdbstub.TargetDesc) (layout, error) {
	var l layout
	for _, rf := range regFields {
		reg, ok := td.Reg(rf.name)
		if !ok {
			if rf.req {
				return l, fmt.Errorf("target description has no register %q (a QEMU x86-64 guest is needed)", rf.name)
			}
			continue
		}
		if reg.BitSize != 32 && reg.BitSize != 64 {
			return l, fmt.Errorf("register %q has %d bits", rf.name, reg.BitSize)
		}
		f := field{reg: reg}
		if rf.ptr != nil {
			ptr := rf.ptr
			f.get = func(r *amd64.Registers) uint64 { return *ptr(r) }
			f.set = func(r *amd64.Registers, v uint64) { *ptr(r) = v }
		} else {
			sel := rf.sel
			f.get = func(r *amd64.Registers) uint64 { return uint64(*sel(r)) }
			f.set = func(r *amd64.Registers, v uint64) { *sel(r) = uint16(v) }
		}
		l.fields = append(l.fields, f)
		l.size = max(l.size, reg.Offset+reg.BitSize/8)
	}
	return l, nil
}

// decode fills r from a reply to g.
func (l *layout) decode(raw []byte, r *amd64.Registers) error {
	if len(raw) < l.size {
		return fmt.Errorf("g reply has %d bytes, want at least %d", len(raw), l.size)
	}
	for _, f := range l.fields {
		b := raw[f.reg.Offset:]
		if f.reg.BitSize == 32 {
			f.set(r, uint64(binary.LittleEndian.Uint32(b)))
		} else {
			f.set(r, binary.LittleEndian.Uint64(b))
		}
	}
	r.FS.Base, r.GS.Base = r.FSBase, r.GSBase
	return nil
}
