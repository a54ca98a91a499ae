package xen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newTestDriver(t *testing.T, f *fakeXen, cacheFrames int) *Driver {
	t.Helper()
	d, err := newDriver(f, 7, f.nvcpus, Config{Logger: quiet, CacheFrames: cacheFrames})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDriverPhysicalMemory(t *testing.T) {
	f := newFakeXen(2, 16)
	d := newTestDriver(t, f, 3)
	// A read across three pages.
	buf := make([]byte, 2*abi.PageSize-10)
	pa := introspect.Pa(4*abi.PageSize - 5)
	if err := d.ReadPhysical(pa, buf); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, f.frames[3][abi.PageSize-5:]...), f.frames[4]...), f.frames[5][:len(buf)-5-abi.PageSize]...)
	if !bytes.Equal(buf, want) {
		t.Fatal("read across pages returned wrong bytes")
	}
	// A write across a boundary lands in both frames.
	if err := d.WritePhysical(introspect.Pa(9*abi.PageSize-2), []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.frames[8][abi.PageSize-2:], []byte{1, 2}) || !bytes.Equal(f.frames[9][:2], []byte{3, 4}) {
		t.Fatal("write across pages missed")
	}
	if f.mapped > 3 {
		t.Fatalf("%d frames mapped with a cache of 3", f.mapped)
	}
	// Out of range.
	if err := d.ReadPhysical(introspect.Gfn(16).Pa(), buf[:1]); !errors.Is(err, driver.ErrOutOfRange) {
		t.Fatalf("read past max gfn: %v", err)
	}
	// A frame that refuses write mappings is still readable, not writable.
	f.readOnly[12] = true
	if err := d.ReadPhysical(introspect.Gfn(12).Pa(), buf[:8]); err != nil {
		t.Fatalf("read of a read-only frame: %v", err)
	}
	if err := d.WritePhysical(introspect.Gfn(12).Pa(), buf[:8]); err == nil {
		t.Fatal("write to a read-only frame succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if f.mapped != 0 {
		t.Fatalf("%d mappings left after Close", f.mapped)
	}
	if err := d.ReadPhysical(0, buf[:1]); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

func TestDriverRegisters(t *testing.T) {
	f := newFakeXen(3, 4)
	d := newTestDriver(t, f, 0)
	r, err := d.Registers(1)
	if err != nil || r.RIP != 0x1001 || r.CR3 != 0x1aa000 {
		t.Fatalf("Registers(1) = rip %#x cr3 %#x, %v", r.RIP, r.CR3, err)
	}
	if _, err := d.Registers(3); err == nil {
		t.Fatal("vCPU 3 of 3 accepted")
	}
	r.RAX, r.RIP = 0x42, 0x2000
	if err := d.SetRegisters(1, &r); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Registers(1); got.RAX != 0x42 || got.RIP != 0x2000 {
		t.Fatalf("after SetRegisters: %+v", got)
	}
	if got, _ := d.Registers(0); got.RIP != 0x1000 || got.RAX != 0 {
		t.Fatalf("SetRegisters(1) changed vCPU 0: %+v", got)
	}
	if f.paused != 0 || f.called("pause") != 1 {
		t.Fatalf("SetRegisters pause balance: paused %d, pauses %d", f.paused, f.called("pause"))
	}
	f.fail["setHVMContext"] = errors.New("EINVAL")
	if err := d.SetRegisters(0, &r); err == nil || f.paused != 0 {
		t.Fatalf("failed SetRegisters: err %v, paused %d", err, f.paused)
	}
}

func TestDriverPauseAccounting(t *testing.T) {
	f := newFakeXen(1, 4)
	d := newTestDriver(t, f, 0)
	if err := d.Resume(); err == nil {
		t.Fatal("Resume without Pause accepted")
	}
	d.Pause()
	d.Pause()
	d.Resume()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if f.paused != 0 {
		t.Fatalf("Close left the domain paused %d times", f.paused)
	}
}

func push(t *testing.T, f *fakeXen, s reqSpec) { t.Helper(); f.fe.push(t, encodeRequest(s)) }

func TestDriverEventFlow(t *testing.T) {
	f := newFakeXen(2, 16)
	d := newTestDriver(t, f, 0)
	ctx := context.Background()
	if _, err := d.WaitEvent(ctx); err == nil {
		t.Fatal("WaitEvent without a monitor")
	}
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	if err := d.EnableMonitor(driver.MonitorSingleStep); err != nil {
		t.Fatal(err)
	}
	if le.Uint32(f.ring[abi.OffReqEvent:]) != 1 || le.Uint32(f.ring[abi.OffReqProd:]) != 0 {
		t.Fatal("ring header not initialised")
	}
	view, err := d.CreateView(introspect.AccessRWX)
	if err != nil {
		t.Fatal(err)
	}

	// Our INT3: fast single-step in the default view, back to our view.
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: uint16(view), reason: abi.ReasonSoftwareBreakpoint, vcpu: 1, insnLen: 1, trapType: abi.EventTypeSWException, rip: 0xfff0})
	ev, err := d.WaitEvent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Reason != driver.ReasonInterrupt || ev.VCPU != 1 || ev.View != view || ev.Regs.RIP != 0xfff0 {
		t.Fatalf("event %+v", ev)
	}
	if err := d.Respond(ev, driver.Response{SetView: true, View: 9}); err == nil {
		t.Fatal("response switching to a foreign view accepted")
	}
	if err := d.Respond(ev, driver.Response{FastSingleStep: true, SetView: true, View: introspect.DefaultView}); err != nil {
		t.Fatal(err)
	}
	w, _, ok := f.fe.pop(t)
	if !ok || w.Flags != abi.FlagVCPUPaused|abi.FlagFastSingleStep|abi.FlagAlternateP2M || w.Altp2mIdx != 0 || w.FastSingleStepView != uint16(view) || w.VCPU != 1 {
		t.Fatalf("response %+v ok %v", w, ok)
	}
	if err := d.Respond(ev, driver.Response{}); err == nil {
		t.Fatal("second response to one event accepted")
	}

	// A guest INT3: reinjected with its length.
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, vcpu: 0, insnLen: 1, trapType: abi.EventTypeSWException})
	ev, _ = d.WaitEvent(ctx)
	if err := d.Respond(ev, driver.Response{ReinjectInterrupt: true}); err != nil {
		t.Fatal(err)
	}
	if len(f.injected) != 1 || f.injected[0] != "vcpu=0 vec=3 type=6 ec=0xffffffff len=1 cr2=0x0" {
		t.Fatalf("injected %v", f.injected)
	}
	if w, _, _ := f.fe.pop(t); w.Flags != abi.FlagVCPUPaused {
		t.Fatalf("reinjection response %+v", w)
	}

	// A bad vCPU id is an error, answered so the ring stays balanced.
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSingleStep, vcpu: 77})
	if _, err := d.WaitEvent(ctx); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad vCPU: %v", err)
	}
	if w, _, ok := f.fe.pop(t); !ok || w.VCPU != 77 || w.Flags != abi.FlagVCPUPaused {
		t.Fatalf("bad request not echoed: %+v %v", w, ok)
	}
	// So is an unhandled reason.
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonCPUID, vcpu: 1})
	if _, err := d.WaitEvent(ctx); !errors.Is(err, ErrUnhandledReason) {
		t.Fatalf("cpuid: %v", err)
	}
	f.fe.pop(t)

	// An empty ring waits until the context ends.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := d.WaitEvent(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty ring: %v", err)
	}

	// A corrupt producer index is an error, not a hang or panic.
	le.PutUint32(f.ring[abi.OffReqProd:], f.fe.reqProd+100)
	if _, err := d.WaitEvent(ctx); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("corrupt ring: %v", err)
	}
	le.PutUint32(f.ring[abi.OffReqProd:], f.fe.reqProd)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDriverViewsAndFrames(t *testing.T) {
	f := newFakeXen(1, 16)
	d := newTestDriver(t, f, 0)
	v, err := d.CreateView(introspect.AccessRWX)
	if err != nil {
		t.Fatal(err)
	}
	if !f.altp2m || f.views[v] != xenmemAccessRWX {
		t.Fatalf("altp2m %v views %v", f.altp2m, f.views)
	}
	shadow, err := d.AllocateFrame()
	if err != nil || shadow != 16 {
		t.Fatalf("AllocateFrame = %v, %v", shadow, err)
	}
	if err := d.WritePhysical(shadow.Pa()+5, []byte{0xcc}); err != nil {
		t.Fatal(err)
	}
	if err := d.ChangeGFN(v, 3, shadow); err != nil {
		t.Fatal(err)
	}
	if err := d.SetAccess(v, 3, introspect.AccessX); err != nil {
		t.Fatal(err)
	}
	if a, err := d.GetAccess(v, 3); err != nil || a != introspect.AccessX {
		t.Fatalf("GetAccess = %v, %v", a, err)
	}
	if err := d.ChangeGFN(introspect.DefaultView, 3, shadow); err == nil {
		t.Fatal("remap in the default view accepted")
	}
	if err := d.ChangeGFN(v, 3, 1<<30); err == nil {
		t.Fatal("remap to a frame outside the guest accepted")
	}
	if err := d.SwitchView(v); err != nil || f.current != v {
		t.Fatal(err)
	}
	// Identity restore passes INVALID_GFN.
	if err := d.ChangeGFN(v, 3, 3); err != nil {
		t.Fatal(err)
	}
	if len(f.remap) != 0 {
		t.Fatalf("remap left: %v", f.remap)
	}
	// Destroying the active view moves the domain out first.
	if err := d.DestroyView(v); err != nil || f.current != 0 || len(f.views) != 0 {
		t.Fatalf("DestroyView: %v, current %d, views %v", err, f.current, f.views)
	}
	if err := d.FreeFrame(shadow); err != nil {
		t.Fatal(err)
	}
	if err := d.FreeFrame(2); err == nil {
		t.Fatal("freeing a guest frame accepted")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if f.altp2m {
		t.Fatal("altp2m left on")
	}
}

// armed builds the worst case for Close: monitors on, a view with a remap,
// the domain switched into it, default-view access changed, a shadow frame,
// a user pause, an event handed out and unanswered on a vCPU our response
// left single-stepping, and another request queued.
func armed(t *testing.T) (*fakeXen, *Driver) {
	t.Helper()
	f := newFakeXen(2, 16)
	f.access[[2]uint64{0, 5}] = xenmemAccessRX // the domain's own setting
	d := newTestDriver(t, f, 4)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.EnableMonitor(driver.MonitorBreakpoint))
	must(d.EnableMonitor(driver.MonitorSingleStep))
	must(d.EnableMonitor(driver.MonitorMemoryAccess))
	v, err := d.CreateView(introspect.AccessRWX)
	must(err)
	g, err := d.AllocateFrame()
	must(err)
	must(d.ChangeGFN(v, 3, g))
	must(d.SetAccess(v, 3, introspect.AccessX))
	must(d.SetAccess(introspect.DefaultView, 5, introspect.AccessR))
	must(d.SwitchView(v))
	must(d.ReadPhysical(0, make([]byte, 3*abi.PageSize)))
	must(d.Pause())
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: uint16(v), reason: abi.ReasonMemAccess, vcpu: 1, gfn: 10, accessFlags: abi.MemAccessW})
	ev, err := d.WaitEvent(context.Background())
	must(err)
	must(d.Respond(ev, driver.Response{ToggleSingleStep: true, SetView: true, View: 0}))
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSingleStep, vcpu: 1})
	_, err = d.WaitEvent(context.Background()) // handed out, never answered
	must(err)
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: uint16(v), reason: abi.ReasonSoftwareBreakpoint, vcpu: 0, insnLen: 1})
	return f, d
}

