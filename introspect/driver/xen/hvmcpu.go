package xen

import (
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// ErrNoSaveRecord is returned (wrapped) when an HVM context has no record
// of the wanted type and instance.
var ErrNoSaveRecord = errors.New("HVM save record not found")

// MaxHVMContext bounds the HVM context buffer (xc_domain_hvm_getcontext)
// that SetRegisters reads and writes back: 128 vCPUs with a few KiB of
// records each fit well below it.
const MaxHVMContext = 4 << 20

// maxSaveRecords bounds the walk over HVM save records.
const maxSaveRecords = 1 << 16

// FindSaveRecord returns the payload of the record (typecode, instance) in
// an HVM context blob, a sequence of struct hvm_save_descriptor
// {u16 typecode; u16 instance; u32 length} each followed by length bytes,
// ended by typecode END (0). Lengths that overrun the blob are errors.
func FindSaveRecord(ctx []byte, typecode, instance uint16) ([]byte, error) {
	off := 0
	for n := 0; n < maxSaveRecords; n++ {
		if len(ctx)-off < abi.HVMSaveDescSize {
			return nil, fmt.Errorf("HVM context: truncated descriptor at %d", off)
		}
		code := le.Uint16(ctx[off:])
		inst := le.Uint16(ctx[off+2:])
		length := le.Uint32(ctx[off+4:])
		off += abi.HVMSaveDescSize
		if uint64(length) > uint64(len(ctx)-off) {
			return nil, fmt.Errorf("HVM context: record %d/%d of %d bytes overruns the %d-byte blob at %d", code, inst, length, len(ctx), off)
		}
		if code == typecode && inst == instance {
			return ctx[off : off+int(length) : off+int(length)], nil
		}
		if code == abi.HVMSaveCodeEnd {
			break
		}
		off += int(length)
	}
	return nil, fmt.Errorf("%w: typecode %d instance %d", ErrNoSaveRecord, typecode, instance)
}

// segment register order in hvm_hw_cpu's sel/limit/base/arbytes arrays.
const (
	hvmSegCS = iota
	hvmSegDS
	hvmSegES
	hvmSegFS
	hvmSegGS
	hvmSegSS
)

// DecodeHVMCPU decodes an hvm_hw_cpu record (HVM_SAVE_CODE(CPU)).
func DecodeHVMCPU(b []byte) (amd64.Registers, error) {
	var r amd64.Registers
	if len(b) < abi.HVMCPUSize {
		return r, fmt.Errorf("hvm_hw_cpu record of %d bytes, want %d", len(b), abi.HVMCPUSize)
	}
	u64 := func(off int) uint64 { return le.Uint64(b[off:]) }
	gpr := func(i int) uint64 { return u64(abi.OffCPURAX + 8*i) }
	r.RAX, r.RBX, r.RCX, r.RDX = gpr(0), gpr(1), gpr(2), gpr(3)
	r.RBP, r.RSI, r.RDI, r.RSP = gpr(4), gpr(5), gpr(6), gpr(7)
	r.R8, r.R9, r.R10, r.R11 = gpr(8), gpr(9), gpr(10), gpr(11)
	r.R12, r.R13, r.R14, r.R15 = gpr(12), gpr(13), gpr(14), gpr(15)
	r.RIP, r.RFLAGS = u64(abi.OffCPURIP), u64(abi.OffCPURFLAGS)
	r.CR0, r.CR2, r.CR3, r.CR4 = u64(abi.OffCPUCR0), u64(abi.OffCPUCR2), u64(abi.OffCPUCR3), u64(abi.OffCPUCR4)
	seg := func(i int) amd64.Segment {
		return amd64.Segment{
			Selector: uint16(le.Uint32(b[abi.OffCPUCSSel+4*i:])),
			Limit:    le.Uint32(b[abi.OffCPUCSLimit+4*i:]),
			Base:     u64(abi.OffCPUCSBase + 8*i),
			Attr:     ARToVMX(le.Uint32(b[abi.OffCPUCSAR+4*i:]) & 0xfff),
		}
	}
	r.CS, r.DS, r.ES = seg(hvmSegCS), seg(hvmSegDS), seg(hvmSegES)
	r.FS, r.GS, r.SS = seg(hvmSegFS), seg(hvmSegGS), seg(hvmSegSS)
	r.FSBase, r.GSBase = r.FS.Base, r.GS.Base
	r.KernelGSBase = u64(abi.OffCPUShadowGS)
	r.SysenterEIP = u64(abi.OffCPUSysEIP)
	r.LSTAR = u64(abi.OffCPUMsrLSTAR)
	r.EFER = u64(abi.OffCPUMsrEFER)
	return r, nil
}

// EncodeHVMCPU writes r into an hvm_hw_cpu record in place, leaving the
// fields that amd64.Registers does not carry (FPU, debug registers, TR,
// LDTR, descriptor tables, other MSRs, TSC, pending event) as they were.
// FSBase and GSBase win over FS.Base and GS.Base, since they are the
// values an OS layer changes.
func EncodeHVMCPU(b []byte, r *amd64.Registers) error {
	if len(b) < abi.HVMCPUSize {
		return fmt.Errorf("hvm_hw_cpu record of %d bytes, want %d", len(b), abi.HVMCPUSize)
	}
	p64 := func(off int, v uint64) { le.PutUint64(b[off:], v) }
	for i, v := range [...]uint64{r.RAX, r.RBX, r.RCX, r.RDX, r.RBP, r.RSI, r.RDI, r.RSP,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15} {
		p64(abi.OffCPURAX+8*i, v)
	}
	p64(abi.OffCPURIP, r.RIP)
	p64(abi.OffCPURFLAGS, r.RFLAGS)
	p64(abi.OffCPUCR0, r.CR0)
	p64(abi.OffCPUCR2, r.CR2)
	p64(abi.OffCPUCR3, r.CR3)
	p64(abi.OffCPUCR4, r.CR4)
	fs, gs := r.FS, r.GS
	fs.Base, gs.Base = r.FSBase, r.GSBase
	for i, s := range [...]amd64.Segment{hvmSegCS: r.CS, hvmSegDS: r.DS, hvmSegES: r.ES, hvmSegFS: fs, hvmSegGS: gs, hvmSegSS: r.SS} {
		le.PutUint32(b[abi.OffCPUCSSel+4*i:], uint32(s.Selector))
		le.PutUint32(b[abi.OffCPUCSLimit+4*i:], s.Limit)
		p64(abi.OffCPUCSBase+8*i, s.Base)
		le.PutUint32(b[abi.OffCPUCSAR+4*i:], ARFromVMX(s.Attr))
	}
	p64(abi.OffCPUShadowGS, r.KernelGSBase)
	p64(abi.OffCPUSysEIP, r.SysenterEIP)
	p64(abi.OffCPUMsrLSTAR, r.LSTAR)
	p64(abi.OffCPUMsrEFER, r.EFER)
	return nil
}
