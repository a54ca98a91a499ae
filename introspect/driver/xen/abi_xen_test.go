//go:build xen

package xen

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// TestABIAgainstRingMacros runs Xen's side of the ring with the real
// ring.h macros in C (SHARED_RING_INIT, FRONT_RING_INIT, RING_GET_REQUEST,
// RING_PUSH_REQUESTS, RING_GET_RESPONSE) over requests filled through the
// C structs, and our side with BackRing, DecodeRequest and Encode, for
// several laps of the ring.
func TestABIAgainstRingMacros(t *testing.T) {
	fe := newCFront()
	if fe == nil {
		t.Fatal("C front end allocation failed")
	}
	defer fe.free()
	r, err := NewBackRing(fe.page())
	if err != nil {
		t.Fatal(err)
	}
	// No InitShared: the C side initialised the header; BackRing must
	// work from SHARED_RING_INIT's state.
	var raw [abi.RequestSize]byte
	next := uint32(0)
	for lap := range 6 {
		n := uint32(lap%abi.RingEntries + 3)
		if n > abi.RingEntries {
			n = abi.RingEntries
		}
		for range n {
			if !fe.push(next) {
				t.Fatalf("lap %d: C ring full after %d", lap, next)
			}
			next++
		}
		if n == abi.RingEntries && fe.push(999) {
			t.Fatal("C front end pushed into a full ring")
		}
		first := next - n
		for i := first; i < next; i++ {
			ok, err := r.NextRequest(&raw)
			if !ok || err != nil {
				t.Fatalf("request %d: %v %v", i, ok, err)
			}
			q, err := DecodeRequest(&raw)
			if err != nil {
				t.Fatal(err)
			}
			checkCRequest(t, i, &q)
			ev, err := q.Event(4)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			resp := driver.Response{FastSingleStep: true, SetView: true, View: 0}
			if i%2 == 1 {
				regs := ev.Regs
				regs.RIP += 1
				regs.RAX = 0xabcdef
				resp = driver.Response{ToggleSingleStep: true, SetView: true, View: 2, Registers: &regs}
			}
			w, err := BuildResponse(&q, resp)
			if err != nil {
				t.Fatal(err)
			}
			var b [abi.ResponseSize]byte
			w.Encode(&b)
			if _, err := r.PutResponse(&b); err != nil {
				t.Fatal(err)
			}
		}
		for i := first; i < next; i++ {
			got, ok := fe.pop()
			if !ok {
				t.Fatalf("C side sees no response %d", i)
			}
			if got.Version != abi.InterfaceVersion || got.VCPU != i%4 || got.Reason != cReason(i) {
				t.Fatalf("response %d header: %+v", i, got)
			}
			if i%2 == 0 {
				if got.Flags != abi.FlagVCPUPaused|abi.FlagFastSingleStep|abi.FlagAlternateP2M || got.Altp2mIdx != 0 || got.P2MIdx != uint16(i%3) {
					t.Fatalf("fast single-step response %d: %+v", i, got)
				}
			} else {
				if got.Flags != abi.FlagVCPUPaused|abi.FlagToggleSingleStep|abi.FlagAlternateP2M|abi.FlagSetRegisters || got.Altp2mIdx != 2 {
					t.Fatalf("toggle response %d: %+v", i, got)
				}
				if got.RIP != 0xfffff80000100000+uint64(i)+1 || got.RAX != 0xabcdef || got.R15 != uint64(i)<<32|16 || got.RFLAGS != 0x246 {
					t.Fatalf("registers of response %d as C reads them: %+v", i, got)
				}
			}
		}
		if _, ok := fe.pop(); ok {
			t.Fatal("extra response")
		}
	}
}

func cReason(i uint32) uint32 {
	return [...]uint32{abi.ReasonMemAccess, abi.ReasonSoftwareBreakpoint, abi.ReasonSingleStep}[i%3]
}

