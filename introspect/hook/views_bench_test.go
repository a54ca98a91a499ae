package hook

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// argReader is a handler that reads what a real probe reads: a pointer
// argument's target and a 32-byte buffer, through the guest's page tables.
type argReader struct {
	mem *paging.Memory
	buf [32]byte
	sum uint64
}

func (a *argReader) HandleHit(h *Hit) error {
	root := introspect.Pa(h.Ev.Regs.TranslationRoot())
	v, err := a.mem.ReadU64(root, introspect.Va(h.Ev.Regs.RCX))
	if err != nil {
		return err
	}
	if err := a.mem.Read(root, introspect.Va(h.Ev.Regs.RCX)&^7, a.buf[:]); err != nil {
		return err
	}
	a.sum += v + uint64(a.buf[0])
	return nil
}

func (a *argReader) Notice(Notice) {}

// benchViews runs b.N scripted ops made by op(i) through the engine on the
// model, in chunks, and reports events per second and per op.
func benchViews(b *testing.B, op func(i int) sim.Op) {
	w := newWorld(b, 1, 1, 0)
	// Only f0 and f2, so that a hit is one HandleHit.
	w.hooks = []Hook{w.hooks[0], w.hooks[3]}
	h := &argReader{mem: &paging.Memory{Phys: w.m, Mode: paging.Level4, Cache: paging.NewCache(0)}}
	e, err := w.attach(nil, ViewsOptions{Cache: h.mem.Cache})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const chunk = 1024
	ops := make([]sim.Op, 0, chunk)
	run := func(n, base int) {
		ops = ops[:0]
		for i := 0; i < n; i++ {
			ops = append(ops, op(base+i))
		}
		w.m.Script(0, ops...)
		if err := runToIdle(e, h); err != nil {
			b.Fatal(err)
		}
		w.m.ResetObservations()
	}
	run(16, 0) // warm up: Accessed bits, first shadows
	before := e.Stats().Events
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		run(min(chunk, b.N-done), done)
	}
	b.StopTimer()
	events := e.Stats().Events - before
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
	if st := e.Stats(); st.Errors != 0 || st.HandlerErrors != 0 || st.Unexpected != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkViewsBreakpointHit: a hooked call whose handler reads its
// argument (one INT3 event, answered with a fast single-step).
func BenchmarkViewsBreakpointHit(b *testing.B) {
	calls := [2]sim.Op{call(f0, false, 3), call(f2, false, 5)}
	benchViews(b, func(i int) sim.Op { return calls[i&1] })
}

// BenchmarkViewsHiddenRead: the guest reads a hooked page (one read
// violation, answered with a fast single-step in the default view).
func BenchmarkViewsHiddenRead(b *testing.B) {
	rd := sim.Read(f0-8, 16)
	benchViews(b, func(int) sim.Op { return rd })
}

// BenchmarkViewsPTEWrite: the guest pages a hooked page out and in (a
// write violation and a single-step per op; the breakpoint is disarmed and
// re-armed each time, with a shadow frame freed and allocated).
func BenchmarkViewsPTEWrite(b *testing.B) {
	out, in := sim.PageOut(codeB, 1), sim.PageIn(codeB, 1, false)
	benchViews(b, func(i int) sim.Op {
		if i&1 == 0 {
			return out
		}
		return in
	})
}

// BenchmarkViewsPTEWriteUnwatched: the guest pages out and in a page whose
// entry shares a protected table with hooked pages but is not watched
// (write violation and single-step, no breakpoint work).
func BenchmarkViewsPTEWriteUnwatched(b *testing.B) {
	out, in := sim.PageOut(codeC, 1), sim.PageIn(codeC, 1, false)
	benchViews(b, func(i int) sim.Op {
		if i&1 == 0 {
			return out
		}
		return in
	})
}
