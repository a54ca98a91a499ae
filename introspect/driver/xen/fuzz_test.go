package xen

import (
	"context"
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// FuzzRing drives the back end over an arbitrary shared page: the first 8
// bytes of the input pick the private indexes, the rest is the page. Every
// request is decoded, turned into an event and answered, as the driver's
// WaitEvent/Respond do. Nothing may panic, and the work is bounded by the
// ring size whatever the page says.
func FuzzRing(f *testing.F) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	fe := &frontEnd{page: page}
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: 1, reason: abi.ReasonSoftwareBreakpoint, insnLen: 1, trapType: abi.EventTypeSWException}))
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonMemAccess, vcpu: 1, gfn: 0x100, offset: 8, accessFlags: abi.MemAccessR | abi.MemAccessGLAValid}))
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSingleStep, vcpu: 5}))
	f.Add(append(make([]byte, 8), page...))
	f.Add([]byte{})
	f.Add(append([]byte{0xff, 0xff, 0xff, 0xff, 0xf8, 0xff, 0xff, 0xff}, page...))

	f.Fuzz(func(t *testing.T, data []byte) {
		var cons, prod uint32
		if len(data) >= 8 {
			cons, prod = le.Uint32(data), le.Uint32(data[4:])
			data = data[8:]
		}
		page := newPage()
		copy(page, data)
		r, err := NewBackRing(page)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetIndexes(cons, prod); err != nil {
			if !errors.Is(err, ErrRingCorrupt) {
				t.Fatalf("SetIndexes error not ErrRingCorrupt: %v", err)
			}
			return
		}
		var in [abi.RequestSize]byte
		var out [abi.ResponseSize]byte
		handled := 0
		for handled <= 2*abi.RingEntries {
			ok, err := r.NextRequest(&in)
			if err != nil {
				if !errors.Is(err, ErrRingCorrupt) {
					t.Fatalf("NextRequest error not ErrRingCorrupt: %v", err)
				}
				break
			}
			if !ok {
				break
			}
			handled++
			q, err := DecodeRequest(&in)
			if err == nil {
				ev, everr := q.Event(4)
				if everr == nil && (int(ev.VCPU) >= 4 || ev.GPA.Offset() != q.Offset) {
					t.Fatalf("event %+v escapes validation", ev)
				}
				resp := driver.Response{FastSingleStep: true}
				if ev != nil && ev.Reason == driver.ReasonMemoryAccess {
					resp = driver.Response{ToggleSingleStep: true, SetView: true}
				}
				if w, err := BuildResponse(&q, resp); err == nil {
					w.Encode(&out)
				}
				q.Reinjection()
			}
			// Every consumed request gets a response, valid or not.
			if _, err := r.PutResponse(&out); err != nil {
				t.Fatalf("PutResponse after consuming: %v", err)
			}
		}
		if handled > abi.RingEntries {
			t.Fatalf("consumed %d requests from a ring of %d without new requests", handled, abi.RingEntries)
		}
		r.FinalCheck()
	})
}

// FuzzDecodeRequest decodes one arbitrary entry and checks that accepted
// events respect their invariants.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, insnLen: 1})[:])
	f.Add(encodeRequest(reqSpec{reason: abi.ReasonMemAccess, gfn: 1, offset: 4095, accessFlags: 7})[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		var b [abi.RequestSize]byte
		copy(b[:], data)
		q, err := DecodeRequest(&b)
		if err != nil {
			return
		}
		ev, err := q.Event(64)
		if err != nil {
			return
		}
		if int(ev.VCPU) >= 64 {
			t.Fatalf("vcpu %d accepted", ev.VCPU)
		}
		if ev.Reason == driver.ReasonInterrupt && (ev.InstructionLength == 0 || ev.InstructionLength > 15) {
			t.Fatalf("instruction length %d accepted", ev.InstructionLength)
		}
		if ev.Reason == driver.ReasonMemoryAccess && ev.Access == 0 {
			t.Fatal("memory access without rights accepted")
		}
	})
}

// FuzzFindSaveRecord walks arbitrary HVM context blobs.
func FuzzFindSaveRecord(f *testing.F) {
	f.Add(append(saveRecord(abi.HVMSaveCodeCPU, 0, make([]byte, abi.HVMCPUSize)), saveRecord(0, 0, nil)...), uint16(0))
	f.Add([]byte{2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, uint16(0))
	f.Fuzz(func(t *testing.T, ctx []byte, inst uint16) {
		rec, err := FindSaveRecord(ctx, abi.HVMSaveCodeCPU, inst)
		if err != nil {
			return
		}
		if len(rec) > len(ctx) {
			t.Fatal("record longer than blob")
		}
		DecodeHVMCPU(rec)
	})
}

// FuzzDriverRing runs the driver's event loop (WaitEvent, Respond, then
// Close) over an arbitrary ring page on the fake hypervisor. Nothing may
// panic or hang, and after Close every request the driver consumed has
// exactly one response.
func FuzzDriverRing(f *testing.F) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	fe := &frontEnd{page: page}
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: 1, reason: abi.ReasonSoftwareBreakpoint, insnLen: 1, trapType: abi.EventTypeSWException}))
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonMemAccess, vcpu: 1, gfn: 3, accessFlags: abi.MemAccessW}))
	fe.push(f, encodeRequest(reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSingleStep, vcpu: 9}))
	fe.push(f, encodeRequest(reqSpec{reason: abi.ReasonMemAccess, vcpu: 0, gfn: 3, accessFlags: abi.MemAccessR}))
	f.Add(page, uint8(0))
	f.Add(page, uint8(0xff))
	f.Fuzz(runDriverRing)
}

// runDriverRing is FuzzDriverRing's body.
func runDriverRing(t *testing.T, data []byte, pick uint8) {
	fx := newFakeXen(2, 8)
	d, err := newDriver(fx, 1, 2, Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	view, _ := d.CreateView(introspect.AccessRWX)
	copy(fx.ring, data)
	ring := d.ring
	responses := []driver.Response{
		{},
		{FastSingleStep: true, SetView: true},
		{ToggleSingleStep: true, SetView: true, View: view},
		{ReinjectInterrupt: true},
		{Registers: &amd64.Registers{RIP: 1}},
	}
	ctx := context.Background()
	for i := range 2 * abi.RingEntries {
		if n, err := ring.Unconsumed(); err != nil || n == 0 {
			break
		}
		ev, err := d.WaitEvent(ctx)
		if err != nil {
			continue
		}
		// An invalid answer (e.g. single-step on an async event)
		// leaves the event pending for Close to answer.
		d.Respond(ev, responses[(int(pick)+i)%len(responses)])
	}
	d.Close()
	if ring.Outstanding() != 0 {
		t.Fatalf("%d consumed requests left unanswered after Close", ring.Outstanding())
	}
	if fx.paused != 0 {
		t.Fatalf("domain left paused %d times", fx.paused)
	}
}