// checkCRequest compares a request decoded by Go with what
// vmi_fill_request(i) wrote through the C struct fields.
func checkCRequest(t *testing.T, i uint32, q *Request) {
	t.Helper()
	b := uint64(i) << 32
	want := amd64.Registers{
		RAX: b | 1, RCX: b | 2, RDX: b | 3, RBX: b | 4, RSP: b | 5, RBP: b | 6, RSI: b | 7, RDI: b | 8,
		R8: b | 9, R9: b | 10, R10: b | 11, R11: b | 12, R12: b | 13, R13: b | 14, R14: b | 15, R15: b | 16,
		RFLAGS: 0x246, RIP: 0xfffff80000100000 + uint64(i),
		CR0: 0x80050033, CR2: b | 0x2222, CR3: 0x1aa000 + uint64(i)<<12, CR4: 0x350ef8,
		SysenterEIP: b | 0x5e, EFER: 0xd01, LSTAR: 0xfffff80000400000 + uint64(i),
		FSBase: 0x7ff000 + uint64(i), GSBase: 0xfffff80000ab0000 + uint64(i), KernelGSBase: 0x7ffe0000 + uint64(i),
		CS: amd64.Segment{Selector: 0x10, Limit: 0xffffffff, Attr: 0xa09b},
		SS: amd64.Segment{Selector: 0x18, Limit: 0xffffffff, Attr: 0xc093},
		DS: amd64.Segment{Selector: 0x2b, Limit: 0xffffffff, Attr: 0xc0f3},
		ES: amd64.Segment{Selector: 0x2b, Limit: 0xffffffff, Attr: 0xc0f3},
		FS: amd64.Segment{Selector: 0x53, Base: 0x7ff000 + uint64(i), Limit: 0x3c00, Attr: 0x40f3},
		GS: amd64.Segment{Selector: 0x2b, Base: 0xfffff80000ab0000 + uint64(i), Limit: 0xffffffff, Attr: 0xc0f3},
	}
	if q.Regs != want {
		t.Fatalf("request %d registers:\n got %+v\nwant %+v", i, q.Regs, want)
	}
	if q.DR6 != 0xffff0ff0 || q.DR7 != 0x400 || q.STAR != 0x23001000000000 || q.GDTRBase != 0xfffff80000c00000 || q.GDTRLimit != 0x57 {
		t.Fatalf("request %d extra registers: %+v", i, q)
	}
	if q.VCPU != i%4 || q.Altp2mIdx != uint16(i%3) || q.Flags != abi.FlagVCPUPaused|abi.FlagAlternateP2M || q.Reason != cReason(i) {
		t.Fatalf("request %d header: %+v", i, q)
	}
	switch q.Reason {
	case abi.ReasonMemAccess:
		if q.GFN != 0x1000+uint64(i) || q.Offset != uint64(i*8)%4096 || q.GLA != 0xfffff80000000000+uint64(i) || q.AccessFlags != abi.MemAccessR|abi.MemAccessW|abi.MemAccessGLAValid {
			t.Fatalf("mem_access %d: %+v", i, q)
		}
		ev, _ := q.Event(4)
		if ev.Access != introspect.AccessRW || ev.GVA != introspect.Va(q.GLA) {
			t.Fatalf("mem_access event %d: %+v", i, ev)
		}
	case abi.ReasonSoftwareBreakpoint:
		if q.GFN != 0x2000+uint64(i) || q.InsnLength != 1 || q.TrapType != abi.EventTypeSWException {
			t.Fatalf("software_breakpoint %d: %+v", i, q)
		}
	case abi.ReasonSingleStep:
		if q.GFN != 0x3000+uint64(i) {
			t.Fatalf("singlestep %d: %+v", i, q)
		}
	}
}

func TestDecodeRequestMatchesCStruct(t *testing.T) {
	for i := range uint32(30) {
		raw := cRequestBytes(i)
		q, err := DecodeRequest(&raw)
		if err != nil {
			t.Fatal(err)
		}
		checkCRequest(t, i, &q)
	}
}

func TestHVMCPUMatchesCStruct(t *testing.T) {
	const seed = 0x1234_0000
	rec := cHVMCPURecord(seed)
	r, err := DecodeHVMCPU(rec[:])
	if err != nil {
		t.Fatal(err)
	}
	want := amd64.Registers{
		RAX: seed + 1, RBX: seed + 2, RCX: seed + 3, RDX: seed + 4, RBP: seed + 5, RSI: seed + 6, RDI: seed + 7, RSP: seed + 8,
		R8: seed + 9, R15: seed + 16, RIP: seed + 0x100, RFLAGS: 0x246,
		CR0: 0x80050033, CR2: seed + 0x200, CR3: seed << 12, CR4: 0x350ef8,
		CS:     amd64.Segment{Selector: 0x10, Limit: 0xffffffff, Attr: 0xa09b},
		SS:     amd64.Segment{Selector: 0x18, Attr: 0xc093},
		FS:     amd64.Segment{Selector: 0x53, Base: seed + 0x300},
		GS:     amd64.Segment{Selector: 0x2b, Limit: 0xfffff, Base: seed + 0x400},
		FSBase: seed + 0x300, GSBase: seed + 0x400, KernelGSBase: seed + 0x600,
		SysenterEIP: seed + 0x500, LSTAR: seed + 0x700, EFER: 0xd01,
	}
	if r != want {
		t.Fatalf("hvm_hw_cpu decode:\n got %+v\nwant %+v", r, want)
	}
	// Encoding into a copy of the record gives back the same bytes.
	cp := rec
	if err := EncodeHVMCPU(cp[:], &r); err != nil {
		t.Fatal(err)
	}
	if cp != rec {
		t.Fatal("EncodeHVMCPU(DecodeHVMCPU(rec)) changed the record")
	}
}
