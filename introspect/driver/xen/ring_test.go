package xen

import (
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// frontEnd plays Xen's side of the ring in tests, using the same layout
// constants the driver uses (checked against the C headers under the xen
// build tag).
type frontEnd struct {
	page    []byte
	reqProd uint32
	rspCons uint32
}

func newPage() []byte { return make([]byte, abi.PageSize) }

func (f *frontEnd) push(t testing.TB, b *[abi.RequestSize]byte) {
	t.Helper()
	off := slot(f.reqProd)
	copy(f.page[off:off+abi.EntrySize], b[:])
	f.reqProd++
	le.PutUint32(f.page[abi.OffReqProd:], f.reqProd)
}

func (f *frontEnd) pop(t testing.TB) (WireResponse, [abi.ResponseSize]byte, bool) {
	t.Helper()
	var raw [abi.ResponseSize]byte
	if f.rspCons == le.Uint32(f.page[abi.OffRspProd:]) {
		return WireResponse{}, raw, false
	}
	off := slot(f.rspCons)
	copy(raw[:], f.page[off:off+abi.EntrySize])
	f.rspCons++
	return WireResponse{
		Flags:              le.Uint32(raw[abi.OffFlags:]),
		Reason:             le.Uint32(raw[abi.OffReason:]),
		VCPU:               le.Uint32(raw[abi.OffVCPUID:]),
		Altp2mIdx:          le.Uint16(raw[abi.OffAltp2mIdx:]),
		FastSingleStepView: le.Uint16(raw[abi.OffU:]),
	}, raw, true
}

type reqSpec struct {
	flags, reason, vcpu uint32
	view                uint16
	gfn, offset, gla    uint64
	accessFlags         uint32
	insnLen             uint32
	trapType            uint8
	rip, cr3            uint64
}

func encodeRequest(s reqSpec) *[abi.RequestSize]byte {
	var b [abi.RequestSize]byte
	le.PutUint32(b[abi.OffVersion:], abi.InterfaceVersion)
	le.PutUint32(b[abi.OffFlags:], s.flags)
	le.PutUint32(b[abi.OffReason:], s.reason)
	le.PutUint32(b[abi.OffVCPUID:], s.vcpu)
	le.PutUint16(b[abi.OffAltp2mIdx:], s.view)
	u := b[abi.OffU:]
	switch s.reason {
	case abi.ReasonMemAccess:
		le.PutUint64(u[abi.OffMemAccessGFN:], s.gfn)
		le.PutUint64(u[abi.OffMemAccessOffset:], s.offset)
		le.PutUint64(u[abi.OffMemAccessGLA:], s.gla)
		le.PutUint32(u[abi.OffMemAccessFlags:], s.accessFlags)
	case abi.ReasonSoftwareBreakpoint:
		le.PutUint64(u[abi.OffDebugGFN:], s.gfn)
		le.PutUint32(u[abi.OffDebugInsnLength:], s.insnLen)
		u[abi.OffDebugType] = s.trapType
	case abi.ReasonSingleStep:
		le.PutUint64(u[abi.OffSingleStepGFN:], s.gfn)
	}
	d := b[abi.OffData:]
	le.PutUint64(d[abi.OffRegsRIP:], s.rip)
	le.PutUint64(d[abi.OffRegsCR3:], s.cr3)
	return &b
}

func TestRingRoundTrip(t *testing.T) {
	page := newPage()
	r, err := NewBackRing(page)
	if err != nil {
		t.Fatal(err)
	}
	r.InitShared()
	if got := le.Uint32(page[abi.OffReqEvent:]); got != 1 {
		t.Fatalf("req_event after init = %d, want 1", got)
	}
	f := &frontEnd{page: page}
	var buf [abi.RequestSize]byte
	// Run the indexes well past 2^32 wrap-around is not practical, so
	// start near it instead.
	const start = ^uint32(0) - 5
	f.reqProd, f.rspCons = start, start
	le.PutUint32(page[abi.OffReqProd:], start)
	le.PutUint32(page[abi.OffRspProd:], start)
	if err := r.SetIndexes(start, start); err != nil {
		t.Fatal(err)
	}
	for round := range 40 {
		n := round%abi.RingEntries + 1
		for i := range n {
			f.push(t, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSingleStep, vcpu: uint32(i), rip: uint64(round*100 + i)}))
		}
		if got, err := r.Unconsumed(); err != nil || got != n {
			t.Fatalf("round %d: Unconsumed = %d, %v; want %d", round, got, err, n)
		}
		for i := range n {
			ok, err := r.NextRequest(&buf)
			if !ok || err != nil {
				t.Fatalf("round %d req %d: NextRequest = %v, %v", round, i, ok, err)
			}
			q, err := DecodeRequest(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if q.Regs.RIP != uint64(round*100+i) || q.VCPU != uint32(i) {
				t.Fatalf("round %d: got request rip %d vcpu %d", round, q.Regs.RIP, q.VCPU)
			}
			w, err := BuildResponse(&q, driver.Response{})
			if err != nil {
				t.Fatal(err)
			}
			var out [abi.ResponseSize]byte
			w.Encode(&out)
			if _, err := r.PutResponse(&out); err != nil {
				t.Fatal(err)
			}
		}
		if ok, err := r.NextRequest(&buf); ok || err != nil {
			t.Fatalf("ring should be empty: %v %v", ok, err)
		}
		if _, err := r.PutResponse(&[abi.ResponseSize]byte{}); !errors.Is(err, ErrRingNoSlot) {
			t.Fatalf("extra response: err = %v, want ErrRingNoSlot", err)
		}
		for i := range n {
			w, raw, ok := f.pop(t)
			if !ok {
				t.Fatalf("round %d: response %d missing", round, i)
			}
			if le.Uint32(raw[abi.OffVersion:]) != abi.InterfaceVersion || w.VCPU != uint32(i) || w.Flags != abi.FlagVCPUPaused || w.Reason != abi.ReasonSingleStep {
				t.Fatalf("round %d: response %d = %+v", round, i, w)
			}
		}
		if le.Uint32(page[abi.OffReqEvent:]) != f.reqProd+1 {
			t.Fatalf("req_event = %d, want %d", le.Uint32(page[abi.OffReqEvent:]), f.reqProd+1)
		}
	}
}

