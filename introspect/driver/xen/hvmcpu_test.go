package xen

import (
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

func saveRecord(code, inst uint16, payload []byte) []byte {
	b := make([]byte, abi.HVMSaveDescSize, abi.HVMSaveDescSize+len(payload))
	le.PutUint16(b, code)
	le.PutUint16(b[2:], inst)
	le.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

func TestFindSaveRecord(t *testing.T) {
	var ctx []byte
	ctx = append(ctx, saveRecord(1, 0, make([]byte, 24))...) // HEADER
	for i := range 3 {
		cpu := make([]byte, abi.HVMCPUSize)
		le.PutUint64(cpu[abi.OffCPURIP:], uint64(0x1000+i))
		ctx = append(ctx, saveRecord(abi.HVMSaveCodeCPU, uint16(i), cpu)...)
	}
	ctx = append(ctx, saveRecord(abi.HVMSaveCodeEnd, 0, nil)...)
	for i := range 3 {
		rec, err := FindSaveRecord(ctx, abi.HVMSaveCodeCPU, uint16(i))
		if err != nil {
			t.Fatal(err)
		}
		regs, err := DecodeHVMCPU(rec)
		if err != nil || regs.RIP != uint64(0x1000+i) {
			t.Fatalf("vcpu %d: rip %#x err %v", i, regs.RIP, err)
		}
	}
	if _, err := FindSaveRecord(ctx, abi.HVMSaveCodeCPU, 3); !errors.Is(err, ErrNoSaveRecord) {
		t.Fatalf("missing instance: %v", err)
	}
	// A length that overruns the blob.
	bad := saveRecord(abi.HVMSaveCodeCPU, 0, make([]byte, 16))
	le.PutUint32(bad[4:], 1<<31)
	if _, err := FindSaveRecord(bad, abi.HVMSaveCodeCPU, 1); err == nil || errors.Is(err, ErrNoSaveRecord) {
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
	regs := sampleRegs()
	rec := make([]byte, abi.HVMCPUSize)
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
	for _, off := range []int{0, 511, abi.OffCPUDR0, abi.OffCPUMsrSTAR, abi.OffCPUMsrCSTAR, abi.HVMCPUSize - 1} {
		if rec[off] != 0xa5 {
			t.Fatalf("byte %d not owned by Registers was changed", off)
		}
	}
	if err := EncodeHVMCPU(rec[:10], &regs); err == nil {
		t.Fatal("short record encoded")
	}
}