func TestDriverCloseRestoresEverything(t *testing.T) {
	f, d := armed(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, f, "")
	// The unanswered single-step event is answered with the toggle that
	// turns stepping off; the queued INT3 with a plain resume.
	var rsps []WireResponse
	for {
		w, _, ok := f.fe.pop(t)
		if !ok {
			break
		}
		rsps = append(rsps, w)
	}
	if len(rsps) != 3 {
		t.Fatalf("%d responses, want 3: %+v", len(rsps), rsps)
	}
	if rsps[1].Flags != abi.FlagVCPUPaused|abi.FlagToggleSingleStep || rsps[1].VCPU != 1 {
		t.Fatalf("pending single-step answered with %+v", rsps[1])
	}
	if rsps[2].Flags != abi.FlagVCPUPaused || rsps[2].VCPU != 0 || rsps[2].Reason != abi.ReasonSoftwareBreakpoint {
		t.Fatalf("queued INT3 answered with %+v", rsps[2])
	}
	// Order: monitors off before the view goes, views before altp2m off,
	// events answered before the ring goes, unpause last but close.
	order := []string{"setMonitor(0,false)", "switchView", "destroyView", "setAltp2mState(false)", "decrease", "monitorDisable", "unpause", "close"}
	last := -1
	for _, c := range order {
		i := slices.Index(f.calls[last+1:], c)
		if i < 0 {
			t.Fatalf("teardown call %q missing or out of order in %v", c, f.calls)
		}
		last += 1 + i
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// checkRestored checks the fake domain is as it was before the driver
// came, except for the effects of the failing call.
func checkRestored(t *testing.T, f *fakeXen, failed string) {
	t.Helper()
	if failed != "unpause" && f.paused != 0 {
		t.Errorf("domain left paused %d times", f.paused)
	}
	for m, on := range f.monitors {
		if on && !strings.HasPrefix(failed, "setMonitor") {
			t.Errorf("monitor %d left on", m)
		}
	}
	if f.ring != nil {
		t.Error("vm_event ring left enabled")
	}
	if failed != "setAltp2mState(false)" && (f.altp2m || len(f.views) != 0) {
		t.Errorf("altp2m %v views %v left", f.altp2m, f.views)
	}
	if failed != "setAccess" {
		if a := f.access[[2]uint64{0, 5}]; a != xenmemAccessRX {
			t.Errorf("default-view access of gfn 5 is %d, want the original rx", a)
		}
	}
	if _, ok := f.frames[16]; ok && failed != "decrease" {
		t.Error("shadow frame left populated")
	}
	if len(f.ssOff) != 2 && failed != "singleStepOff" {
		t.Errorf("single-step turned off on vCPUs %v, want both", f.ssOff)
	}
	if f.mapped != 0 {
		t.Errorf("%d guest frames left mapped", f.mapped)
	}
	if !f.closed {
		t.Error("handles not closed")
	}
}

// TestDriverCloseSurvivesEveryFailure fails each teardown call in turn:
// Close must report it and still do every other step.
func TestDriverCloseSurvivesEveryFailure(t *testing.T) {
	for _, name := range []string{
		"pause", "setMonitor(0,false)", "setMonitor(1,false)", "setAccess", "switchView", "destroyView",
		"setAltp2mState(false)", "decrease", "notify", "singleStepOff", "monitorDisable", "unmapFrame", "unpause", "close",
	} {
		t.Run(name, func(t *testing.T) {
			f, d := armed(t)
			f.fail[name] = errors.New("injected")
			err := d.Close()
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("Close hid the failure: %v", err)
			}
			checkRestored(t, f, name)
		})
	}
}

func TestDriverCloseStopsWaitEvent(t *testing.T) {
	f := newFakeXen(1, 4)
	d := newTestDriver(t, f, 0)
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, werr = d.WaitEvent(context.Background())
	}()
	time.Sleep(10 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !errors.Is(werr, ErrClosed) {
		t.Fatalf("WaitEvent after Close: %v", werr)
	}
}

// A domain that dies sends no event: WaitEvent must notice by asking Xen,
// for each way a domain goes (shut down for any reason, dying, gone), and
// Close must still tear down.
func TestDriverWaitEventNoticesDomainGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state domainInfo
		gone  bool
		want  string
	}{
		{"reboot", domainInfo{hvm: true, shutdown: true, reason: 1}, false, "shut down (reboot)"},
		{"crash", domainInfo{hvm: true, shutdown: true, reason: 3}, false, "shut down (crash)"},
		{"unknown reason", domainInfo{hvm: true, shutdown: true, reason: 9}, false, "shut down (reason 9)"},
		{"dying", domainInfo{hvm: true, dying: true}, false, "dying"},
		{"destroyed", domainInfo{}, true, "no longer exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeXen(1, 4)
			d, err := newDriver(f, 7, 1, Config{Logger: quiet, LivenessInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
				t.Fatal(err)
			}
			if err := d.Alive(); err != nil {
				t.Fatalf("running domain: %v", err)
			}
			// An event queued before the death is still delivered.
			push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, vcpu: 0, insnLen: 1})
			f.state, f.gone = tc.state, tc.gone
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ev, err := d.WaitEvent(ctx)
			if err != nil || ev == nil {
				t.Fatalf("queued event: %v, %v", ev, err)
			}
			if err := d.Respond(ev, driver.Response{}); err != nil {
				t.Fatal(err)
			}
			_, err = d.WaitEvent(ctx)
			if !errors.Is(err, ErrDomainGone) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WaitEvent on a domain gone: %v, want ErrDomainGone with %q", err, tc.want)
			}
			if err := d.Alive(); !errors.Is(err, ErrDomainGone) {
				t.Errorf("Alive: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if !f.closed || f.ring != nil {
				t.Errorf("teardown incomplete: closed %v ring %v", f.closed, f.ring != nil)
			}
			if err := d.Alive(); !errors.Is(err, ErrClosed) {
				t.Errorf("Alive after Close: %v", err)
			}
		})
	}
}