func TestRingRejectsBadIndexes(t *testing.T) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	le.PutUint32(page[abi.OffReqProd:], abi.RingEntries+1) // more than the ring holds
	if _, err := r.Unconsumed(); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("overflowing req_prod: err = %v", err)
	}
	var buf [abi.RequestSize]byte
	if ok, err := r.NextRequest(&buf); ok || !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("NextRequest on corrupt ring = %v, %v", ok, err)
	}
	if _, err := r.FinalCheck(); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("FinalCheck on corrupt ring: %v", err)
	}
	// Producer moving backwards.
	r.SetIndexes(10, 8)
	le.PutUint32(page[abi.OffReqProd:], 9)
	if _, err := r.Unconsumed(); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("req_prod behind req_cons: err = %v", err)
	}
	if err := r.SetIndexes(100, 0); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("SetIndexes(100, 0) = %v", err)
	}
	if _, err := NewBackRing(make([]byte, 100)); err == nil {
		t.Fatal("short page accepted")
	}
}

func TestRingDoesNotOverrunUnanswered(t *testing.T) {
	// With all 8 slots consumed but unanswered, the producer may not
	// claim more, and the consumer must not read slots it still owes
	// responses for.
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	f := &frontEnd{page: page}
	var buf [abi.RequestSize]byte
	for i := range abi.RingEntries {
		f.push(t, encodeRequest(reqSpec{reason: abi.ReasonSingleStep, vcpu: uint32(i)}))
	}
	for range abi.RingEntries {
		if ok, err := r.NextRequest(&buf); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if r.Outstanding() != abi.RingEntries {
		t.Fatalf("Outstanding = %d", r.Outstanding())
	}
	f.push(t, encodeRequest(reqSpec{reason: abi.ReasonSingleStep}))
	if _, err := r.Unconsumed(); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("9th request with 8 unanswered: err = %v", err)
	}
}

