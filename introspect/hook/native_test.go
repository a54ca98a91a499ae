package hook

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// fakeDriver replays scripted events and records what the engine did.
type fakeDriver struct {
	bps       map[introspect.Va]int // insert count
	events    []*driver.Event
	responded []*driver.Event
	removed   []introspect.Va
	paused    bool
	resumes   int
	waitErr   error
	injected  []introspect.Va
}

func newFake(evs ...*driver.Event) *fakeDriver {
	return &fakeDriver{bps: make(map[introspect.Va]int), events: evs, waitErr: io.EOF}
}

func (f *fakeDriver) InsertBreakpoint(va introspect.Va) error {
	if va == 0xdead {
		return errors.New("no such page")
	}
	f.bps[va]++
	return nil
}

func (f *fakeDriver) RemoveBreakpoint(va introspect.Va) error {
	if !f.paused {
		return errors.New("remove while running")
	}
	delete(f.bps, va)
	f.removed = append(f.removed, va)
	return nil
}

func (f *fakeDriver) EnableMonitor(driver.Monitor) error  { return nil }
func (f *fakeDriver) DisableMonitor(driver.Monitor) error { return nil }

func (f *fakeDriver) WaitEvent(ctx context.Context) (*driver.Event, error) {
	f.paused = false
	if len(f.events) == 0 {
		f.paused = true
		return nil, f.waitErr
	}
	ev := f.events[0]
	f.events = f.events[1:]
	f.paused = true
	return ev, nil
}

func (f *fakeDriver) Respond(ev *driver.Event, r driver.Response) error {
	f.responded = append(f.responded, ev)
	return nil
}

func (f *fakeDriver) Pause() error  { f.paused = true; return nil }
func (f *fakeDriver) Resume() error { f.paused = false; f.resumes++; return nil }

type injectingDriver struct{ *fakeDriver }

func (d injectingDriver) InjectPageFault(vcpu introspect.VCPU, va introspect.Va, code uint32) error {
	d.injected = append(d.injected, va)
	return nil
}

type recorder struct {
	hits    []string
	notices []Notice
	fail    func(h *Hit) error
}

func (r *recorder) HandleHit(h *Hit) error {
	r.hits = append(r.hits, h.Hook.Tag)
	if r.fail != nil {
		return r.fail(h)
	}
	return nil
}

func (r *recorder) Notice(n Notice) { r.notices = append(r.notices, n) }

func bpEvent(vcpu introspect.VCPU, rip uint64, cr3 uint64) *driver.Event {
	ev := &driver.Event{VCPU: vcpu, Reason: driver.ReasonBreakpoint}
	ev.Regs.RIP, ev.Regs.CR3 = rip, cr3
	return ev
}

func TestNativeDispatch(t *testing.T) {
	const kroot, uroot = 0x1000, 0x2000
	fd := newFake(
		bpEvent(0, 0xffff_8000_0000_1000, kroot|0x5), // PCID bits must not matter
		bpEvent(1, 0xffff_8000_0000_1000, uroot),
		bpEvent(1, 0xffff_8000_0000_2000, uroot),
		bpEvent(0, 0xffff_8000_0000_3000, kroot), // no hook: stale
	)
	n := NewNative(fd)
	hooks := []Hook{
		{Addr: 0xffff_8000_0000_1000, Root: kroot, Tag: "kernel-only"},
		{Addr: 0xffff_8000_0000_1000, Root: kroot, Global: true, Tag: "global-a"},
		{Addr: 0xffff_8000_0000_2000, Root: kroot, Global: true, Tag: "global-b"},
	}
	for _, h := range hooks {
		if err := n.Add(h); err != nil {
			t.Fatal(err)
		}
	}
	if fd.bps[0xffff_8000_0000_1000] != 1 {
		t.Errorf("shared address inserted %d times", fd.bps[0xffff_8000_0000_1000])
	}
	if err := n.Add(Hook{Addr: 0xdead, Tag: "bad"}); err == nil {
		t.Error("Add hid a driver error")
	}
	flushes := 0
	n.flush = func() { flushes++ }
	var r recorder
	err := n.Run(context.Background(), &r)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("Run = %v, want the driver's error", err)
	}
	want := []string{"kernel-only", "global-a", "global-a", "global-b"}
	if !slices.Equal(r.hits, want) {
		t.Errorf("hits %v, want %v", r.hits, want)
	}
	if len(fd.responded) != 4 {
		t.Errorf("responded to %d events, want 4", len(fd.responded))
	}
	if len(r.notices) != 1 || r.notices[0].Kind != NoticeStaleBreakpoint || r.notices[0].Addr != 0xffff_8000_0000_3000 {
		t.Errorf("notices %+v", r.notices)
	}
	if flushes != 3 {
		t.Errorf("flushed %d times, want once per hit event", flushes)
	}
	fd.Resume()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if len(fd.bps) != 0 || len(fd.removed) != 2 {
		t.Errorf("after Close: bps %v removed %v", fd.bps, fd.removed)
	}
	if fd.paused {
		t.Error("Close left the guest paused")
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNativeHandlerErrors(t *testing.T) {
	pf := &paging.TranslationError{VA: 0x7fff_0000, Root: 0x1000, Level: 1, Err: paging.ErrNotPresent}
	fails := func(h *Hit) error {
		if h.Hook.Tag == "pf" {
			return pf
		}
		return errors.New("boom")
	}
	t.Run("no injector", func(t *testing.T) {
		fd := newFake(bpEvent(0, 0x1000, 0), bpEvent(0, 0x2000, 0))
		n := NewNative(fd)
		n.Add(Hook{Addr: 0x1000, Global: true, Tag: "pf"})
		n.Add(Hook{Addr: 0x2000, Global: true, Tag: "err"})
		r := recorder{fail: fails}
		n.Run(context.Background(), &r)
		if len(r.notices) != 2 || r.notices[0].Kind != NoticeUnreadable || r.notices[0].Addr != 0x7fff_0000 ||
			r.notices[1].Kind != NoticeHandlerError || r.notices[1].Tag != "err" {
			t.Errorf("notices %+v", r.notices)
		}
	})
	t.Run("injector", func(t *testing.T) {
		fd := newFake(bpEvent(0, 0x1000, 0))
		n := NewNative(injectingDriver{fd})
		n.Add(Hook{Addr: 0x1000, Global: true, Tag: "pf"})
		r := recorder{fail: fails}
		n.Run(context.Background(), &r)
		if len(r.notices) != 1 || r.notices[0].Kind != NoticePageFaultInjected || len(fd.injected) != 1 {
			t.Errorf("notices %+v injected %v", r.notices, fd.injected)
		}
	})
}

func TestNativeRunStopsOnContext(t *testing.T) {
	fd := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fd.waitErr = context.Canceled
	if err := NewNative(fd).Run(ctx, &recorder{}); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}