// A failing domain query is an error but not a verdict, and a negative
// interval turns the check off.
func TestDriverLivenessCheckFails(t *testing.T) {
	f := newFakeXen(1, 4)
	f.fail["domainInfo"] = errors.New("EPERM")
	d, err := newDriver(f, 7, 1, Config{Logger: quiet, LivenessInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Alive(); err == nil || errors.Is(err, ErrDomainGone) {
		t.Fatalf("Alive with the query failing: %v", err)
	}
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.WaitEvent(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEvent with the check off: %v", err)
	}
	if n := f.called("domainInfo"); n != 1 {
		t.Errorf("domain queried %d times, want only by Alive", n)
	}
}

func TestDriverInjectPageFault(t *testing.T) {
	f := newFakeXen(2, 4)
	d := newTestDriver(t, f, 0)
	if err := d.InjectPageFault(1, 0x7ff000123, 4); err != nil {
		t.Fatal(err)
	}
	if len(f.injected) != 1 || f.injected[0] != "vcpu=1 vec=14 type=3 ec=0x4 len=0 cr2=0x7ff000123" {
		t.Fatalf("injected %v", f.injected)
	}
	if err := d.InjectPageFault(2, 0, 0); err == nil {
		t.Fatal("vCPU 2 of 2 accepted")
	}
}

// A failed notification still leaves the response on the ring, so the
// event counts as answered and a retry cannot put a second response there.
func TestDriverRespondNotifyFailure(t *testing.T) {
	f := newFakeXen(2, 4)
	d := newTestDriver(t, f, 0)
	if err := d.EnableMonitor(driver.MonitorBreakpoint); err != nil {
		t.Fatal(err)
	}
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, vcpu: 0, insnLen: 1})
	push(t, f, reqSpec{flags: abi.FlagVCPUPaused, reason: abi.ReasonSoftwareBreakpoint, vcpu: 1, insnLen: 1})
	ev0, _ := d.WaitEvent(context.Background())
	ev1, _ := d.WaitEvent(context.Background())
	f.fail["notify"] = errors.New("EIO")
	if err := d.Respond(ev0, driver.Response{}); err == nil {
		t.Fatal("notify failure hidden")
	}
	delete(f.fail, "notify")
	if err := d.Respond(ev0, driver.Response{}); err == nil {
		t.Fatal("event answered twice")
	}
	if err := d.Respond(ev1, driver.Response{}); err != nil {
		t.Fatal(err)
	}
	var vcpus []uint32
	for {
		w, _, ok := f.fe.pop(t)
		if !ok {
			break
		}
		vcpus = append(vcpus, w.VCPU)
	}
	if !slices.Equal(vcpus, []uint32{0, 1}) {
		t.Fatalf("responses for vCPUs %v, want [0 1]", vcpus)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