func TestFinalCheck(t *testing.T) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	if more, err := r.FinalCheck(); more || err != nil {
		t.Fatal(more, err)
	}
	if le.Uint32(page[abi.OffReqEvent:]) != 1 {
		t.Fatal("req_event not re-armed")
	}
	f := &frontEnd{page: page}
	f.push(t, encodeRequest(reqSpec{reason: abi.ReasonSingleStep}))
	if more, err := r.FinalCheck(); !more || err != nil {
		t.Fatal(more, err)
	}
}

func TestPutResponseNotify(t *testing.T) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	f := &frontEnd{page: page}
	var buf [abi.RequestSize]byte
	f.push(t, encodeRequest(reqSpec{reason: abi.ReasonSingleStep}))
	f.push(t, encodeRequest(reqSpec{reason: abi.ReasonSingleStep}))
	r.NextRequest(&buf)
	r.NextRequest(&buf)
	// rsp_event = 1: the first response crosses it.
	if notify, _ := r.PutResponse(&[abi.ResponseSize]byte{}); !notify {
		t.Fatal("first response should notify (rsp_event 1)")
	}
	if notify, _ := r.PutResponse(&[abi.ResponseSize]byte{}); notify {
		t.Fatal("second response should not notify (rsp_event still 1)")
	}
}

func TestEventDecoding(t *testing.T) {
	tests := []struct {
		name string
		spec reqSpec
		want driver.Event
		err  error
	}{
		{
			name: "breakpoint",
			spec: reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: 2, reason: abi.ReasonSoftwareBreakpoint, vcpu: 1, insnLen: 1, trapType: abi.EventTypeSWException, rip: 0xfffff80000001000, cr3: 0x1aa000},
			want: driver.Event{VCPU: 1, View: 2, Reason: driver.ReasonInterrupt, Vector: 3, InstructionLength: 1,
				Regs: amd64.Registers{RIP: 0xfffff80000001000, CR3: 0x1aa000}},
		},
		{
			name: "read of a hooked page",
			spec: reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: 1, reason: abi.ReasonMemAccess, gfn: 0x1234, offset: 0x10, gla: 0xfffff80000001010, accessFlags: abi.MemAccessR | abi.MemAccessGLAValid | abi.MemAccessFaultWithGLA},
			want: driver.Event{View: 1, Reason: driver.ReasonMemoryAccess, GPA: 0x1234010, GVA: 0xfffff80000001010, Access: introspect.AccessR},
		},
		{
			name: "write without gla",
			spec: reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonMemAccess, gfn: 7, offset: 8, gla: 0xdead, accessFlags: abi.MemAccessW},
			want: driver.Event{Reason: driver.ReasonMemoryAccess, GPA: 0x7008, Access: introspect.AccessW},
		},
		{
			name: "singlestep in default view (no altp2m flag)",
			spec: reqSpec{flags: abi.FlagVCPUPaused, view: 5, reason: abi.ReasonSingleStep, vcpu: 3},
			want: driver.Event{VCPU: 3, Reason: driver.ReasonSingleStep},
		},
		{name: "vcpu out of range", spec: reqSpec{reason: abi.ReasonSingleStep, vcpu: 4}, err: ErrBadRequest},
		{name: "huge vcpu", spec: reqSpec{reason: abi.ReasonSingleStep, vcpu: ^uint32(0)}, err: ErrBadRequest},
		{name: "offset past page", spec: reqSpec{reason: abi.ReasonMemAccess, offset: 4096, accessFlags: abi.MemAccessR}, err: ErrBadRequest},
		{name: "gfn past 52 bits", spec: reqSpec{reason: abi.ReasonMemAccess, gfn: 1 << 60, accessFlags: abi.MemAccessR}, err: ErrBadRequest},
		{name: "no access bits", spec: reqSpec{reason: abi.ReasonMemAccess}, err: ErrBadRequest},
		{name: "zero-length int3", spec: reqSpec{reason: abi.ReasonSoftwareBreakpoint}, err: ErrBadRequest},
		{name: "16-byte int3", spec: reqSpec{reason: abi.ReasonSoftwareBreakpoint, insnLen: 16}, err: ErrBadRequest},
		{name: "cpuid", spec: reqSpec{reason: abi.ReasonCPUID}, err: ErrUnhandledReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := DecodeRequest(encodeRequest(tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := q.Event(4)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Segments decode from zero bytes to zero values.
			if *ev != tt.want {
				t.Fatalf("event = %+v\nwant    %+v", *ev, tt.want)
			}
		})
	}
}

