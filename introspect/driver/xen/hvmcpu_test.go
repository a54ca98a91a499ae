package xen

import (
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

func saveRecord(code, inst uint16, payload []byte) []byte {
	b := make([]byte, hvmSaveDescSize, hvmSaveDescSize+len(payload))
	le.PutUint16(b, code)
	le.PutUint16(b[2:], inst)
	le.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

func TestFindSaveRecord(t *testing.T) {
	var ctx []byte
	ctx = append(ctx, saveRecord(1, 0, make([]byte, 24))...) // HEADER
	for i := range 3 {
		cpu := make([]byte, hvmCPUSize)
		le.PutUint64(cpu[offCPURIP:], uint64(0x1000+i))
		ctx = append(ctx, saveRecord(HVMSaveCodeCPU, uint16(i), cpu)...)
	}
	ctx = append(ctx, saveRecord(hvmSaveCodeEnd, 0, nil)...)
	for i := range 3 {
		rec, err := FindSaveRecord(ctx, HVMSaveCodeCPU, uint16(i))
		if err != nil {
			t.Fatal(err)
		}
		regs, err := DecodeHVMCPU(rec)
		if err != nil || regs.RIP != uint64(0x1000+i) {
			t.Fatalf("vcpu %d: rip %#x err %v", i, regs.RIP, err)
		}
	}
	if _, err := FindSaveRecord(ctx, HVMSaveCodeCPU, 3); !errors.Is(err, ErrNoSaveRecord) {
		t.Fatalf("missing instance: %v", err)
	}
	// A length that overruns the blob.
	bad := saveRecord(HVMSaveCodeCPU, 0, make([]byte, 16))
	le.PutUint32(bad[4:], 1<<31)
	if _, err := FindSaveRecord(bad, HVMSaveCodeCPU, 1); err == nil || errors.Is(err, ErrNoSaveRecord) {
		t.Fatalf("overrun: %v", err)
	}
	if _, err := FindSaveRecord(ctx[:5], 2, 0); err == nil {
		t.Fatal("truncated descriptor accepted")
	}
	if _, err := DecodeHVMCPU(make([]byte, 100)); err == nil {
		t.Fatal("short record decoded")
	}
}

func TestHVMCPURoundTrip(t *testing.T) {
	regs := amd64.Registers{
		RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RBP: 7, RSP: 8,
		R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 16,
		RIP: 0xfffff80012345678, RFLAGS: 0x246,
		CS:     amd64.Segment{Selector: 0x10, Limit: 0xffffffff, Attr: 0xa09b},
		SS:     amd64.Segment{Selector: 0x18, Limit: 0xffffffff, Attr: 0xc093},
		DS:     amd64.Segment{Selector: 0x2b, Limit: 0xffffffff, Attr: 0xc0f3},
		ES:     amd64.Segment{Selector: 0x2b, Limit: 0xffffffff, Attr: 0xc0f3},
		FS:     amd64.Segment{Selector: 0x53, Base: 0x7ff000, Limit: 0x3c00, Attr: 0x40f3},
		GS:     amd64.Segment{Selector: 0x2b, Base: 0xfffff80000ab0000, Limit: 0xffffffff, Attr: 0xc0f3},
		FSBase: 0x7ff000, GSBase: 0xfffff80000ab0000, KernelGSBase: 0x7ffe0000,
		CR0: 0x80050033, CR2: 0x1234, CR3: 0x1aa000, CR4: 0x350ef8,
		EFER: 0xd01, LSTAR: 0xfffff80000400000, SysenterEIP: 0xabc,
	}
	rec := make([]byte, hvmCPUSize)
	for i := range rec {
		rec[i] = 0xa5 // fields we do not own must survive
	}
	if err := EncodeHVMCPU(rec, &regs); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHVMCPU(rec)
	if err != nil {
		t.Fatal(err)
	}
	if got != regs {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, regs)
	}
	for _, off := range []int{0, 511, offCPUDR0, offCPUMsrSTAR, offCPUMsrCSTAR, hvmCPUSize - 1} {
		if rec[off] != 0xa5 {
			t.Fatalf("byte %d not owned by Registers was changed", off)
		}
	}
	if err := EncodeHVMCPU(rec[:10], &regs); err == nil {
		t.Fatal("short record encoded")
	}
}
