package hook

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// fakeTable is a driver.HookTable fed by the test.
type fakeTable struct {
	mu       sync.Mutex
	table    []introspect.Va
	sets     int
	hits     chan *driver.Event
	released []uint64
	missed   map[uint64]bool // Seq released after the deadline
	stats    driver.HookStats
}

func (f *fakeTable) SetHooks(vas []introspect.Va) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table = append([]introspect.Va(nil), vas...)
	f.sets++
	return nil
}

func (f *fakeTable) WaitHooksApplied(context.Context) error { return nil }

func (f *fakeTable) WaitHit(ctx context.Context) (*driver.Event, error) {
	select {
	case ev := <-f.hits:
		return ev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeTable) ReleaseHit(ev *driver.Event) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, ev.Seq)
	return !f.missed[ev.Seq], nil
}

func (f *fakeTable) HookStats() (driver.HookStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, nil
}

type tableRecorder struct {
	mu      sync.Mutex
	hits    []string
	notices []Notice
	fail    map[string]error
}

func (r *tableRecorder) HandleHit(h *Hit) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits = append(r.hits, h.Hook.Tag)
	return r.fail[h.Hook.Tag]
}

func (r *tableRecorder) Notice(n Notice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, n)
}

func TestPluginEngine(t *testing.T) {
	f := &fakeTable{hits: make(chan *driver.Event, 16), missed: map[uint64]bool{5: true}}
	p := NewPlugin(f, WithStatsInterval(10*time.Millisecond))
	for _, h := range []Hook{
		{Addr: 0x1000, Global: true, Tag: "global"},
		{Addr: 0x1000, Root: 0x5000, Tag: "user"}, // same address: the table is not rewritten
		{Addr: 0x2000, Global: true, Tag: "faults"},
	} {
		if err := p.Add(h); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.table) != 2 || f.sets != 2 {
		t.Fatalf("table %v after %d writes", f.table, f.sets)
	}
	pf := &paging.TranslationError{VA: 0x7fff_0000, Root: 0x1000, Level: 1, Err: paging.ErrNotPresent}
	r := &tableRecorder{fail: map[string]error{"faults": pf}}
	ev := func(seq uint64, rip, cr3 uint64) *driver.Event {
		e := &driver.Event{VCPU: 1, Reason: driver.ReasonBreakpoint, Seq: seq}
		e.Regs.RIP, e.Regs.CR3 = rip, cr3
		return e
	}
	f.hits <- ev(1, 0x1000, 0x5000) // both hooks
	f.hits <- ev(2, 0x1000, 0x9000) // the global one only
	f.hits <- ev(3, 0x2000, 0x9000) // handler needs a missing page
	f.hits <- ev(4, 0x3000, 0x9000) // no hook there (removed)
	f.hits <- ev(5, 0x1000, 0x9000) // released after its deadline
	f.mu.Lock()
	f.stats.MissedNoConsumer = 3
	f.stats.MissedDeadline = 2 // hit 5, and one the driver dropped
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx, r) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.released)
		f.mu.Unlock()
		r.mu.Lock()
		nn := len(r.notices)
		r.mu.Unlock()
		if n == 5 && nn >= 7 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{"global", "user", "global", "faults", "global"}
	if len(r.hits) != len(want) {
		t.Fatalf("hits %v, want %v", r.hits, want)
	}
	for i := range want {
		if r.hits[i] != want[i] {
			t.Fatalf("hits %v, want %v", r.hits, want)
		}
	}
	kinds := map[NoticeKind]int{}
	for _, n := range r.notices {
		kinds[n.Kind]++
	}
	if kinds[NoticeUnreadable] != 1 || kinds[NoticeStaleBreakpoint] != 1 || kinds[NoticeHoldMissed] != 2 || kinds[NoticeNotHeld] != 3 {
		t.Fatalf("notices %v", kinds)
	}
	if len(f.released) != 5 {
		t.Fatalf("released %v, want every hit", f.released)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.table) != 0 {
		t.Fatalf("Close left %v in the table", f.table)
	}
	if err := p.Remove(0x1000); err != nil {
		t.Fatal(err)
	}
}

// TestPluginEngineWaitError: a driver failure ends Run with it.
func TestPluginEngineWaitError(t *testing.T) {
	p := NewPlugin(&failingTable{})
	if err := p.Run(context.Background(), &tableRecorder{}); err == nil || !errors.Is(err, errGone) {
		t.Fatalf("Run = %v", err)
	}
}

var errGone = errors.New("gone")

type failingTable struct{ fakeTable }

func (*failingTable) WaitHit(context.Context) (*driver.Event, error) { return nil, errGone }