func TestDecodeRequestVersion(t *testing.T) {
	b := encodeRequest(reqSpec{reason: abi.ReasonSingleStep})
	le.PutUint32(b[abi.OffVersion:], 6)
	if _, err := DecodeRequest(b); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("version 6: err = %v", err)
	}
}

// sampleRegs is a vCPU state with every field the Xen encodings carry set
// to a distinct, plausible value, for round trips.
func sampleRegs() amd64.Registers {
	return amd64.Registers{
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
}

func TestRegistersRoundTrip(t *testing.T) {
	regs := sampleRegs()
	q := Request{Flags: abi.FlagVCPUPaused, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 2, DR6: 0xffff0ff0, DR7: 0x400, STAR: 0x23001000000000, GDTRBase: 0xfffff80000c00000, GDTRLimit: 0x57}
	w, err := BuildResponse(&q, driver.Response{Registers: &regs})
	if err != nil {
		t.Fatal(err)
	}
	if w.Flags != abi.FlagVCPUPaused|abi.FlagSetRegisters {
		t.Fatalf("flags = %#x", w.Flags)
	}
	var b [abi.ResponseSize]byte
	w.Encode(&b)
	// A response has the request's layout: decode it as one.
	le.PutUint32(b[abi.OffReason:], abi.ReasonSoftwareBreakpoint)
	got, err := DecodeRequest(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Regs != regs {
		t.Fatalf("registers round trip:\n got %+v\nwant %+v", got.Regs, regs)
	}
	if got.DR6 != q.DR6 || got.DR7 != q.DR7 || got.STAR != q.STAR || got.GDTRBase != q.GDTRBase || got.GDTRLimit != q.GDTRLimit {
		t.Fatalf("echoed registers lost: %+v", got)
	}
}

func TestBuildResponse(t *testing.T) {
	paused := Request{Flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, Altp2mIdx: 3, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 1}
	tests := []struct {
		name string
		q    Request
		r    driver.Response
		want WireResponse
		bad  bool
	}{
		{name: "resume", q: paused, want: WireResponse{Flags: abi.FlagVCPUPaused, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 1}},
		{
			// The seed's answer to its own INT3 and to a read of a hooked
			// page: one instruction in the default view, then back to 3.
			name: "fast singlestep in default view",
			q:    paused, r: driver.Response{FastSingleStep: true, SetView: true, View: 0},
			want: WireResponse{Flags: abi.FlagVCPUPaused | abi.FlagFastSingleStep | abi.FlagAlternateP2M, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 1, Altp2mIdx: 0, FastSingleStepView: 3},
		},
		{
			// The seed's answer to a page-table write.
			name: "toggle singlestep and set view",
			q:    paused, r: driver.Response{ToggleSingleStep: true, SetView: true, View: 0},
			want: WireResponse{Flags: abi.FlagVCPUPaused | abi.FlagToggleSingleStep | abi.FlagAlternateP2M, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 1},
		},
		{
			name: "back to monitor view",
			q:    Request{Flags: abi.FlagVCPUPaused, Reason: abi.ReasonSingleStep}, r: driver.Response{ToggleSingleStep: true, SetView: true, View: 3},
			want: WireResponse{Flags: abi.FlagVCPUPaused | abi.FlagToggleSingleStep | abi.FlagAlternateP2M, Reason: abi.ReasonSingleStep, Altp2mIdx: 3},
		},
		{
			name: "fast singlestep in the current view",
			q:    paused, r: driver.Response{FastSingleStep: true},
			want: WireResponse{Flags: abi.FlagVCPUPaused | abi.FlagFastSingleStep, Reason: abi.ReasonSoftwareBreakpoint, VCPU: 1, FastSingleStepView: 3},
		},
		{name: "both singlestep kinds", q: paused, r: driver.Response{ToggleSingleStep: true, FastSingleStep: true}, bad: true},
		{name: "singlestep on async event", q: Request{Reason: abi.ReasonMemAccess}, r: driver.Response{ToggleSingleStep: true}, bad: true},
		{name: "view switch on async event", q: Request{Reason: abi.ReasonMemAccess}, r: driver.Response{SetView: true, View: 1}, bad: true},
		{name: "plain resume of async event", q: Request{Reason: abi.ReasonMemAccess, VCPU: 2}, want: WireResponse{Reason: abi.ReasonMemAccess, VCPU: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := BuildResponse(&tt.q, tt.r)
			if tt.bad {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w != tt.want {
				t.Fatalf("got  %+v\nwant %+v", w, tt.want)
			}
			var b [abi.ResponseSize]byte
			w.Encode(&b)
			if le.Uint32(b[abi.OffVersion:]) != abi.InterfaceVersion || le.Uint32(b[abi.OffFlags:]) != tt.want.Flags ||
				le.Uint16(b[abi.OffAltp2mIdx:]) != tt.want.Altp2mIdx || le.Uint16(b[abi.OffU:]) != tt.want.FastSingleStepView {
				t.Fatalf("encoding does not match %+v", tt.want)
			}
		})
	}
}

func TestReinjection(t *testing.T) {
	q := Request{Reason: abi.ReasonSoftwareBreakpoint, InsnLength: 1, TrapType: abi.EventTypeSWException}
	v, typ, n, err := q.Reinjection()
	if err != nil || v != abi.VectorBreakpoint || typ != abi.EventTypeSWException || n != 1 {
		t.Fatalf("Reinjection = %d %d %d %v", v, typ, n, err)
	}
	q.TrapType = 0
	if _, typ, _, _ := q.Reinjection(); typ != abi.EventTypeSWException {
		t.Fatalf("unset trap type -> %d", typ)
	}
	if _, _, _, err := (&Request{Reason: abi.ReasonSingleStep}).Reinjection(); err == nil {
		t.Fatal("singlestep reinjected")
	}
	if _, _, _, err := (&Request{Reason: abi.ReasonSoftwareBreakpoint, InsnLength: 0}).Reinjection(); err == nil {
		t.Fatal("zero length reinjected")
	}
}

func TestSegmentAttributes(t *testing.T) {
	// 64-bit kernel code segment: type b, S, DPL 0, P, L, G.
	xen := uint32(0xb | 1<<4 | 1<<7 | 1<<9 | 1<<11)
	if vmx := ARToVMX(xen); vmx != 0xa09b {
		t.Fatalf("ARToVMX = %#x, want 0xa09b", vmx)
	}
	for ar := range uint32(1 << 12) {
		if ARFromVMX(ARToVMX(ar)) != ar {
			t.Fatalf("attr %#x does not round-trip", ar)
		}
	}
	// Granular limit: stored >> 12 in the vm_event selector register.
	s := selector(0xfffff|0xc09<<20, 0x10, 0)
	if s.Limit != 0xffffffff {
		t.Fatalf("granular limit = %#x", s.Limit)
	}
}
